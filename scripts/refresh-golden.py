"""Render every golden case again and overwrite its files (tests/golden/README.md).

Run it on purpose, after a change to a shipped template, the template context or the split
math that is meant to change the output, and review `git diff tests/golden` before committing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.golden import cases, render_case


def main() -> int:
    """Write each case's rendered files; print what changed."""
    for case in cases():
        for name, text in render_case(case).items():
            golden = case / name
            before = golden.read_text() if golden.exists() else None
            if before != text:
                golden.write_text(text)
                print(f"{'updated' if before is not None else 'created'} {golden}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
