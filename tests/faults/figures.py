"""The fault suite's figures: what each test injected and what came of it, summed at the end.

docs/reliability.md quotes the summary of the last full run; every figure but `faults
injected` and `cycles` must be 0. Tests add to the one `Figures` of the session (the
`figures` fixture); the summary is printed after the run and written to
`.cache/fault-figures.json` for the record. With pytest-xdist each worker's figures are added
up first (`merge`, support/summary.py), so the summary covers the whole run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / ".cache" / "fault-figures.json"


@dataclass
class Figures:
    """Counts over the whole fault suite."""

    faults_injected: int = 0
    cycles: int = 0
    updates_lost: int = 0
    invalid_files_written: int = 0
    failed_requests: int = 0
    requests: int = 0
    daemon_exits: int = 0
    by_test: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, test: str, **counts: int) -> None:
        """Add one test's counts (names as the fields above)."""
        mine = self.by_test.setdefault(test, {})
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)
            mine[name] = mine.get(name, 0) + value

    def merge(self, other: dict[str, Any]) -> None:
        """Add another session's figures (`asdict` of its `Figures`), test by test."""
        for test, counts in other["by_test"].items():
            self.add(test, **counts)

    def lines(self) -> list[str]:
        """The summary as printed after the run."""
        totals = {k: v for k, v in asdict(self).items() if k != "by_test"}
        head = ", ".join(f"{name.replace('_', ' ')} {value:,}" for name, value in totals.items())
        return [f"fault suite: {head}", *(f"  {t}: {c}" for t, c in sorted(self.by_test.items()))]

    def save(self) -> None:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
