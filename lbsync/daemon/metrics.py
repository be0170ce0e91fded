"""Prometheus metrics: counters and histograms fed by every apply, gauges read from the status.

The registry belongs to a `Metrics` object (one per daemon), never to the module, so two
daemons in one process (as in the tests) never mix their figures.

Two kinds of figures, kept apart on purpose:
- what happened (applies by outcome, step durations, propagation) can only be counted as it
  happens: `observe_cycle` is called once per cycle with the status it produced;
- what is true now is read from the current immutable status, so a service or source that
  disappears leaves no stale series behind: the few figures of sources and targets by a
  collector at scrape time, the services' (nearly all of them with a large catalog) as text
  the status API keeps per service and rewrites only for services that changed (`gauges.py`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lbsync.daemon.status import Status
from lbsync.kv.requests import RequestCounts
from lbsync.pipeline.decision import Plan
from lbsync.pipeline.report import FAILURES, Outcome

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROPAGATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LIVE = frozenset({Outcome.APPLIED, Outcome.WRITTEN})


class Metrics:
    """One daemon's metrics and the registry that holds them."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self.registry = CollectorRegistry()
        self._applies = Counter(
            "lbsync_applies",
            "Cycles per target by outcome (unchanged: nothing to do; applied: reloaded and "
            "confirmed; written: file written, no reload configured; the rest are failures).",
            ["target", "outcome"],
            registry=self.registry,
        )
        self._plans = Counter(
            "lbsync_apply_plans",
            "Cycles per target by plan (nothing, reload, full, and runtime where HAProxy's "
            "runtime API applies weights without a reload).",
            ["target", "plan"],
            registry=self.registry,
        )
        self._steps = Histogram(
            "lbsync_apply_step_seconds",
            "Duration of each step of a target's cycle (render, validate, write, reload, total).",
            ["target", "step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self._propagation = Histogram(
            "lbsync_propagation_seconds",
            "From the newest source change received before a cycle began to the end of the "
            "apply that made it live.",
            ["target"],
            buckets=PROPAGATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StatusCollector(status))
        self._targets: set[str] = set()
        self._live_since: dict[str, float] = {}

    def count_requests(self, counts: Callable[[], Iterable[tuple[str, RequestCounts]]]) -> None:
        """Expose the requests each source sent to its store, by kind (read at each scrape)."""
        self.registry.register(_RequestCollector(counts))

    def observe_cycle(self, status: Status) -> None:
        """Count the reports of the cycle that produced `status` (call once per cycle)."""
        for report in status.targets:
            if report.target not in self._targets:
                self._targets.add(report.target)
                for outcome in Outcome:  # every series exists from the start, for rate()
                    self._applies.labels(report.target, outcome.value)
                for plan in Plan:
                    self._plans.labels(report.target, plan.value)
            self._applies.labels(report.target, report.outcome.value).inc()
            if report.plan is not None:
                self._plans.labels(report.target, report.plan.value).inc()
            for step, seconds in report.seconds.items():
                self._steps.labels(report.target, step).observe(seconds)
            if report.outcome in LIVE:
                changed = [
                    source.changed_at
                    for source in status.sources
                    if source.changed_at is not None and source.changed_at <= report.at
                ]
                newest = max(changed, default=None)
                if newest is not None and newest > self._live_since.get(report.target, -math.inf):
                    done = report.at + report.seconds.get("total", 0.0)
                    self._propagation.labels(report.target).observe(max(0.0, done - newest))
            if report.outcome not in FAILURES:
                self._live_since[report.target] = report.at

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (without the services' gauges)."""
        return generate_latest(self.registry)


class _StatusCollector(Collector):
    """Gauges computed from the current status at each scrape."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        now = time.time()
        ready = GaugeMetricFamily(
            "lbsync_ready", "1 once every source synced and the first apply is done."
        )
        ready.add_metric([], 1.0 if status.ready else 0.0)
        yield ready
        cycles = CounterMetricFamily("lbsync_cycles", "Apply cycles run since start.")
        cycles.add_metric([], status.cycles)
        yield cycles
        started = GaugeMetricFamily("lbsync_start_time_seconds", "When the daemon started.")
        started.add_metric([], status.started_at)
        yield started
        yield from _sources(status, now)
        yield from _targets(status)


class _RequestCollector(Collector):
    """`lbsync_source_requests_total{source, kind}` from the sources' own counters."""

    def __init__(self, counts: Callable[[], Iterable[tuple[str, RequestCounts]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        sent = CounterMetricFamily(
            "lbsync_source_requests",
            "Requests a source sent to its store, by kind (Consul: kv, catalog, health-state, "
            "health-service, token, config; etcd: range, watch, txn, put, ...).",
            labels=["source", "kind"],
        )
        for source, counts in self._counts():
            for kind, requests in counts.items():
                sent.add_metric([source, kind], requests)
        yield sent


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _sources(status: Status, now: float) -> Iterable[Metric]:
    synced = _gauge("lbsync_source_synced", "1 once the source delivered a snapshot.", ["source"])
    connected = _gauge(
        "lbsync_source_connected",
        "1 when the source's last snapshot was usable (store reached, file readable).",
        ["source"],
    )
    age = _gauge(
        "lbsync_source_last_change_age_seconds",
        "Seconds since the source last delivered a changed snapshot.",
        ["source"],
    )
    rejected = _gauge(
        "lbsync_source_rejected_entries", "Entries the source's last snapshot refused.", ["source"]
    )
    for source in status.sources:
        synced.add_metric([source.name], 1.0 if source.synced else 0.0)
        connected.add_metric([source.name], 1.0 if source.usable else 0.0)
        rejected.add_metric([source.name], len(source.rejected))
        if source.changed_at is not None:
            age.add_metric([source.name], max(0.0, now - source.changed_at))
    return (synced, connected, age, rejected)


def _targets(status: Status) -> Iterable[Metric]:
    failing = _gauge(
        "lbsync_target_failing",
        "1 when the target's last cycle failed (its proxy may not run the desired state).",
        ["target"],
    )
    last = _gauge(
        "lbsync_target_last_cycle_timestamp_seconds",
        "When the target's last cycle started.",
        ["target"],
    )
    for report in status.targets:
        failing.add_metric([report.target], 1.0 if report.failed else 0.0)
        last.add_metric([report.target], report.at)
    return (failing, last)
