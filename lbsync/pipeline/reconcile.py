"""One target's cycle: render, decide, stage, validate, write, runtime or reload, report.

An invalid result is never written and never reloaded; a reload the proxy refuses puts the
previous file back, so the file on disk always matches what the proxy can load. A RUNTIME plan
writes the file first and then sends the runtime operations, so a later reload loads the same
servers and weights; if HAProxy does not show the intended state afterwards, the written file
is reloaded instead. One lock per target: runtime commands and reloads never overlap.

What the proxy runs (`Proxy`) is a value: each step returns the new one with its report, and
`apply` assigns it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

from lbsync.config import TargetConfig
from lbsync.core.state import DesiredState
from lbsync.haproxy import layout
from lbsync.haproxy.runtime import (
    RuntimeApi,
    RuntimeFailed,
    RuntimeUnavailable,
    ServerKey,
    check,
)
from lbsync.pipeline import fsio, startup, validate
from lbsync.pipeline.decision import Decision, Plan, Running, decide
from lbsync.pipeline.reload import (
    Reloaded,
    ReloadFailed,
    ReloadUnavailable,
    engine_for,
    reload,
)
from lbsync.pipeline.render import RenderError, render
from lbsync.pipeline.report import ApplyReport, Outcome
from lbsync.pipeline.templates import Compiled, compiled

log = logging.getLogger("lbsync")


@dataclass(frozen=True)
class Proxy:
    """What the target's proxy is known to run (None: unknown), and the servers that were asked
    to leave but still finish their requests in maintenance."""

    running: Running | None
    lingering: frozenset[ServerKey] = frozenset()


@dataclass(frozen=True)
class Failure:
    """A step that stopped the cycle: the outcome to report and why."""

    outcome: Outcome
    error: str


@dataclass
class _Cycle:
    """Timings and identity of one cycle, to build its report."""

    target: str
    clock: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    started: float = 0.0
    at: float = field(default_factory=time.time)
    seconds: dict[str, float] = field(default_factory=dict)
    digest: str | None = None

    def __post_init__(self) -> None:
        self.started = self.clock.time()

    def now(self) -> float:
        return self.clock.time()

    def lap(self, step: str, since: float) -> float:
        now = self.now()
        self.seconds[step] = now - since
        return now

    def report(
        self,
        outcome: Outcome,
        plan: Plan | None,
        *,
        error: str | None = None,
        detail: str | None = None,
        runtime_ops: int = 0,
    ) -> ApplyReport:
        self.seconds["total"] = self.now() - self.started
        return ApplyReport(
            target=self.target,
            outcome=outcome,
            plan=plan,
            at=self.at,
            seconds=self.seconds,
            error=error,
            digest=self.digest,
            detail=detail,
            runtime_ops=runtime_ops,
        )


class TargetRunner:
    """One target: its configuration, its compiled template, and what its proxy runs."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        socket = config.reload.master_socket
        self.runtime = RuntimeApi(socket) if config.runtime and socket is not None else None
        # one client of the container engine for the daemon's life (`reload = docker`)
        self.engine = engine_for(config.reload)
        # None until the first cycle asks the proxy what it runs (`startup.py`)
        self.proxy: Proxy | None = None
        self._lock = asyncio.Lock()
        self._compiled: Compiled | None = None

    def close(self) -> None:
        """Drop the kept runtime API connection (at shutdown)."""
        if self.runtime is not None:
            self.runtime.close()
        if self.engine is not None:
            self.engine.close()

    def _layout(self, content: bytes) -> layout.Layout | None:
        """The layout of a file, for targets with a runtime API."""
        return layout.parse(content.decode(errors="replace")) if self.runtime else None

    def render(self, state: DesiredState) -> str:
        """The configuration text for a desired state (no side effects but the template cache)."""
        self._compiled = compiled(self.config.template, self._compiled)
        return render(state, self._compiled.template, self.config.vars)

    async def apply(self, state: DesiredState) -> ApplyReport:
        """Bring the destination and the proxy to the desired state, or report why not."""
        async with self._lock:
            proxy = self.proxy if self.proxy is not None else await self._found_at_start()
            report, self.proxy = await self._apply(state, proxy, _Cycle(self.config.name))
            return report

    async def _found_at_start(self) -> Proxy:
        """What the proxy runs when lbsync starts: the file on disk (not as validated) if the
        proxy's workers started after it was written and, with a runtime API, its servers
        read back equal the file's; else nothing is assumed and the first cycle reloads."""
        dest = self.config.dest
        try:
            on_disk, written_at = dest.read_bytes(), dest.stat().st_mtime
        except OSError:
            return Proxy(None)
        if not await startup.loaded(self.config.reload, written_at):
            log.info("%s: %s is newer than what its proxy runs; reloading", self.config.name, dest)
            return Proxy(None)
        layout_on_disk = self._layout(on_disk)
        if self.runtime is None or layout_on_disk is None:
            return Proxy(Running(on_disk, layout_on_disk))
        try:
            seen = check(layout_on_disk.backends, await self.runtime.servers(None))
        except (RuntimeFailed, RuntimeUnavailable):
            return Proxy(None)
        if seen.problems:
            log.info(
                "%s: HAProxy's servers differ from %s (%s); reloading",
                self.config.name,
                dest,
                seen.problems[0],
            )
            return Proxy(None)
        return Proxy(Running(on_disk, layout_on_disk), seen.lingering)

    async def _apply(
        self, state: DesiredState, proxy: Proxy, cycle: _Cycle
    ) -> tuple[ApplyReport, Proxy]:
        try:
            rendered = self.render(state).encode()
        except RenderError as error:
            return cycle.report(Outcome.RENDER_FAILED, None, error=str(error)), proxy
        mark = cycle.lap("render", cycle.started)
        cycle.digest = hashlib.sha256(rendered).hexdigest()[:16]
        on_disk = fsio.read_or_none(self.config.dest)
        new_layout = self._layout(rendered)
        decision = decide(rendered, on_disk=on_disk, running=proxy.running, layout=new_layout)
        if decision.plan is Plan.NOTHING and proxy.lingering:
            decision = Decision(Plan.RUNTIME)  # only the removal of servers still leaving
        cycle.lap("decide", mark)
        if decision.plan is Plan.NOTHING:
            return cycle.report(Outcome.UNCHANGED, decision.plan), proxy
        if decision.write or decision.validate:
            failure = await self._validate_and_write(
                rendered, on_disk, decision=decision, cycle=cycle
            )
            if failure is not None:
                return cycle.report(failure.outcome, decision.plan, error=failure.error), proxy
        fallback = None
        if decision.plan is Plan.RUNTIME:
            assert new_layout is not None
            done, fallback, proxy = await self._runtime(
                rendered, new_layout, decision=decision, proxy=proxy, cycle=cycle
            )
            if done is not None:
                return done, proxy
        return await self._reload(
            rendered=rendered,
            on_disk=on_disk,
            decision=decision,
            new_layout=new_layout,
            proxy=proxy,
            cycle=cycle,
            fallback=fallback,
        )

    async def _runtime(
        self,
        rendered: bytes,
        new_layout: layout.Layout,
        *,
        decision: Decision,
        proxy: Proxy,
        cycle: _Cycle,
    ) -> tuple[ApplyReport | None, str | None, Proxy]:
        """Send a RUNTIME plan's operations: the report when verified, else why a reload must
        finish the job, with what is then known of the proxy."""
        assert self.runtime is not None
        mark = cycle.now()
        try:
            applied = await self.runtime.apply(decision.operations, new_layout, proxy.lingering)
        except RuntimeUnavailable as error:
            cycle.lap("runtime", mark)
            return None, f"runtime API unreachable ({error})", proxy
        except RuntimeFailed as error:
            cycle.lap("runtime", mark)
            # some commands may have been applied: what runs is no longer known
            return None, f"runtime apply not verified ({error})", Proxy(None, proxy.lingering)
        cycle.lap("runtime", mark)
        report = cycle.report(
            Outcome.APPLIED,
            decision.plan,
            detail=_runtime_detail(len(decision.operations), applied.lingering),
            runtime_ops=len(decision.operations),
        )
        return report, None, Proxy(Running(rendered, new_layout, validated=True), applied.lingering)

    async def _reload(
        self,
        *,
        rendered: bytes,
        on_disk: bytes | None,
        decision: Decision,
        new_layout: layout.Layout | None,
        proxy: Proxy,
        cycle: _Cycle,
        fallback: str | None,
    ) -> tuple[ApplyReport, Proxy]:
        """Reload the written file, then bring runtime values back to the file's. A reload
        that did not happen leaves `proxy` as it was."""
        prefix = f"{fallback}; " if fallback else ""
        mark = cycle.now()
        if self.runtime is not None:
            self.runtime.close()  # the master re-executes: its connections do not survive
        try:
            reloaded = await reload(self.config.reload, engine=self.engine)
        except ReloadUnavailable as error:
            cycle.lap("reload", mark)
            report = cycle.report(Outcome.PENDING, decision.plan, error=f"{prefix}{error}")
            return report, proxy
        except ReloadFailed as error:
            cycle.lap("reload", mark)
            message = f"{prefix}{error}"
            if decision.write:
                message += "; " + self._restored(on_disk)
            report = cycle.report(Outcome.RELOAD_FAILED, decision.plan, error=message)
            return report, proxy
        mark = cycle.lap("reload", mark)
        detail = prefix + (reloaded.detail if reloaded else "")
        # HAProxy loaded the file: servers that are not in it are gone
        loaded = Proxy(Running(rendered, new_layout, validated=True))
        if self.runtime is not None and new_layout is not None:
            try:
                converged = await self.runtime.converge(new_layout)
            except (RuntimeFailed, RuntimeUnavailable) as error:
                cycle.lap("converge", mark)
                message = f"{prefix}reloaded, but the servers differ from the file: {error}"
                return cycle.report(Outcome.RUNTIME_FAILED, decision.plan, error=message), Proxy(
                    None
                )
            cycle.lap("converge", mark)
            if converged.commands:
                detail += f"; {converged.commands} runtime corrections after the reload"
        outcome = Outcome.APPLIED if isinstance(reloaded, Reloaded) else Outcome.WRITTEN
        return cycle.report(outcome, decision.plan, detail=detail or None), loaded

    def _restored(self, previous: bytes | None) -> str:
        """Put the file the proxy still runs back on disk; say whether that worked (a full or
        read-only disk leaves the refused file, and the next cycle tries again)."""
        dest = self.config.dest
        try:
            fsio.restore(dest, previous, self.config.mode)
        except OSError as error:
            return f"previous {dest.name} could not be restored ({error}); the refused file stays"
        return f"previous {dest.name} restored"

    async def _validate_and_write(
        self, rendered: bytes, on_disk: bytes | None, *, decision: Decision, cycle: _Cycle
    ) -> Failure | None:
        """Stage, validate (unless the plan proves it needless) and commit (when the bytes
        differ); the failure to report, or None once done."""
        dest = self.config.dest
        mark = cycle.now()
        try:
            staged = fsio.stage(dest, rendered, self.config.mode)
        except OSError as error:
            return Failure(Outcome.WRITE_FAILED, f"{dest}: cannot stage: {error}")
        try:
            if decision.validate:
                verdict = await validate.run(
                    self.config.validate, staged, timeout=self.config.validate_timeout
                )
                cycle.seconds["validate"] = verdict.seconds
                if not verdict.ok:
                    return Failure(
                        Outcome.INVALID, f"{dest}: rejected by {verdict.argv[0]}: {verdict.summary}"
                    )
            if decision.write:
                fsio.commit(staged, dest, previous=on_disk, keep_backup=self.config.backup)
        except OSError as error:
            return Failure(Outcome.WRITE_FAILED, f"{dest}: cannot write: {error}")
        finally:
            fsio.discard(staged)
        cycle.seconds["write"] = cycle.now() - mark - cycle.seconds.get("validate", 0.0)
        return None


def _runtime_detail(operations: int, lingering: frozenset[ServerKey]) -> str:
    """What a runtime apply did, for logs and the status."""
    text = f"{operations} runtime operation{'s' if operations != 1 else ''}, verified"
    if lingering:
        names = ", ".join(f"{backend}/{server}" for backend, server in sorted(lingering)[:3])
        text += f"; leaving once their requests finish: {names}"
    return text
