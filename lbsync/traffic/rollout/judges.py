"""A rollout's metric gates and webhooks, as its driver uses them between steps.

- **pre-rollout** hooks before the first step and **step** hooks after each step's split is
  written: a round that fails reverts the rollout (`hooks.HookRound.reverts`).
- **Metric gates** are read at the end of each step's interval, and again every
  `reading_every` while the analysis waits (a metric not passing yet): the tally decides
  (`analysis.tally.assess`): passing goes on, failed reverts, paused waits for a person.
- **confirm-promotion** hooks before the last step: the rollout holds (its gates still read)
  until every one answers 2xx.
- **post-rollout** hooks once it is done, **rollback** hooks once it was reverted; their
  outcome changes nothing.

Each round's results and every reading are written into the rollout record, and the kinds of
hooks already sent for a step are kept there too, so a driver that takes over never calls a
step's hooks a second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbsync.config.schema import AnalysisConfig
from lbsync.traffic.analysis.measure import Querier, measure
from lbsync.traffic.analysis.metrics import MetricGate, Target, parse_metrics
from lbsync.traffic.analysis.prometheus import PrometheusClient
from lbsync.traffic.analysis.readings import Reading
from lbsync.traffic.analysis.tally import Assessment, Limits, Outcome, Tally, assess
from lbsync.traffic.rollout.gates import GateFailed
from lbsync.traffic.rollout.hooks import (
    HookEvent,
    HookKind,
    HookOutcome,
    HookRound,
    Webhooks,
    parse_header,
    parse_hook,
)
from lbsync.traffic.rollout.record import RolloutRecord
from lbsync.traffic.rollout.spec import Phase, RolloutSpec
from lbsync.traffic.splits import SplitError

READINGS_KEPT = 50
READING_MAX = 30.0  # seconds between readings while the analysis waits, at most
HOOK_RESULTS_KEPT = 20


@dataclass
class Judges:
    """What a rollout asks besides its health and error gates; nothing when empty."""

    gates: tuple[MetricGate, ...] = ()
    limits: Limits = field(default_factory=Limits)
    querier: Querier | None = None
    hooks: Webhooks | None = None
    window: float = 60.0
    reading_every: float = 10.0
    tally: Tally = field(default_factory=Tally)
    last: tuple[Reading, ...] = ()

    @property
    def any_gate(self) -> bool:
        """Whether there are metric gates to read."""
        return bool(self.gates)

    async def read(self, service: str, group: str, servers: Sequence[str]) -> tuple[Reading, ...]:
        """Every gate read once for the group's servers; the tally counts them."""
        if not self.gates or self.querier is None:
            return ()
        target = Target(service=service, group=group, servers=tuple(servers), window=self.window)
        readings = await measure(self.querier, self.gates, target)
        self.tally, self.last = self.tally.add(readings), readings
        return readings

    def assessed(self) -> Assessment:
        """What the readings so far decide."""
        return assess(self.tally, self.gates, self.limits)

    def has(self, kind: HookKind) -> bool:
        """Whether the rollout names hooks of `kind`."""
        return self.hooks is not None and bool(self.hooks.of(kind))

    async def call(
        self, kind: HookKind, record: RolloutRecord, *, step: int, share: float | None
    ) -> HookRound:
        """One round of the hooks of `kind` (`has`), its results kept in the record."""
        assert self.hooks is not None
        found = await self.hooks.run(kind, event_of(self, record, step=step, share=share))
        record.progress = {
            **record.progress,
            "hook_results": kept(
                record.progress.get("hook_results", []),
                [result.to_json() for result in found.results],
                HOOK_RESULTS_KEPT,
            ),
        }
        return found


def _now(record: RolloutRecord) -> Phase:
    """The phase the record is in, as a publish keeps it (running before any was written)."""
    return record.phase or Phase.RUNNING


def kept(found: list[Any], new: Sequence[dict[str, Any]], limit: int) -> list[Any]:
    """A record's list with new entries added, the oldest dropped beyond `limit`."""
    return [*found, *new][-limit:]


Wait = Callable[[float], Awaitable[None]]
"""The driver's wait: `seconds` while the record's controls and the health gate are watched."""


def event_of(judges: Judges, record: RolloutRecord, *, step: int, share: float | None) -> HookEvent:
    """What a hook is told: the record's service, group and phase, the step, the last readings."""
    return HookEvent(
        service=record.spec.service,
        group=record.spec.to,
        phase=_now(record).value,
        step=step,
        share=share,
        readings=judges.last,
    )


async def hooked(
    judges: Judges, record: RolloutRecord, kind: HookKind, *, step: int, share: float | None
) -> HookRound | None:
    """A round of `kind` for `step`, unless the record says it was sent; its results kept in
    the record; GateFailed when the round asks for a revert."""
    mark = f"{kind.value}:{step}"
    if mark in record.progress.get("hooked", []) or not judges.has(kind):
        return None
    found = await judges.call(kind, record, step=step, share=share)
    record.event(f"{kind.value} hooks: {found.message}")
    record.progress = {**record.progress, "hooked": [*record.progress.get("hooked", []), mark]}
    await record.publish(_now(record))
    if found.reverts:
        raise GateFailed(f"{kind.value} hook failed: {found.message}")
    return found


async def confirmed(
    judges: Judges, record: RolloutRecord, *, step: int, share: float, wait: Wait
) -> None:
    """Hold before the last step until every confirm-promotion hook answers 2xx."""
    kind = HookKind.CONFIRM_PROMOTION
    if not judges.has(kind):
        return
    while True:
        found = await judges.call(kind, record, step=step, share=share)
        if found.outcome is HookOutcome.OK:
            record.event("confirm-promotion hooks answered 2xx")
            await record.publish(_now(record))
            return
        message = f"waiting for confirm-promotion: {found.message}"
        await record.publish(_now(record), message=message)
        await wait(judges.reading_every)


async def analysed(
    judges: Judges,
    record: RolloutRecord,
    *,
    servers: Sequence[str],
    wait: Wait,
    paused: Callable[[], Awaitable[None]],
) -> None:
    """Read the metric gates until the tally lets the rollout go on (GateFailed: revert; a pause
    for a person: wait for `resume`, then read again)."""
    if not judges.any_gate:
        return
    while True:
        readings = await judges.read(record.spec.service, record.spec.to, servers)
        record.progress = {
            **record.progress,
            "readings": kept(
                record.progress.get("readings", []), [r.to_json() for r in readings], READINGS_KEPT
            ),
            "tally": judges.tally.to_json(),
        }
        verdict = judges.assessed()
        if verdict.outcome is Outcome.FAILED:
            record.event(f"analysis failed: {verdict.message}")
            raise GateFailed(verdict.message)
        if verdict.outcome is Outcome.PASSING:
            await record.publish(_now(record))
            return
        if verdict.outcome is Outcome.PAUSED:
            record.event(f"analysis paused: {verdict.message}")
            await record.publish(Phase.PAUSED, message=verdict.message)
            await paused()
            judges.tally = judges.tally.resumed()
            continue
        await record.publish(_now(record), message=verdict.message)
        await wait(judges.reading_every)


def judges_for(spec: RolloutSpec, analysis: AnalysisConfig) -> Judges:
    """The metric gates and hooks a spec names, read from `[analysis] prometheus`; SplitError
    (naming the option) for a spec that cannot be judged, before any step."""
    gates = parse_metrics(spec.metrics)
    if gates and analysis.prometheus is None:
        raise SplitError("--metric: metric gates need [analysis] prometheus in lbsync.toml")
    headers = [parse_header(text) for text in spec.hook_headers]
    hooks = [parse_hook(text, headers=headers) for text in spec.hooks]
    return Judges(
        gates=gates,
        limits=Limits(failure_limit=spec.failure_limit, inconclusive_limit=spec.inconclusive_limit),
        querier=(
            PrometheusClient(analysis.prometheus, timeout=analysis.timeout)
            if analysis.prometheus is not None
            else None
        ),
        hooks=Webhooks(hooks) if hooks else None,
        window=analysis.window,
        reading_every=min(max(spec.interval / 3, 1.0), READING_MAX),
    )
