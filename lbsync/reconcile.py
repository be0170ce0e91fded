"""One target's cycle: render -> plan -> stage -> validate -> write -> runtime or reload -> report.

An invalid result is never written and never reloaded; a reload the proxy refuses puts the
previous file back, so the file on disk always matches what the proxy can load. A RUNTIME plan
writes the file first and then sends the runtime operations, so a later reload loads the same
servers and weights; if HAProxy does not show the intended state afterwards, the written file
is reloaded instead. One lock per target: runtime commands and reloads never overlap.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from lbsync import fsio, layout, validate
from lbsync.config import TargetConfig
from lbsync.plan import Decision, Plan, Running, plan
from lbsync.reload import Reloaded, ReloadFailed, ReloadUnavailable, reload
from lbsync.render import RenderError, load_template, render
from lbsync.report import ApplyReport, Outcome
from lbsync.runtime import RuntimeApi, RuntimeFailed, RuntimeUnavailable, ServerKey
from lbsync.state import DesiredState


@dataclass
class _Cycle:
    """Timings and identity of one cycle, to build its report."""

    target: str
    started: float = field(default_factory=time.monotonic)
    at: float = field(default_factory=time.time)
    seconds: dict[str, float] = field(default_factory=dict)
    digest: str | None = None

    def lap(self, step: str, since: float) -> float:
        now = time.monotonic()
        self.seconds[step] = now - since
        return now

    def report(
        self,
        outcome: Outcome,
        decided: Plan | None,
        *,
        error: str | None = None,
        detail: str | None = None,
        runtime_ops: int = 0,
    ) -> ApplyReport:
        self.seconds["total"] = time.monotonic() - self.started
        return ApplyReport(
            self.target,
            outcome,
            decided,
            self.at,
            self.seconds,
            error=error,
            digest=self.digest,
            detail=detail,
            runtime_ops=runtime_ops,
        )


class TargetRunner:
    """One target: its configuration, its compiled template, and what its proxy runs."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        socket = config.reload.socket
        self.runtime = RuntimeApi(socket) if config.runtime and socket is not None else None
        on_disk = fsio.read_or_none(config.dest)
        # At start the file on disk is taken to be what runs, but not as validated.
        self.running = None if on_disk is None else Running(on_disk, self._layout(on_disk))
        self.lingering: frozenset[ServerKey] = frozenset()
        self._lock = asyncio.Lock()
        self._template: jinja2.Template | None = None
        self._template_stamp: tuple[int, int] | None = None

    def close(self) -> None:
        """Drop the kept runtime API connection (at shutdown)."""
        if self.runtime is not None:
            self.runtime.close()

    def _layout(self, content: bytes) -> layout.Layout | None:
        """The layout of a file, for targets with a runtime API."""
        return layout.parse(content.decode(errors="replace")) if self.runtime else None

    def template(self) -> jinja2.Template:
        """The compiled template, recompiled when its file changed."""
        path: Path = self.config.template
        try:
            stat = path.stat()
        except OSError as error:
            raise RenderError(f"{path}: cannot read template: {error.strerror}") from error
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._template is None or stamp != self._template_stamp:
            self._template = load_template(path)
            self._template_stamp = stamp
        return self._template

    def render(self, state: DesiredState) -> str:
        """The configuration text for a desired state (no side effects)."""
        return render(state, self.template(), self.config.vars)

    async def apply(self, state: DesiredState) -> ApplyReport:
        """Bring the destination and the proxy to the desired state, or report why not."""
        async with self._lock:
            return await self._apply(state, _Cycle(self.config.name))

    async def _apply(self, state: DesiredState, cycle: _Cycle) -> ApplyReport:
        try:
            rendered = self.render(state).encode()
        except RenderError as error:
            return cycle.report(Outcome.RENDER_FAILED, None, error=str(error))
        mark = cycle.lap("render", cycle.started)
        cycle.digest = hashlib.sha256(rendered).hexdigest()[:16]
        on_disk = fsio.read_or_none(self.config.dest)
        new_layout = self._layout(rendered)
        decision = plan(rendered, on_disk, self.running, new_layout)
        if decision.plan is Plan.NOTHING and self.lingering:
            decision = Decision(Plan.RUNTIME)  # only the removal of servers still leaving
        cycle.lap("decide", mark)
        if decision.plan is Plan.NOTHING:
            return cycle.report(Outcome.UNCHANGED, decision.plan)
        if decision.write or decision.validate:
            failure = await self._validate_and_write(rendered, on_disk, decision, cycle)
            if failure is not None:
                return cycle.report(failure[0], decision.plan, error=failure[1])
        fallback = None
        if decision.plan is Plan.RUNTIME:
            assert self.runtime is not None and new_layout is not None
            mark = time.monotonic()
            try:
                applied = await self.runtime.apply(decision.operations, new_layout, self.lingering)
            except RuntimeUnavailable as error:
                cycle.lap("runtime", mark)
                fallback = f"runtime API unreachable ({error})"
            except RuntimeFailed as error:
                cycle.lap("runtime", mark)
                fallback = f"runtime apply not verified ({error})"
                self.running = None  # some commands may have been applied
            else:
                cycle.lap("runtime", mark)
                self.lingering = applied.lingering
                self.running = Running(rendered, new_layout, validated=True)
                return cycle.report(
                    Outcome.APPLIED,
                    decision.plan,
                    detail=_runtime_detail(len(decision.operations), applied.lingering),
                    runtime_ops=len(decision.operations),
                )
        return await self._reload(rendered, on_disk, decision, new_layout, cycle, fallback)

    async def _reload(
        self,
        rendered: bytes,
        on_disk: bytes | None,
        decision: Decision,
        new_layout: layout.Layout | None,
        cycle: _Cycle,
        fallback: str | None,
    ) -> ApplyReport:
        """Reload the written file, then bring runtime values back to the file's."""
        prefix = f"{fallback}; " if fallback else ""
        mark = time.monotonic()
        if self.runtime is not None:
            self.runtime.close()  # the master re-executes: its connections do not survive
        try:
            reloaded = await reload(self.config.reload)
        except ReloadUnavailable as error:
            cycle.lap("reload", mark)
            return cycle.report(Outcome.PENDING, decision.plan, error=f"{prefix}{error}")
        except ReloadFailed as error:
            cycle.lap("reload", mark)
            message = f"{prefix}{error}"
            if decision.write:
                fsio.restore(self.config.dest, on_disk, self.config.mode)
                message += f"; previous {self.config.dest.name} restored"
            return cycle.report(Outcome.RELOAD_FAILED, decision.plan, error=message)
        mark = cycle.lap("reload", mark)
        self.lingering = frozenset()  # servers that are not in the file are gone
        detail = prefix + (reloaded.detail if reloaded else "")
        if self.runtime is not None and new_layout is not None:
            try:
                converged = await self.runtime.converge(new_layout)
            except (RuntimeFailed, RuntimeUnavailable) as error:
                cycle.lap("converge", mark)
                self.running = None
                message = f"{prefix}reloaded, but the servers differ from the file: {error}"
                return cycle.report(Outcome.RUNTIME_FAILED, decision.plan, error=message)
            cycle.lap("converge", mark)
            if converged.commands:
                detail += f"; {converged.commands} runtime corrections after the reload"
        self.running = Running(rendered, new_layout, validated=True)  # HAProxy loaded it
        return cycle.report(
            Outcome.APPLIED if isinstance(reloaded, Reloaded) else Outcome.WRITTEN,
            decision.plan,
            detail=detail or None,
        )

    async def _validate_and_write(
        self, rendered: bytes, on_disk: bytes | None, decision: Decision, cycle: _Cycle
    ) -> tuple[Outcome, str] | None:
        """Stage, validate (unless the plan proves it needless) and commit (when the bytes
        differ); the failure to report, or None once done."""
        dest = self.config.dest
        mark = time.monotonic()
        try:
            staged = fsio.stage(dest, rendered, self.config.mode)
        except OSError as error:
            return Outcome.WRITE_FAILED, f"{dest}: cannot stage: {error}"
        try:
            if decision.validate:
                verdict = await validate.run(
                    self.config.validate, staged, timeout=self.config.validate_timeout
                )
                cycle.seconds["validate"] = verdict.seconds
                if not verdict.ok:
                    return (
                        Outcome.INVALID,
                        f"{dest}: rejected by {verdict.argv[0]}: {verdict.summary}",
                    )
            if decision.write:
                fsio.commit(staged, dest, previous=on_disk, keep_backup=self.config.backup)
        except OSError as error:
            return Outcome.WRITE_FAILED, f"{dest}: cannot write: {error}"
        finally:
            fsio.discard(staged)
        cycle.seconds["write"] = time.monotonic() - mark - cycle.seconds.get("validate", 0.0)
        return None


def _runtime_detail(operations: int, lingering: frozenset[ServerKey]) -> str:
    """What a runtime apply did, for logs and the status."""
    text = f"{operations} runtime operation{'s' if operations != 1 else ''}, verified"
    if lingering:
        names = ", ".join(f"{backend}/{server}" for backend, server in sorted(lingering)[:3])
        text += f"; leaving once their requests finish: {names}"
    return text
