"""What a run of readings decides (pure): go on, wait, fail (revert), or pause for a person.

Per metric, two counts:
- failures over the whole analysis; the `failure_limit`-th fails the rollout (Flagger's
  `threshold`: 1, the default, fails on the first failed reading; unlike Argo Rollouts'
  `failureLimit`, which counts the failures tolerated);
- inconclusive readings in a row; the `inconclusive_limit`-th pauses the rollout for a person,
  who resumes or aborts it: no data neither promotes nor reverts. A pass or a fail ends the run,
  and so does a resume (`Tally.resumed`).

A step may be promoted only while every metric's last reading passed (`Outcome.PASSING`);
a metric with no reading yet, or whose last reading failed or was inconclusive under its limit,
makes the rollout wait (`Outcome.WAITING`) for the next reading. A failure outranks a pause,
which outranks waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from lbsync.traffic.analysis.metrics import MetricGate, MetricSpecError
from lbsync.traffic.analysis.readings import Reading, ReadingError, Verdict


@dataclass(frozen=True)
class Limits:
    """When failures fail and inconclusive readings pause."""

    failure_limit: int = 1
    inconclusive_limit: int = 3

    def __post_init__(self) -> None:
        for option, value in (
            ("--failure-limit", self.failure_limit),
            ("--inconclusive-limit", self.inconclusive_limit),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MetricSpecError(f"{option}: a whole number from 1, got {value!r}")


class Outcome(StrEnum):
    """What the analysis says now."""

    PASSING = "passing"  # every metric's last reading passed: the step may be promoted
    WAITING = "waiting"  # not yet: read again
    FAILED = "failed"  # a metric reached its failure limit: revert
    PAUSED = "paused"  # too many inconclusive readings in a row: a person decides


@dataclass(frozen=True)
class Assessment:
    """The outcome, and a sentence that says why."""

    outcome: Outcome
    message: str


@dataclass(frozen=True)
class GateCount:
    """One metric's counts."""

    metric: str
    failures: int = 0
    inconclusive_run: int = 0
    last: Reading | None = None

    def add(self, reading: Reading) -> GateCount:
        """The counts after one more reading."""
        return GateCount(
            self.metric,
            self.failures + (reading.verdict is Verdict.FAIL),
            self.inconclusive_run + 1 if reading.verdict is Verdict.INCONCLUSIVE else 0,
            reading,
        )


@dataclass(frozen=True)
class Tally:
    """Every metric's counts, by name in the order first read."""

    counts: tuple[GateCount, ...] = ()

    def count(self, metric: str) -> GateCount:
        """One metric's counts (zero when it has none yet)."""
        return next((each for each in self.counts if each.metric == metric), GateCount(metric))

    def add(self, readings: Iterable[Reading]) -> Tally:
        """The tally after these readings, in order."""
        counts = {each.metric: each for each in self.counts}
        for reading in readings:
            counts[reading.metric] = counts.get(reading.metric, GateCount(reading.metric)).add(
                reading
            )
        return Tally(tuple(counts.values()))

    def resumed(self) -> Tally:
        """The tally after a person resumed a paused rollout: inconclusive runs start again."""
        return Tally(tuple(replace(each, inconclusive_run=0) for each in self.counts))

    def to_json(self) -> list[dict[str, Any]]:
        """The counts as the rollout record stores them (the last reading of each too)."""
        return [
            {
                "metric": each.metric,
                "failures": each.failures,
                "inconclusive_run": each.inconclusive_run,
                "last": None if each.last is None else each.last.to_json(),
            }
            for each in self.counts
        ]

    @classmethod
    def from_json(cls, data: object) -> Tally:
        """A tally read back from a record (a driver that takes over counts on); ReadingError
        naming what is wrong."""
        if not isinstance(data, list):
            raise ReadingError("a tally must be a JSON list")
        counts = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("metric"), str):
                raise ReadingError("a tally entry must be an object with a metric name")
            failures, run = _count(item, "failures"), _count(item, "inconclusive_run")
            last = item.get("last")
            reading = None if last is None else Reading.from_json(last)
            counts.append(GateCount(item["metric"], failures, run, reading))
        return cls(tuple(counts))


def _count(item: dict[str, Any], key: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReadingError(f"tally {key} must be a whole number")
    return value


def _value(reading: Reading | None) -> str:
    if reading is None:
        return "no reading yet"
    if reading.verdict is Verdict.INCONCLUSIVE:
        return f"inconclusive: {reading.error}"
    return f"{reading.value:g}"


def assess(tally: Tally, gates: Sequence[MetricGate], limits: Limits) -> Assessment:
    """What the readings so far decide for these gates."""
    if not gates:
        return Assessment(Outcome.PASSING, "no metric gates")
    counts = [(gate, tally.count(gate.name)) for gate in gates]
    for gate, count in counts:
        if count.failures >= limits.failure_limit:
            return Assessment(
                Outcome.FAILED,
                f"metric {gate.name} failed {count.failures} time(s), the failure limit is "
                f"{limits.failure_limit}: last {_value(count.last)}, must be {gate.condition}",
            )
    for gate, count in counts:
        if count.inconclusive_run >= limits.inconclusive_limit:
            return Assessment(
                Outcome.PAUSED,
                f"metric {gate.name} was inconclusive {count.inconclusive_run} times in a row "
                f"({_value(count.last)}): paused for a person to resume or abort",
            )
    pending = [
        f"{gate.name} ({_value(count.last)})"
        for gate, count in counts
        if count.last is None or count.last.verdict is not Verdict.PASS
    ]
    if pending:
        return Assessment(Outcome.WAITING, "waiting for " + ", ".join(pending))
    return Assessment(
        Outcome.PASSING,
        "every metric passes: "
        + ", ".join(f"{gate.name} {_value(count.last)} {gate.condition}" for gate, count in counts),
    )
