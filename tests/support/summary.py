"""The figures printed after a run: the fault suite's (tests/faults) and the container tests'
(tests/containers).

Each suite's `figures` fixture keeps its figures in the session's stash, under the keys below.
With pytest-xdist every worker has a session of its own and prints nothing: at the end it
sends its figures to the controller (`workeroutput`), which adds them up, records the fault
figures in `.cache/fault-figures.json` and prints both. Without xdist the one session does the
same with its own. The hooks that call this are in tests/conftest.py, the one conftest the
controller loads (it collects no tests).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from faults.figures import Figures

FAULTS = pytest.StashKey[Figures]()
CONTAINERS = pytest.StashKey[dict[str, str]]()
_SENT = "lbsync-figures"


def is_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker."""
    return hasattr(config, "workerinput")


def finish(config: pytest.Config) -> None:
    """At the end of a session: a worker sends its figures on; any other process records the
    fault figures."""
    faults, containers = config.stash.get(FAULTS, None), config.stash.get(CONTAINERS, None)
    if is_worker(config):
        output: dict[str, Any] = config.workeroutput  # type: ignore[attr-defined]
        output[_SENT] = {
            "faults": None if faults is None else asdict(faults),
            "containers": containers,
        }
    elif faults is not None:
        faults.save()


def receive(config: pytest.Config, workeroutput: dict[str, Any]) -> None:
    """In the controller: add one worker's figures to the run's."""
    sent = workeroutput.get(_SENT) or {}
    if sent.get("faults") is not None:
        if FAULTS not in config.stash:
            config.stash[FAULTS] = Figures()
        config.stash[FAULTS].merge(sent["faults"])
    if sent.get("containers") is not None:
        config.stash.setdefault(CONTAINERS, {}).update(sent["containers"])


def lines(config: pytest.Config) -> list[str]:
    """What the terminal summary prints."""
    found: list[str] = []
    faults, containers = config.stash.get(FAULTS, None), config.stash.get(CONTAINERS, None)
    if faults is not None:
        found += faults.lines()
    if containers:
        found.append("container figures:")
        found += [f"  {name}: {value}" for name, value in containers.items()]
    return found
