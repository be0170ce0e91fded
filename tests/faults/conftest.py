"""The fault suite: one `Figures` for the session, printed and recorded at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _pytest.terminal import TerminalReporter
from faults.figures import Figures

_FIGURES = pytest.StashKey[Figures]()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The session's figures; each fault test adds what it injected and what came of it."""
    found = Figures()
    request.config.stash[_FIGURES] = found
    yield found
    found.save()


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    found = config.stash.get(_FIGURES, None)
    if found is not None:
        for line in found.lines():
            terminalreporter.write_line(line)
