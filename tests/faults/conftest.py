"""The fault suite: one `Figures` for the session, printed and recorded at the end (the hooks
in tests/conftest.py, through support/summary.py)."""

from __future__ import annotations

import pytest
from faults.figures import Figures
from support import summary


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    """The session's figures; each fault test adds what it injected and what came of it."""
    found = Figures()
    request.config.stash[summary.FAULTS] = found
    return found
