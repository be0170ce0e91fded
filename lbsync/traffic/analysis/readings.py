"""One reading of a metric gate, judged: pass, fail, or inconclusive (pure).

A reading is inconclusive whenever there is no one number to hold against the threshold: no
data, NaN (a ratio over no requests is 0/0), a query Prometheus refused, Prometheus not
answering, several series where one is expected. Inconclusive is never a pass: the gate's
tally (`tally.py`) waits, and after enough of them in a row asks for a person.

A reading is a small value stored as JSON in the rollout record: `time` (Unix seconds), the
`metric`'s name, the `query` as sent, the `value` (a number; `"+Inf"` or `"-Inf"`, which JSON
cannot hold as numbers; null when there is none), the `error` (null, or why there is no value)
and the `verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lbsync.traffic.analysis.metrics import MetricGate

MAX_ERROR: int = 300  # characters of an error kept in a reading (Prometheus' can be long)


class ReadingError(ValueError):
    """A reading or tally in a record that cannot be read back; the message names the field."""


class Verdict(StrEnum):
    """What one reading says."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Sample:
    """What one query gave: a value, or why there is none."""

    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Reading:
    """One judged reading of one gate."""

    time: float
    metric: str
    query: str
    value: float | None
    error: str | None
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        """The reading as the rollout record stores it."""
        return {
            "time": self.time,
            "metric": self.metric,
            "query": self.query,
            "value": _number_out(self.value),
            "error": self.error,
            "verdict": self.verdict.value,
        }

    @classmethod
    def from_json(cls, data: object) -> Reading:
        """A reading read back from a record; ReadingError naming the field that
        is wrong."""
        if not isinstance(data, dict):
            raise ReadingError("a reading must be a JSON object")
        time, metric, query = data.get("time"), data.get("metric"), data.get("query")
        if isinstance(time, bool) or not isinstance(time, int | float):
            raise ReadingError("reading.time must be a number")
        if not isinstance(metric, str) or not isinstance(query, str):
            raise ReadingError("reading.metric and reading.query must be strings")
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            raise ReadingError("reading.error must be a string or null")
        verdict = data.get("verdict")
        if verdict not in set(Verdict):
            raise ReadingError("reading.verdict must be pass, fail or inconclusive")
        value = _number_in(data.get("value"))
        return cls(float(time), metric, query, value, error, Verdict(str(verdict)))


def _number_out(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "+Inf" if value > 0 else "-Inf"


def _number_in(value: object) -> float | None:
    if value is None:
        return None
    if value in ("+Inf", "-Inf"):
        return math.inf if value == "+Inf" else -math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ReadingError('reading.value must be a number, "+Inf", "-Inf" or null')
    return float(value)


def judge(gate: MetricGate, query: str, sample: Sample, *, now: float) -> Reading:
    """The reading `sample` makes for `gate` (its `query` as sent), at `now` (Unix seconds)."""
    if sample.error is not None or sample.value is None:
        error = (sample.error or "no value")[:MAX_ERROR]
        return Reading(now, gate.name, query, None, error, Verdict.INCONCLUSIVE)
    if math.isnan(sample.value):
        error = "the query gave NaN: no data to judge (a ratio over no requests is 0/0)"
        return Reading(now, gate.name, query, None, error, Verdict.INCONCLUSIVE)
    verdict = Verdict.PASS if gate.passes(sample.value) else Verdict.FAIL
    return Reading(now, gate.name, query, sample.value, None, verdict)
