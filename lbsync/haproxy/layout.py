"""The layout of a rendered HAProxy configuration: its skeleton, and each backend's servers (pure).

Why from the text and not from the desired state: the file is what a reload loads, and a custom
template may render anything from its context (shares, tags, settings, comments). Two files
whose skeletons (every line except the backends' `server` lines) are equal and whose server
lines differ only where the runtime API can act (a weight, a whole server joining or leaving)
run the same after a reload as after those runtime commands; nothing else is claimed.

The parser knows only what it needs: section headers, `balance` / `hash-type`, `default-server`,
and `server <name> <address> [keyword ...]` lines in `backend` and `listen` sections, split on
blanks as HAProxy splits them. A server line with quotes, escapes, comments, variables or `;`
is kept but marked not `plain`: it is never sent to the runtime API, so any change to it means
a reload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SECTIONS = frozenset(
    {"global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist"}
    | {"mailers", "program", "http-errors", "ring", "cache", "log-forward", "fcgi-app"}
)
SERVER_SECTIONS = frozenset({"backend", "listen"})
# Algorithms that follow runtime weights and accept `add server` / `del server` (HAProxy 2.6:
# "dynamic" algorithms); hash-based ones only with `hash-type consistent`.
DYNAMIC_BALANCES = frozenset({"roundrobin", "leastconn", "first", "random"})
HASH_BALANCES = frozenset({"source", "uri", "url_param", "hdr", "rdp-cookie"})
_NOT_PLAIN = re.compile(r"[\"'\\#$;]")
# `default-server` settings that dynamic servers do not inherit but that change nothing for
# them: a runtime-added server is always initialised with init-addr `none`.
_HARMLESS_DEFAULTS = frozenset({"init-addr"})


@dataclass(frozen=True)
class ServerLine:
    """One `server` line of a backend: its name and the blank-separated words after it (the
    rest is derived on demand: a large file's untouched backends are only compared)."""

    name: str
    tokens: tuple[str, ...]

    @property
    def address(self) -> str:
        """The address as written (`10.0.0.5:8080`, `[::1]:80`, `host:80`)."""
        return self.tokens[0] if self.tokens else ""

    @property
    def weight(self) -> int | None:
        """The value after the last `weight` (the one HAProxy keeps), or None when absent or
        not a plain integer."""
        if "weight" not in self.tokens:
            return None
        index = len(self.tokens) - 1 - self.tokens[::-1].index("weight")
        text = self.tokens[index + 1] if index + 1 < len(self.tokens) else ""
        return int(text) if text.isdigit() else None

    @property
    def plain(self) -> bool:
        """No quotes, escapes, comments, variables or `;`: safe to compare and to send."""
        return not any(_NOT_PLAIN.search(token) for token in self.tokens)

    @property
    def settings(self) -> tuple[str, ...]:
        """Everything but the weight: equal settings mean the same server but for its weight."""
        kept: list[str] = []
        skip = False
        for word in self.tokens:
            if skip:
                skip = False
            elif word == "weight":
                skip = True
            else:
                kept.append(word)
        return tuple(kept)

    @property
    def checked(self) -> bool:
        """Whether the server has an active health check (`check` keyword)."""
        return "check" in self.tokens[1:]


@dataclass(frozen=True)
class Backend:
    """A `backend` or `listen` section's name, servers, and whether it is dynamic."""

    name: str
    servers: tuple[ServerLine, ...]
    balance: str
    dynamic: bool


@dataclass(frozen=True)
class Layout:
    """A parsed configuration: the skeleton text, the backends, and whether a `default-server`
    line sets anything that a server added at runtime would not inherit."""

    skeleton: str
    backends: tuple[Backend, ...]
    inherited_defaults: bool


def _is_dynamic(balance: str, hash_type: str) -> bool:
    if balance in DYNAMIC_BALANCES:
        return True
    return balance in HASH_BALANCES and hash_type == "consistent"


class _Section:
    """The section being read: its kind, name, servers and balancing settings."""

    def __init__(self, kind: str, name: str, *, balance: str, hash_type: str) -> None:
        self.kind = kind
        self.name = name
        self.balance = balance
        self.hash_type = hash_type
        self.servers: list[ServerLine] = []

    def backend(self) -> Backend | None:
        if self.kind not in SERVER_SECTIONS:
            return None
        return Backend(
            name=self.name,
            servers=tuple(self.servers),
            balance=self.balance,
            dynamic=_is_dynamic(self.balance, self.hash_type),
        )


def parse(text: str) -> Layout:
    """The layout of a configuration text."""
    skeleton: list[str] = []
    backends: list[Backend] = []
    inherited = False
    defaults = {"balance": "roundrobin", "hash_type": "map-based"}  # HAProxy's own defaults
    section = _Section("", "", **defaults)
    for line in text.splitlines(keepends=True):
        tokens = line.split()
        keyword = tokens[0] if tokens else ""  # HAProxy's keywords are case-sensitive
        if keyword in SECTIONS:
            if (done := section.backend()) is not None:
                backends.append(done)
            if section.kind == "defaults":
                defaults = {"balance": section.balance, "hash_type": section.hash_type}
            section = _Section(keyword, tokens[1] if len(tokens) > 1 else "", **defaults)
        elif keyword == "balance" and len(tokens) > 1:
            section.balance = tokens[1].split("(", 1)[0].lower()
        elif keyword == "hash-type" and len(tokens) > 1:
            section.hash_type = tokens[1].lower()
        elif keyword == "default-server":
            harmless = len(tokens) == 3 and tokens[1] in _HARMLESS_DEFAULTS
            inherited = inherited or not harmless
        elif keyword == "server" and section.kind in SERVER_SECTIONS and len(tokens) > 2:
            section.servers.append(ServerLine(tokens[1], tuple(tokens[2:])))
            continue
        skeleton.append(line)
    if (done := section.backend()) is not None:
        backends.append(done)
    return Layout(
        skeleton="".join(skeleton), backends=tuple(backends), inherited_defaults=inherited
    )
