"""Desired states and renders of them for pure tests: KV values in, a state or a file out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lbsync import config
from lbsync.core.state import DesiredState, build
from lbsync.model.catalog import merge
from lbsync.model.contract import parse_values
from lbsync.model.values import HealthMode, Snapshot
from lbsync.pipeline.render import load_template, render

Values = dict[str, object]


def state_of(values: Values, mode: HealthMode = HealthMode.PASSING) -> DesiredState:
    """The desired state of one source holding these KV values."""
    entries, rejected = parse_values(values, describe=str)
    return build(merge([Snapshot(source="test", entries=entries, rejected=rejected)]), mode)


def at(port: int, *tags: str, **fields: object) -> dict[str, object]:
    """An instance value on loopback."""
    return {"address": "127.0.0.1", "port": port, "tags": list(tags), **fields}


def rendered(state: DesiredState, kind: str, tmp_path: Path) -> str:
    """Render a shipped template with the defaults a real target would have."""
    document: dict[str, Any] = {
        "source": {"file": {"path": "services.toml"}},
        "target": [{"kind": kind, "dest": "run/out.conf", "vars": {"bind": ["127.0.0.1:8080"]}}],
    }
    target = config.parse(document, tmp_path / "lbsync.toml").targets[0]
    return render(state, load_template(target.template), target.vars)
