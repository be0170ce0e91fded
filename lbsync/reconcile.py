"""One target's cycle: render -> plan -> stage -> validate -> write -> reload -> report.

An invalid result is never written and never reloaded; a reload the proxy refuses puts the
previous file back, so the file on disk always matches what the proxy can load.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import jinja2

from lbsync import fsio, validate
from lbsync.config import TargetConfig
from lbsync.plan import Plan, plan
from lbsync.reload import Reloaded, ReloadFailed, ReloadUnavailable, reload
from lbsync.render import RenderError, load_template, render
from lbsync.report import ApplyReport, Outcome
from lbsync.state import DesiredState


class TargetRunner:
    """One target: its configuration, its compiled template, and what its proxy runs."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.running: bytes | None = fsio.read_or_none(config.dest)
        self._template: jinja2.Template | None = None
        self._template_stamp: tuple[int, int] | None = None

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
        started = time.monotonic()
        at = time.time()
        seconds: dict[str, float] = {}
        name = self.config.name

        def report(outcome: Outcome, the_plan: Plan | None, **extra: str | None) -> ApplyReport:
            seconds["total"] = time.monotonic() - started
            return ApplyReport(name, outcome, the_plan, at, seconds, **extra)

        try:
            rendered = self.render(state).encode()
        except RenderError as error:
            return report(Outcome.RENDER_FAILED, None, error=str(error))
        seconds["render"] = time.monotonic() - started
        digest = hashlib.sha256(rendered).hexdigest()[:16]
        dest = self.config.dest
        on_disk = fsio.read_or_none(dest)
        decided = plan(rendered, on_disk, self.running)
        if decided is Plan.NOTHING:
            return report(Outcome.UNCHANGED, decided, digest=digest)
        if decided is Plan.FULL:
            failure = await self._validate_and_write(rendered, on_disk, seconds)
            if failure is not None:
                return report(failure[0], decided, error=failure[1], digest=digest)
        mark = time.monotonic()
        try:
            reloaded = await reload(self.config.reload)
        except ReloadUnavailable as error:
            seconds["reload"] = time.monotonic() - mark
            return report(Outcome.PENDING, decided, error=str(error), digest=digest)
        except ReloadFailed as error:
            seconds["reload"] = time.monotonic() - mark
            if decided is Plan.FULL:
                fsio.restore(dest, on_disk, self.config.mode)
                message = f"{error}; previous {dest.name} restored"
            else:
                message = str(error)
            return report(Outcome.RELOAD_FAILED, decided, error=message, digest=digest)
        seconds["reload"] = time.monotonic() - mark
        self.running = rendered
        return report(
            Outcome.APPLIED if isinstance(reloaded, Reloaded) else Outcome.WRITTEN,
            decided,
            digest=digest,
            detail=reloaded.detail if reloaded else None,
        )

    async def _validate_and_write(
        self, rendered: bytes, on_disk: bytes | None, seconds: dict[str, float]
    ) -> tuple[Outcome, str] | None:
        """Stage, validate and commit; the failure to report, or None once written."""
        dest = self.config.dest
        mark = time.monotonic()
        try:
            staged = fsio.stage(dest, rendered, self.config.mode)
        except OSError as error:
            return Outcome.WRITE_FAILED, f"{dest}: cannot stage: {error}"
        try:
            verdict = await validate.run(
                self.config.validate, staged, timeout=self.config.validate_timeout
            )
            seconds["validate"] = verdict.seconds
            if not verdict.ok:
                return Outcome.INVALID, f"{dest}: rejected by {verdict.argv[0]}: {verdict.summary}"
            fsio.commit(staged, dest, previous=on_disk, keep_backup=self.config.backup)
        except OSError as error:
            return Outcome.WRITE_FAILED, f"{dest}: cannot write: {error}"
        finally:
            fsio.discard(staged)
        seconds["write"] = time.monotonic() - mark - seconds.get("validate", 0.0)
        return None
