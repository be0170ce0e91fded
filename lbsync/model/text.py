"""Untrusted text made safe to show: in a log line, on a terminal, in a refusal that a template
may print into a comment.

Any character that is not printable (line breaks, escape sequences that drive a terminal,
bytes that were not UTF-8) is written as its Python escape (`\\n`, `\\x1b`, `\\udcff`), and
the text is cut at `LIMIT` characters, so a key or value can add neither a line nor a
directive wherever it is shown.
"""

from __future__ import annotations

from typing import Final

LIMIT: Final = 500


def shown(text: str, limit: int | None = LIMIT) -> str:
    """`text` with every non-printable character escaped, at most `limit` characters long
    (None: as long as it is)."""
    safe = text if text.isprintable() else "".join(_escaped(char) for char in text)
    return safe if limit is None or len(safe) <= limit else safe[: limit - 3] + "..."


def _escaped(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]
