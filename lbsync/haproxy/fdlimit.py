"""The file descriptors a rendered HAProxy configuration asks for at start, and whether a limit
holds them (pure).

Why lbsync counts them: `haproxy -c` accepts a `maxconn` that the limits cannot hold, and the
proxy then refuses to start (`Cannot raise FD limit to 8235, limit is 4096`), for example in a
container whose hard `nofile` limit is lower than where the file was written.

What HAProxy 2.6 asks for (`compute_ideal_maxsock()` in its src/haproxy.c), each term checked
against its own `Cannot raise FD limit to N` under `prlimit`:

    2 x maxconn           two sockets a connection
    + 3 x threads         an epoll descriptor and a wake-up pipe per thread
    + 10                  reserved
    + listeners           one an address of every `bind` line, one a port of a port range
    + checked servers     one each `server ... check`
    + CLI frontend        one each `stats socket`, and one more (the worker's socket pair) in
                          master-worker mode (`-W`); with any of them, `stats maxconn` (10)
    + 11 a master socket  (`-S`)

A global `ulimit-n` replaces the sum: HAProxy asks for it as it is. The limit is the hard
`nofile` limit, or `fd-hard-limit` when lower. Not counted, so the sum is what a first start
asks for at the least: splicing's pipes, SSL async engines, peers and resolvers (the shipped
template has none), and after a reload the old workers still finishing (one descriptor each in
the master).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lbsync.config import ReloadConfig, ReloadMethod
from lbsync.haproxy import layout

# HAProxy's default nbthread: the CPUs it may run on, at most its build's MAX_THREADS (64 in
# Debian's 2.6, `haproxy -vv`).
MAX_THREADS: Final = 64
_NUMBERS: Final = ("maxconn", "ulimit-n", "nbthread", "fd-hard-limit", "stats maxconn")
_RESERVED: Final = 10
_STATS_MAXCONN: Final = 10
_PER_MASTER_SOCKET: Final = 11


@dataclass(frozen=True)
class Launch:
    """How HAProxy is started, as far as its descriptors go: master-worker mode (`-W`), and
    how many master sockets (`-S`)."""

    master_worker: bool = False
    master_sockets: int = 0


@dataclass(frozen=True)
class Demand:
    """What a configuration makes HAProxy ask for at start: the setting that fixes the count
    (`maxconn 4096`, or `ulimit-n 9000`, which replaces it), the descriptors, the part of them
    that is not two a connection (None with `ulimit-n`), and its own `fd-hard-limit` (0: none)."""

    setting: str
    needed: int
    overhead: int | None
    fd_hard_limit: int


@dataclass(frozen=True)
class Shortfall:
    """A start HAProxy would refuse: the demand, the limit it meets, and whether that limit is
    the configuration's `fd-hard-limit` rather than the hard `nofile` limit."""

    demand: Demand
    limit: int
    by_fd_hard_limit: bool

    @property
    def largest_maxconn(self) -> int | None:
        """The largest `maxconn` the limit holds, when `maxconn` fixes the count."""
        overhead = self.demand.overhead
        return None if overhead is None else max(0, (self.limit - overhead) // 2)


def launch_of(reload: ReloadConfig) -> Launch:
    """How a target's reload method says HAProxy runs: a master socket needs `-W -S` (the
    master CLI, or docker with a socket), a signal `-W` (to a pidfile or a container); of the
    other methods nothing is known, so nothing is counted."""
    if reload.master_socket is not None:
        return Launch(master_worker=True, master_sockets=1)
    return Launch(master_worker=reload.method in (ReloadMethod.SIGNAL, ReloadMethod.DOCKER))


def _listeners(addresses: str) -> int:
    """How many listeners one `bind` word opens: one an address, one a port of a range."""
    total = 0
    for address in addresses.split(","):
        low, _, high = address.rpartition(":")[2].partition("-")
        total += int(high) - int(low) + 1 if low.isdigit() and high.isdigit() else 1
    return total


def _number(tokens: list[str]) -> tuple[str, int] | None:
    """A global line `<setting> <number>` of a setting in `_NUMBERS`: its name and number."""
    name = " ".join(tokens[:-1])
    return (name, int(tokens[-1])) if name in _NUMBERS and tokens[-1].isdigit() else None


def demand(text: str, *, cpus: int, launch: Launch) -> Demand | None:
    """What a configuration asks for, counted as the module docstring says; None when it sets
    neither `maxconn` nor `ulimit-n`, since HAProxy then derives maxconn from the limit it
    finds. `cpus`: the CPUs HAProxy may run on, where `nbthread` does not say."""
    numbers = dict.fromkeys(_NUMBERS, 0) | {"stats maxconn": _STATS_MAXCONN}
    section = ""
    listeners = stats_sockets = 0
    for line in text.splitlines():
        tokens = line.split()
        keyword = tokens[0] if tokens else ""
        if keyword in layout.SECTIONS:
            section = keyword
        elif keyword == "bind" and len(tokens) > 1:
            listeners += _listeners(tokens[1])
        elif section == "global" and tokens[:2] == ["stats", "socket"]:
            stats_sockets += 1
        elif section == "global" and (number := _number(tokens)) is not None:
            numbers[number[0]] = number[1]
    fd_hard_limit = numbers["fd-hard-limit"]
    if numbers["ulimit-n"]:
        setting = f"ulimit-n {numbers['ulimit-n']}"
        return Demand(setting, numbers["ulimit-n"], overhead=None, fd_hard_limit=fd_hard_limit)
    if not numbers["maxconn"]:
        return None
    cli = stats_sockets + launch.master_worker
    checked = sum(server.checked for each in layout.parse(text).backends for server in each.servers)
    overhead = (
        3 * (numbers["nbthread"] or min(cpus, MAX_THREADS))
        + _RESERVED
        + listeners
        + checked
        + (cli + numbers["stats maxconn"] if cli else 0)
        + _PER_MASTER_SOCKET * launch.master_sockets
    )
    needed = 2 * numbers["maxconn"] + overhead
    setting = f"maxconn {numbers['maxconn']}"
    return Demand(setting, needed, overhead=overhead, fd_hard_limit=fd_hard_limit)


def shortfall(need: Demand, hard_limit: int | None) -> Shortfall | None:
    """The shortfall when `need` exceeds the lower of the hard `nofile` limit (None: none) and
    the configuration's `fd-hard-limit`; None when it fits."""
    limits = [(hard_limit, False), (need.fd_hard_limit, True)]
    known = [(limit, by_fd) for limit, by_fd in limits if limit]
    if not known:
        return None
    limit, by_fd = min(known)
    return None if need.needed <= limit else Shortfall(need, limit, by_fd)
