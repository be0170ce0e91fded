"""Where each backend's `server` lines are in a rendered file, and splicing new ones in (pure).

A weight change or a join at 10,000 servers must not re-render the whole file on its way to
HAProxy. The fast lane (`pipeline/fastlane.py`) renders the changed services alone and puts
their server lines in place of the old ones; that needs each backend's server lines as one
contiguous byte range. A backend whose server lines are interleaved with other lines, or that
has none, has no block: a change there takes the whole render.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lbsync.haproxy.layout import SECTIONS, SERVER_SECTIONS, ServerLine

# a section header or a `server` line, at the start of a line, as `layout.parse` splits them
_LINE = re.compile(rb"^[ \t]*(\S+)(?:[ \t]+(\S+))?[^\n]*(?:\n|$)", re.MULTILINE)
_SECTION_WORDS = frozenset(word.encode() for word in SECTIONS)
_SERVER_SECTION_WORDS = frozenset(word.encode() for word in SERVER_SECTIONS)


@dataclass(frozen=True)
class Block:
    """The byte range [start, end) of one backend's server lines, and the number of lines."""

    start: int
    end: int
    lines: int


@dataclass(frozen=True)
class Blocks:
    """The blocks of a file by backend name, in file order; backends that have no block (no
    server, interleaved lines, a name used twice) are in `unusable`."""

    by_name: Mapping[str, Block]
    unusable: frozenset[str]


class _Open:
    """The section being scanned."""

    def __init__(self, name: str | None) -> None:
        self.name = name  # None: not a backend or listen section
        self.start = -1
        self.end = -1
        self.lines = 0
        self.broken = False


def server_blocks(content: bytes) -> Blocks:
    """The server-line blocks of a file (HAProxy's syntax: blank-separated words)."""
    by_name: dict[str, Block] = {}
    unusable: set[str] = set()
    current = _Open(None)

    def close(section: _Open) -> None:
        if section.name is None:
            return
        if section.broken or section.lines == 0 or section.name in by_name:
            unusable.add(section.name)
            by_name.pop(section.name, None)
        elif section.name not in unusable:
            by_name[section.name] = Block(section.start, section.end, section.lines)

    for match in _LINE.finditer(content):
        if match.start() == match.end():
            continue
        word = match.group(1)
        if word in _SECTION_WORDS:
            close(current)
            name = match.group(2)
            server_section = word in _SERVER_SECTION_WORDS and name is not None
            current = _Open(name.decode(errors="replace") if server_section and name else None)
        elif current.name is None:
            continue
        elif word == b"server":
            if current.lines and current.end != match.start():
                current.broken = True
            if not current.lines:
                current.start = match.start()
            current.end = match.end()
            current.lines += 1
    close(current)
    return Blocks(by_name, frozenset(unusable))


def splice(
    content: bytes, blocks: Blocks, replacements: Mapping[str, bytes]
) -> tuple[bytes, Blocks]:
    """The file with the named backends' server blocks replaced, and the blocks of the result
    (shifted, not scanned again). Each replacement must be whole lines, ending in a newline."""
    order = sorted(replacements, key=lambda name: blocks.by_name[name].start)
    pieces: list[bytes] = []
    at = 0
    for name in order:
        block = blocks.by_name[name]
        pieces += [content[at : block.start], replacements[name]]
        at = block.end
    pieces.append(content[at:])
    # (end of a replaced block, bytes it grew by), in file order; blocks are in file order too
    shifts = [
        (blocks.by_name[name].end, _growth(blocks.by_name[name], replacements[name]))
        for name in order
    ]
    moved: dict[str, Block] = {}
    delta = 0
    passed = 0
    for name, block in blocks.by_name.items():
        while passed < len(shifts) and shifts[passed][0] <= block.start:
            delta += shifts[passed][1]
            passed += 1
        if name in replacements:
            text = replacements[name]
            start = block.start + delta
            moved[name] = Block(start, start + len(text), text.count(b"\n"))
        elif delta:
            moved[name] = Block(block.start + delta, block.end + delta, block.lines)
        else:
            moved[name] = block
    return b"".join(pieces), Blocks(moved, blocks.unusable)


def _growth(block: Block, text: bytes) -> int:
    return len(text) - (block.end - block.start)


def block_servers(text: bytes) -> tuple[ServerLine, ...] | None:
    """The server lines of a block as `layout.parse` reads them; None when a line is not a
    server line or not UTF-8."""
    try:
        lines = text.decode().splitlines()
    except UnicodeDecodeError:
        return None
    servers = []
    for line in lines:
        tokens = line.split()
        if len(tokens) < 3 or tokens[0] != "server":
            return None
        servers.append(ServerLine(tokens[1], tuple(tokens[2:])))
    return tuple(servers)
