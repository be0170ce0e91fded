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
from dataclasses import dataclass, field, replace

from lbsync.config import TargetConfig
from lbsync.core.state import DesiredState, ServiceState
from lbsync.haproxy import layout
from lbsync.haproxy.blocks import Blocks, server_blocks
from lbsync.haproxy.operations import NotRuntime, runtime_changes
from lbsync.haproxy.runtime import (
    RuntimeApi,
    RuntimeFailed,
    RuntimeUnavailable,
    ServerKey,
    check,
)
from lbsync.pipeline import fastlane, fsio, startup, validate
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
from lbsync.pipeline.writer import LatestWriter

log = logging.getLogger("lbsync")


@dataclass(frozen=True)
class Proxy:
    """What the target's proxy is known to run (None: unknown), and the servers that were asked
    to leave but still finish their requests in maintenance."""

    running: Running | None
    lingering: frozenset[ServerKey] = frozenset()


@dataclass(frozen=True)
class Prepared:
    """A desired state's file and what the decision needs of it, made off the event loop."""

    rendered: bytes
    digest: str
    layout: layout.Layout | None
    blocks: Blocks | None


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
        # the desired state the running file was made from (None: not known), the template it
        # was rendered with, and the generation of the last change applied (see `apply`)
        self.basis: DesiredState | None = None
        self._basis_template: Compiled | None = None
        self.generation = -1
        self._lock = asyncio.Lock()
        self._compiled: Compiled | None = None
        self._alone: dict[str, tuple[ServiceState, DesiredState, bytes]] = {}
        # the fast lane's file, written after its runtime commands went out (`writer.py`)
        self._writer = LatestWriter(self._write_over_disk)

    async def flush(self) -> None:
        """Wait until the fast lane's last file is written (or failed to be)."""
        await self._writer.flush()

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

    def _prepared(self, state: DesiredState, template: Compiled) -> Prepared:
        """Render and read the layout (pure, CPU-bound: run in a worker thread)."""
        rendered = render(state, template.template, self.config.vars).encode()
        found = self._layout(rendered)
        return Prepared(
            rendered=rendered,
            digest=hashlib.sha256(rendered).hexdigest()[:16],
            layout=found,
            blocks=server_blocks(rendered) if found is not None else None,
        )

    async def apply(self, state: DesiredState, generation: int = 0) -> ApplyReport:
        """Bring the destination and the proxy to the desired state, or report why not.

        The whole render runs in a worker thread before the lock is taken, so the event loop
        (sources, the fast lane, the API) keeps going meanwhile. `generation` orders changes:
        a state older than one the fast lane applied meanwhile is dropped, the newer one is
        then on its way here."""
        cycle = _Cycle(self.config.name)
        try:
            template = self._compiled = compiled(self.config.template, self._compiled)
            prepared = await asyncio.to_thread(self._prepared, state, template)
        except RenderError as error:
            return cycle.report(Outcome.RENDER_FAILED, None, error=str(error))
        cycle.digest = prepared.digest
        cycle.lap("render", cycle.started)
        await self.flush()  # the decision reads the file on disk (not under the lock: the
        # fast lane goes on meanwhile, and whatever it applies then supersedes this state)
        async with self._lock:
            if generation < self.generation:
                return cycle.report(
                    Outcome.UNCHANGED, None, detail="superseded by a newer change already applied"
                )
            proxy = self.proxy if self.proxy is not None else await self._found_at_start()
            report, after = await self._apply(prepared, proxy, cycle)
            if after.running is not None and after.running.content == prepared.rendered:
                self.basis, self._basis_template = state, template
                if after.running.blocks is None:  # what runs was found at start
                    after = replace(after, running=replace(after.running, blocks=prepared.blocks))
            elif after.running is not proxy.running:
                self.basis = None
            self.proxy = after
            self.generation = max(self.generation, generation)
            return report

    async def apply_fast(self, state: DesiredState, generation: int) -> ApplyReport | None:
        """Apply a change through the fast lane (`fastlane.py`) when it can take it: the
        report, or None when the change waits for the whole render."""
        if self.runtime is None or self.proxy is None or self.basis is None:
            return None
        async with self._lock:
            proxy, basis = self.proxy, self.basis
            running = proxy.running
            if running is None or running.layout is None or not running.validated:
                return None
            if basis is None or proxy.lingering:
                return None
            if generation <= self.generation:
                return None
            try:
                template = self._compiled = compiled(self.config.template, self._compiled)
            except RenderError:
                return None
            if template is not self._basis_template:
                return None  # a new template: the whole render decides
            cycle = _Cycle(self.config.name)
            blocks = running.blocks
            if blocks is None:  # scanned once, then kept with what runs
                blocks = server_blocks(running.content)
                self.proxy = replace(proxy, running=replace(running, blocks=blocks))
            try:
                patch = fastlane.plan(
                    basis=basis,
                    state=state,
                    running=running.layout,
                    content=running.content,
                    blocks=blocks,
                    render_alone=lambda whole, one: self._render_alone(whole, one, template),
                )
            except RenderError:
                return None  # the whole render reports it
            if isinstance(patch, fastlane.NotFast):
                return None
            cycle.lap("render", cycle.started)
            return await self._apply_patch(
                state, generation=generation, patch=patch, running=running, cycle=cycle
            )

    async def _apply_patch(
        self,
        state: DesiredState,
        *,
        generation: int,
        patch: fastlane.Patch,
        running: Running,
        cycle: _Cycle,
    ) -> ApplyReport:
        """Send the patch's operations, then write its file (under the lock). Why the runtime
        API before the file here: docs/architecture.md (the fast lane)."""
        assert self.proxy is not None
        prepared = Prepared(
            rendered=patch.content,
            digest=hashlib.sha256(patch.content).hexdigest()[:16],
            layout=patch.layout,
            blocks=patch.blocks,
        )
        cycle.digest = prepared.digest
        decision = Decision(Plan.RUNTIME, patch.operations, write=True, validate=False)
        if patch.weights_only:
            report, proxy = await self._patch_weights(
                prepared, decision=decision, running=running, cycle=cycle
            )
        else:
            report, proxy = await self._patch_servers(
                prepared, decision=decision, running=running, cycle=cycle
            )
        if proxy.running is not None and proxy.running.content == patch.content:
            self.basis = state
        elif proxy.running is not running:
            self.basis = None
        self.proxy = proxy
        self.generation = generation
        return replace(report, detail=f"fast lane: {report.detail or report.outcome.value}")

    async def _patch_weights(
        self, prepared: Prepared, *, decision: Decision, running: Running, cycle: _Cycle
    ) -> tuple[ApplyReport, Proxy]:
        """Weights: live first, then the file (valid by the validator rule); a runtime apply
        HAProxy does not confirm is finished by a reload of that file, as in the whole cycle."""
        assert self.proxy is not None
        report, fallback, proxy = await self._runtime(
            prepared, decision=decision, proxy=self.proxy, cycle=cycle
        )
        if report is not None:
            self._writer.later(prepared.rendered)
            return report, proxy
        # not confirmed: the file first, then a reload of it
        await self.flush()
        mark = cycle.now()
        failure = await asyncio.to_thread(self._written, prepared.rendered, running.content)
        cycle.lap("write", mark)
        if failure is not None:
            # the file differs from what runs; the next cycle writes it again and reloads
            return cycle.report(failure.outcome, decision.plan, error=failure.error), Proxy(
                None, proxy.lingering
            )
        return await self._reload(
            prepared,
            on_disk=running.content,
            decision=decision,
            proxy=proxy,
            cycle=cycle,
            fallback=fallback,
        )

    async def _patch_servers(
        self, prepared: Prepared, *, decision: Decision, running: Running, cycle: _Cycle
    ) -> tuple[ApplyReport, Proxy]:
        """Joins and leaves: live first (HAProxy parses an added server's line as the file
        would), then the file validated and written; a file the validator refuses is not
        written and the servers are taken back."""
        assert self.proxy is not None and self.runtime is not None and running.layout is not None
        report, fallback, proxy = await self._runtime(
            prepared, decision=decision, proxy=self.proxy, cycle=cycle
        )
        if report is None:  # the whole cycle validates and reloads
            error = fallback or "runtime apply not verified"
            return cycle.report(Outcome.RUNTIME_FAILED, decision.plan, error=error), Proxy(
                None, self.proxy.lingering
            )
        check = replace(decision, validate=True)
        await self.flush()  # an older weights file must not land after this one
        failure = await self._validate_and_write(
            prepared.rendered, running.content, decision=check, cycle=cycle
        )
        if failure is None:
            return report, proxy
        assert prepared.layout is not None
        try:
            undo = runtime_changes(prepared.layout, running.layout)
            back = await self.runtime.apply(undo, running.layout, proxy.lingering)
        except (NotRuntime, RuntimeFailed, RuntimeUnavailable) as error:
            message = f"{failure.error}; taking the servers back failed: {error}"
            return cycle.report(failure.outcome, decision.plan, error=message), Proxy(None)
        message = f"{failure.error}; the servers it added or removed were taken back"
        return cycle.report(failure.outcome, decision.plan, error=message), Proxy(
            running, back.lingering
        )

    def _render_alone(
        self, whole: DesiredState, service: ServiceState, template: Compiled
    ) -> bytes:
        """What the template renders for one service alone (with everything else `whole`
        holds but the other services), kept for the service object it was made from."""
        known = self._alone.get(service.name)
        if known is not None and known[0] is service and known[1].raw is whole.raw:
            return known[2]
        alone = replace(whole, services=(service,))
        text = render(alone, template.template, self.config.vars).encode()
        if len(self._alone) > 4 * fastlane.MAX_CHANGED_SERVICES:
            self._alone.clear()
        self._alone[service.name] = (service, whole, text)
        return text

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
        self, prepared: Prepared, proxy: Proxy, cycle: _Cycle
    ) -> tuple[ApplyReport, Proxy]:
        rendered, new_layout = prepared.rendered, prepared.layout
        mark = cycle.now()
        on_disk = fsio.read_or_none(self.config.dest)
        decision = decide(rendered, on_disk=on_disk, running=proxy.running, layout=new_layout)
        if decision.plan is Plan.NOTHING and proxy.lingering:
            decision = Decision(Plan.RUNTIME)  # only the removal of servers still leaving
        cycle.lap("decide", mark)
        if decision.plan is Plan.NOTHING:
            return cycle.report(Outcome.UNCHANGED, decision.plan), await self._vouched(
                prepared, proxy, cycle
            )
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
                prepared, decision=decision, proxy=proxy, cycle=cycle
            )
            if done is not None:
                return done, proxy
        return await self._reload(
            prepared,
            on_disk=on_disk,
            decision=decision,
            proxy=proxy,
            cycle=cycle,
            fallback=fallback,
        )

    async def _runtime(
        self,
        prepared: Prepared,
        *,
        decision: Decision,
        proxy: Proxy,
        cycle: _Cycle,
    ) -> tuple[ApplyReport | None, str | None, Proxy]:
        """Send a RUNTIME plan's operations: the report when verified, else why a reload must
        finish the job, with what is then known of the proxy."""
        assert self.runtime is not None and prepared.layout is not None
        rendered, new_layout = prepared.rendered, prepared.layout
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
        running = Running(rendered, new_layout, validated=True, blocks=prepared.blocks)
        return report, None, Proxy(running, applied.lingering)

    async def _reload(
        self,
        prepared: Prepared,
        *,
        on_disk: bytes | None,
        decision: Decision,
        proxy: Proxy,
        cycle: _Cycle,
        fallback: str | None,
    ) -> tuple[ApplyReport, Proxy]:
        """Reload the written file, then bring runtime values back to the file's. A reload
        that did not happen leaves `proxy` as it was."""
        rendered, new_layout = prepared.rendered, prepared.layout
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
        loaded = Proxy(Running(rendered, new_layout, validated=True, blocks=prepared.blocks))
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

    async def _vouched(self, prepared: Prepared, proxy: Proxy, cycle: _Cycle) -> Proxy:
        """What runs, validated once if it was only found at start (the fast lane and weight
        changes skip the validator only for a file this process validated)."""
        running = proxy.running
        if self.runtime is None or running is None or running.validated:
            return proxy
        check = Decision(Plan.NOTHING, validate=True)
        if await self._validate_and_write(prepared.rendered, None, decision=check, cycle=cycle):
            return proxy  # refused: every change then takes the validator, as before
        return replace(proxy, running=replace(running, validated=True))

    def _write_over_disk(self, content: bytes) -> str | None:
        """Replace what is on disk now (blocking: the writer runs it in a thread)."""
        failure = self._written(content, fsio.read_or_none(self.config.dest))
        return f"{self.config.name}: {failure.error}" if failure is not None else None

    def _written(self, content: bytes, on_disk: bytes | None) -> Failure | None:
        """Stage and commit a file that needs no validation (blocking: run in a thread)."""
        dest = self.config.dest
        try:
            staged = fsio.stage(dest, content, self.config.mode)
        except OSError as error:
            return Failure(Outcome.WRITE_FAILED, f"{dest}: cannot stage: {error}")
        try:
            fsio.commit(staged, dest, previous=on_disk, keep_backup=self.config.backup)
        except OSError as error:
            return Failure(Outcome.WRITE_FAILED, f"{dest}: cannot write: {error}")
        finally:
            fsio.discard(staged)
        return None

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
