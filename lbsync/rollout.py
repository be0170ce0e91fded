"""`lbsync rollout`: raise a group's share step by step, behind health and error gates.

Before each step and throughout each interval the gates must hold: the target group has at
least `min_healthy` eligible instances (read through the configured sources, as the daemon
sees them), and, where HAProxy's runtime API is reachable, the target group's servers answer
with an error ratio (5xx, failed connections, broken responses) under `max_error_rate`. A gate
that fails writes the split back to where the rollout started and the command exits non-zero,
like Nomad's auto_revert. The rollout's state lives in `services/<svc>/rollout`, so another
terminal can `resume` a paused rollout or `abort` one, and the daemon's status can show it.

Each step gives the target group its share; the other groups (the default group included) keep
their proportions of the rest, as at the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lbsync.config import Config, ReloadMethod, TargetKind
from lbsync.daemon import sources_for
from lbsync.model.catalog import carry_forward, merge
from lbsync.model.values import Snapshot
from lbsync.reload import master_cli
from lbsync.splits import Current, SplitError, actor, read, split_key, write
from lbsync.state import DesiredState, ServiceState, build
from lbsync.store import Store

CONTROL_POLL = 0.2


class Phase(StrEnum):
    """A rollout's state, as stored in `services/<svc>/rollout`."""

    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    DONE = "done"
    REVERTED = "reverted"
    ABORTED = "aborted"


ACTIVE = frozenset({Phase.RUNNING, Phase.PAUSED, Phase.ABORTING})


class GateFailed(Exception):
    """A gate did not hold; the message says which and with what reading."""


class Aborted(Exception):
    """An operator asked the rollout to stop."""


@dataclass(frozen=True)
class Plan:
    """What the operator asked for."""

    service: str
    to: str
    steps: tuple[float, ...]
    interval: float
    min_healthy: int = 1
    max_error_rate: float = 0.05
    pause_at: tuple[float, ...] = ()
    reason: str = ""


def rollout_key(service: str) -> str:
    return f"services/{service}/rollout"


def step_split(start: dict[str, Any] | None, to: str, share: float) -> dict[str, Any]:
    """The split at one step: `to` has `share`; the other named groups (and so the default
    group) keep their starting proportions of the remaining traffic. Key order is kept."""
    value = dict(start or {"by": "tag"})
    groups: dict[str, float] = dict(value.get("groups", {}))
    rest = 100.0 - groups.get(to, 0.0)
    scaled = {
        name: (share if name == to else (round(s * (100.0 - share) / rest, 2) if rest else 0.0))
        for name, s in groups.items()
    }
    scaled.setdefault(to, share)
    value["groups"] = {name: int(s) if float(s).is_integer() else s for name, s in scaled.items()}
    return value


def eligible_in(service: ServiceState | None, by: str, group: str) -> int:
    """How many eligible instances belong to a group (by tag or meta), whatever the split."""
    if service is None:
        return 0
    meta_key = by.removeprefix("meta:") if by != "tag" else None
    return sum(
        1
        for server in service.servers
        if server.eligible
        and (group in server.tags if meta_key is None else dict(server.meta).get(meta_key) == group)
    )


@dataclass
class ErrorCounts:
    """Counters of a group's servers from HAProxy's `show stat`."""

    responses: int = 0
    errors: int = 0

    def ratio_since(self, before: ErrorCounts) -> tuple[float, int]:
        total = self.responses - before.responses
        failed = self.errors - before.errors
        return (failed / total if total > 0 else 0.0), total


def parse_show_stat(text: str, backend: str, servers: set[str]) -> ErrorCounts:
    """Sum the responses and errors of some servers of a backend in `show stat` CSV."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("# ")), None)
    if header is None:
        raise ValueError(f"not `show stat` output: {text[:120]!r}")
    columns = header[2:].split(",")
    counts = ErrorCounts()
    for line in lines:
        if line.startswith("#"):
            continue
        row = dict(zip(columns, line.split(","), strict=False))
        if row.get("pxname") != backend or row.get("svname") not in servers:
            continue

        def number(name: str, fields: dict[str, str] = row) -> int:
            text = fields.get(name, "")
            return int(text) if text.isdigit() else 0

        responses = sum(number(f"hrsp_{kind}") for kind in ("1xx", "2xx", "3xx", "4xx", "5xx"))
        failures = number("econ") + number("eresp")
        counts.responses += responses + number("hrsp_other") + failures
        counts.errors += number("hrsp_5xx") + failures
    return counts


class RuntimeStats:
    """Reads server counters from the HAProxy target's runtime API, when there is one."""

    def __init__(self, config: Config) -> None:
        self.command: Callable[[str], Any] | None = None
        for target in config.targets:
            if target.kind is not TargetKind.HAPROXY:
                continue
            if target.reload.method is ReloadMethod.MASTER_CLI and target.reload.socket:
                socket = target.reload.socket
                self.command = lambda text, s=socket: master_cli(s, f"@1 {text}")
            else:
                stats = Path(str(target.vars["run_dir"])) / "haproxy.sock"
                self.command = lambda text, s=stats: master_cli(s, text)
            break

    async def counts(self, backend: str, servers: set[str]) -> ErrorCounts | None:
        """The group's counters, or None when the runtime API cannot be reached."""
        if self.command is None:
            return None
        try:
            return parse_show_stat(await self.command("show stat"), backend, servers)
        except (OSError, TimeoutError, ValueError):
            return None


class Watcher:
    """The desired state as the daemon would see it, from the configured sources."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sources = sources_for(config)
        self.latest: dict[str, Snapshot] = {}
        self.synced = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Watcher:
        self.tasks = [asyncio.create_task(self._follow(s.name, s)) for s in self.sources]
        async with asyncio.timeout(30):
            await self.synced.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, name: str, source: Any) -> None:
        async for snapshot in source.snapshots():
            if snapshot.usable or name in self.latest:  # never judge on a source not yet read
                self.latest[name] = carry_forward(self.latest.get(name), snapshot)
            if len(self.latest) == len(self.sources):
                self.synced.set()

    def state(self) -> DesiredState:
        snapshots = [self.latest[source.name] for source in self.sources]
        return build(merge(snapshots), self.config.health_mode)


class Progress:
    """Progress on a terminal (one line rewritten in place) or plain lines (every few seconds)."""

    def __init__(self, stream: Any, *, interactive: bool, every: float = 5.0) -> None:
        self.stream = stream
        self.interactive = interactive
        self.every = every
        self._last_status = 0.0

    def line(self, text: str) -> None:
        """An event worth keeping: a step, a pause, a revert."""
        prefix = "\r\033[K" if self.interactive else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """The gates' current reading."""
        if self.interactive:
            self.stream.write(f"\r\033[K{text}")
        elif time.monotonic() - self._last_status >= self.every:
            self.stream.write(f"{text}\n")
        else:
            return
        self._last_status = time.monotonic()
        self.stream.flush()


@dataclass
class Rollout:
    """One running rollout: its plan, store, gates and progress output."""

    plan: Plan
    store: Store
    watcher: Watcher
    stats: RuntimeStats
    progress: Progress
    start: Current = field(default_factory=lambda: Current(None, 0))
    revision: int = 0
    control_revision: int = 0

    async def run(self) -> None:
        """Every step through the gates, or revert and raise."""
        self.start = await read(self.store, self.plan.service)
        self.revision = self.start.revision
        await self._claim()
        by = str((self.start.value or {}).get("by", "tag"))
        try:
            self._check_health(by)
            for number, share in enumerate(self.plan.steps, 1):
                if share in self.plan.pause_at:
                    await self._pause(share, by)
                self._check_health(by)
                await self._write_step(share)
                await self._publish(Phase.RUNNING, step=number, share=share)
                self.progress.line(
                    f"step {number}/{len(self.plan.steps)}: {self.plan.to} at {share:g}%"
                )
                await self._hold(share, by, last=number == len(self.plan.steps))
        except (GateFailed, Aborted) as error:
            await self._revert(error)
            raise
        await self._publish(Phase.DONE, message="reached the last step")

    async def _claim(self) -> None:
        found = await self.store.get(rollout_key(self.plan.service))
        if found is not None:
            with contextlib.suppress(ValueError):
                if json.loads(found.value).get("phase") in ACTIVE:
                    raise SplitError(
                        f"a rollout of {self.plan.service} is already in progress "
                        "(lbsync rollout abort to stop it)"
                    )
        self.control_revision = found.revision if found else 0
        await self._publish(Phase.RUNNING, step=0, share=None)

    async def _publish(self, phase: Phase, **fields: Any) -> None:
        record = {
            "phase": phase.value,
            "to": self.plan.to,
            "steps": list(self.plan.steps),
            "interval": self.plan.interval,
            "start_split": self.start.value,
            "who": actor(),
            "updated": time.time(),
            **fields,
        }
        key = rollout_key(self.plan.service)
        if not await self.store.put_if(key, json.dumps(record), self.control_revision):
            current = await self.store.get(key)
            phase_now = json.loads(current.value).get("phase") if current else None
            if phase_now == Phase.ABORTING and phase not in (Phase.REVERTED, Phase.ABORTED):
                raise Aborted("aborted by an operator")
            if current is None or not await self.store.put_if(
                key, json.dumps(record), current.revision
            ):
                raise SplitError(f"the rollout record of {self.plan.service} keeps changing")
        found = await self.store.get(key)
        self.control_revision = found.revision if found else 0

    async def _control(self) -> str | None:
        found = await self.store.get(rollout_key(self.plan.service))
        if found is None or found.revision == self.control_revision:
            return None
        self.control_revision = found.revision
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(found.value).get("phase"))
        return None

    def _check_health(self, by: str) -> int:
        eligible = eligible_in(self.watcher.state().service(self.plan.service), by, self.plan.to)
        if eligible < self.plan.min_healthy:
            raise GateFailed(
                f"group {self.plan.to} has {eligible} eligible instance(s), "
                f"fewer than --min-healthy {self.plan.min_healthy}"
            )
        return eligible

    async def _write_step(self, share: float) -> None:
        value = step_split(self.start.value, self.plan.to, share)
        known = set(value["groups"])
        current = await read(self.store, self.plan.service)
        if current.revision != self.revision:
            raise GateFailed(
                f"the split of {self.plan.service} was changed by someone else during the rollout"
            )
        await write(
            self.store,
            self.plan.service,
            value,
            known=known,
            expect_revision=None,
            reason=self.plan.reason or f"rollout to {self.plan.to}: {share:g}%",
            current=current,
        )
        found = await self.store.get(split_key(self.plan.service))
        self.revision = found.revision if found else 0

    async def _hold(self, share: float, by: str, *, last: bool) -> None:
        """Keep checking the gates for one interval (the last step: one interval too)."""
        servers = self._group_servers()
        before = await self.stats.counts(self.plan.service, servers)
        deadline = time.monotonic() + self.plan.interval
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(CONTROL_POLL, remaining))
            if await self._control() == Phase.ABORTING:
                raise Aborted("aborted by an operator")
            eligible = self._check_health(by)
            reading = await self.stats.counts(self.plan.service, servers)
            ratio, total = (0.0, 0)
            if before is not None and reading is not None:
                ratio, total = reading.ratio_since(before)
                if total and ratio > self.plan.max_error_rate:
                    raise GateFailed(
                        f"group {self.plan.to} error ratio {ratio:.1%} over {total} responses "
                        f"is above --max-error-rate {self.plan.max_error_rate:.1%}"
                    )
            self.progress.status(
                f"{self.plan.to} at {share:g}%: {eligible} eligible, errors {ratio:.1%} of "
                f"{total} responses, {'done' if last else 'next step'} in {remaining:.0f}s"
            )

    def _group_servers(self) -> set[str]:
        service = self.watcher.state().service(self.plan.service)
        return {s.name for s in service.servers if self.plan.to in s.tags} if service else set()

    async def _pause(self, share: float, by: str) -> None:
        await self._publish(Phase.PAUSED, share=share, message=f"paused before {share:g}%")
        self.progress.line(f"paused before {share:g}%: lbsync rollout resume {self.plan.service}")
        while True:
            await asyncio.sleep(CONTROL_POLL)
            phase = await self._control()
            if phase == Phase.RUNNING:
                self.progress.line("resumed")
                return
            if phase == Phase.ABORTING:
                raise Aborted("aborted by an operator")
            self._check_health(by)

    async def _revert(self, error: Exception) -> None:
        start = self.start.value
        current = await read(self.store, self.plan.service)
        phase = Phase.ABORTED if isinstance(error, Aborted) else Phase.REVERTED
        if current.revision == self.revision and start is not None:
            await write(
                self.store,
                self.plan.service,
                start,
                known=set(start.get("groups", {})),
                expect_revision=None,
                reason=f"rollout reverted: {error}",
                current=current,
            )
            message = f"{error}; split reverted to where the rollout started"
        else:
            message = f"{error}; split left as it is (someone else changed it)"
        self.progress.line(message)
        with contextlib.suppress(Aborted, SplitError):
            await self._publish(phase, message=message)


async def control(store: Store, service: str, phase: Phase, *, wait: float = 10.0) -> str:
    """`resume` (a paused rollout runs on) or `abort` (the rollout reverts and stops)."""
    key = rollout_key(service)
    found = await store.get(key)
    record = json.loads(found.value) if found else {}
    if not found or record.get("phase") not in ACTIVE:
        raise SplitError(f"no rollout of {service} is in progress")
    if phase is Phase.RUNNING and record.get("phase") != Phase.PAUSED:
        raise SplitError(f"the rollout of {service} is not paused")
    record["phase"] = phase.value
    if not await store.put_if(key, json.dumps(record), found.revision):
        raise SplitError(f"the rollout of {service} changed meanwhile; try again")
    if phase is not Phase.ABORTING:
        return "resumed"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        await asyncio.sleep(CONTROL_POLL)
        now = await store.get(key)
        if now and json.loads(now.value).get("phase") in (Phase.ABORTED, Phase.REVERTED):
            return str(json.loads(now.value).get("message", "aborted"))
    return "abort requested; no running rollout answered (its split was left as it is)"


def parse_steps(text: str) -> tuple[float, ...]:
    """`5,25,50,100` as rising shares from 0 to 100."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise SplitError(f"--steps: numbers separated by commas, got {text!r}") from error
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise SplitError(f"--steps: rising shares above 0 and at most 100, got {text!r}")
    return steps
