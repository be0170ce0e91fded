"""Metric gates: a named PromQL query, a comparison and a threshold, parsed from `--metric`.

Two forms, told apart by the `=` before the comparison:
- a shipped template by name: `error-ratio<0.05`, `latency<=0.3`;
- a query of one's own: `p99 latency=histogram_quantile(0.99, ...)<0.3` (the name is what
  comes before the first `=`; the comparison and the threshold end the text).

A query may hold placeholders, filled in for each reading (`expand`): `{service}` (the HAProxy
backend, which lbsync names after the service), `{group}` (the rollout's target group),
`{servers}` (a regular expression matching exactly the group's server names as lbsync renders
them, `core.state.server_name`), `{window}` (the rate window, `[analysis] window`). Every value
put in has the KV contract's name charset (letters, digits, `.`, `_`, `-`; a `.` goes into
`{servers}` as `[.]`), so it can never end a string or a label matcher, in `"..."` or `` `...` ``.

The templates read HAProxy 2.6's built-in exporter (`http-request use-service
prometheus-exporter`), scraped from a real HAProxy: server series carry `proxy` (the backend)
and `server` labels. It has no latency histogram, so no percentile can be computed from it; the
nearest it offers is each server's average response time, which `latency` reads for the group's
slowest server, only while the group answers requests. That average is a sliding one over 512
samples that starts at 0, and 2.6's exporter does not correct it for a server with fewer
requests than that (`show stat` does): after k requests of v seconds it reports
v * (1 - (511/512)^k), measured: 0.006 for 10 requests of 0.3 s, 0.060 for 100, 0.033 for 72
of 0.25 s. A canary with little traffic would pass any latency gate; so the template divides by
that factor, with k the server's responses since its worker started.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from lbsync.model import checks
from lbsync.traffic.splits import SplitError

MAX_QUERY: Final = 4000  # a GET's query string; Prometheus' own limit is larger
PLACEHOLDERS: Final = frozenset({"service", "backends", "group", "servers", "window"})
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_]+)\}")
_NAME: Final = re.compile(r"[A-Za-z0-9_.:/()%-](?:[A-Za-z0-9 _.:/()%-]{0,62}[A-Za-z0-9_.:/()%-])?")
_TAIL: Final = re.compile(
    r"(?P<head>.*?)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<threshold>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*",
    re.DOTALL,
)
_PERCENTILE: Final = re.compile(r"p\d{1,2}(?:\.\d+)?-latency")
_SERVER: Final = re.compile(r"[A-Za-z0-9_.-]{1,300}")


class MetricSpecError(SplitError):
    """A `--metric` that cannot be read; the message names the option and the text."""


class Comparison(StrEnum):
    """How a reading is held against its threshold: the gate passes when this holds."""

    BELOW = "<"
    AT_MOST = "<="
    ABOVE = ">"
    AT_LEAST = ">="

    def holds(self, value: float, threshold: float) -> bool:
        """Whether `value` passes (NaN never does: it is no reading)."""
        if self is Comparison.BELOW:
            return value < threshold
        if self is Comparison.AT_MOST:
            return value <= threshold
        if self is Comparison.ABOVE:
            return value > threshold
        return value >= threshold


@dataclass(frozen=True)
class Template:
    """A shipped query, chosen by name."""

    name: str
    query: str
    about: str


# the service's backend and its group backends (`<svc>:sticky:<group>`, `<svc>:pin:<group>`),
# where sticky clients and pinned requests reach the same servers
_SELECT: Final = 'proxy=~"{backends}",server=~"{servers}"'
_RESPONSES: Final = "haproxy_server_http_responses_total"


def _rate(metric: str, more: str = "") -> str:
    return "sum(rate(" + metric + "{" + _SELECT + more + "}[{window}]))"


# as the runtime API's error gate counts (haproxy/stats.py): 5xx answers, failed connections
# and broken responses, over all of them
_FAILURES: Final = (
    _rate("haproxy_server_connection_errors_total")
    + " + "
    + _rate("haproxy_server_response_errors_total")
)
TEMPLATES: Final = MappingProxyType(
    {
        template.name: template
        for template in (
            Template(
                "error-ratio",
                "(" + _rate(_RESPONSES, ',code="5xx"') + " + " + _FAILURES + ") / ("
                "" + _rate(_RESPONSES) + " + " + _FAILURES + ")",
                "the group's 5xx answers, failed connections and broken responses over all of "
                "them, per second over the window (0 to 1); no answers in the window: no data",
            ),
            Template(
                "latency",
                "max(haproxy_server_response_time_average_seconds{" + _SELECT + "} / (1 - "
                "(511 / 512) ^ sum without (code) (" + _RESPONSES + "{" + _SELECT + "}))) and ("
                "" + _rate(_RESPONSES) + " > 0)",
                "seconds: the slowest server of the group, by HAProxy's average response time "
                "over its last 512 requests; no answers in the window: no data",
            ),
        )
    }
)


@dataclass(frozen=True)
class MetricGate:
    """One metric a rollout is gated on."""

    name: str
    query: str  # placeholders not yet filled in
    comparison: Comparison
    threshold: float

    @property
    def condition(self) -> str:
        """What a passing reading must be, as text: `< 0.05`."""
        return f"{self.comparison.value} {self.threshold:g}"

    @property
    def needs_servers(self) -> bool:
        """Whether the query reads the group's servers (`{servers}`)."""
        return "{servers}" in self.query

    def passes(self, value: float) -> bool:
        """Whether a value passes this gate."""
        return self.comparison.holds(value, self.threshold)


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 120 else repr(text[:117] + "...")


def _template(name: str, what: str, text: str) -> str:
    template = TEMPLATES.get(name)
    if template is not None:
        return template.query
    known = ", ".join(TEMPLATES)
    if _PERCENTILE.fullmatch(name):
        raise MetricSpecError(
            f"{what} {_shown(text)}: HAProxy 2.6's Prometheus exporter has no latency "
            "histogram, so no percentile can be read from it; use latency (the slowest "
            "server's average response time over its last 1024 requests), or a histogram of "
            "your own: --metric 'p99 latency=histogram_quantile(0.99, ...)<0.3'"
        )
    raise MetricSpecError(
        f"{what} {_shown(text)}: no template named {name!r} (templates: {known}); a query of "
        "your own is written NAME=QUERY<THRESHOLD"
    )


def parse_metric(text: str, what: str = "--metric") -> MetricGate:
    """A gate from `TEMPLATE<op><threshold>` or `NAME=QUERY<op><threshold>`, op one of `<`,
    `<=`, `>`, `>=`; MetricSpecError naming `what` otherwise."""
    match = _TAIL.fullmatch(text.strip())
    if match is None:
        raise MetricSpecError(
            f"{what} {_shown(text)}: expected TEMPLATE<THRESHOLD or NAME=QUERY<THRESHOLD "
            "(comparison <, <=, > or >=, then a number)"
        )
    head, threshold = match.group("head"), float(match.group("threshold"))
    if not math.isfinite(threshold):
        raise MetricSpecError(f"{what} {_shown(text)}: the threshold must be a finite number")
    name, equals, query = head.partition("=")
    name, query = name.strip(), query.strip()
    if not equals:
        query = _template(name, what, text)
    if not _NAME.fullmatch(name):
        raise MetricSpecError(
            f"{what} {_shown(text)}: the name (before the first '=') must be 1 to 64 "
            "letters, digits, spaces or '_ . : / ( ) % -', not starting or ending with a "
            "space; a query of your own is written NAME=QUERY<THRESHOLD"
        )
    if not query:
        raise MetricSpecError(f"{what} {_shown(text)}: the query after {name}= is empty")
    if len(query) > MAX_QUERY or any(ord(c) < 0x20 and c not in "\t\n" for c in query):
        raise MetricSpecError(
            f"{what} {_shown(text)}: the query must be at most {MAX_QUERY} characters of text"
        )
    unknown = sorted(set(_PLACEHOLDER.findall(query)) - PLACEHOLDERS)
    if unknown:
        raise MetricSpecError(
            f"{what} {_shown(text)}: unknown placeholder {{{unknown[0]}}} (placeholders: "
            + ", ".join(f"{{{each}}}" for each in sorted(PLACEHOLDERS))
            + ")"
        )
    return MetricGate(name, query, Comparison(match.group("op")), threshold)


def parse_metrics(texts: Iterable[str], what: str = "--metric") -> tuple[MetricGate, ...]:
    """Every `--metric` given, in order; two gates of one name are refused (readings and the
    failure count are kept by name)."""
    gates = tuple(parse_metric(text, what) for text in texts)
    names = [gate.name for gate in gates]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise MetricSpecError(f"{what}: two metrics are named {twice!r}")
    return gates


@dataclass(frozen=True)
class Target:
    """What the placeholders stand for in one reading."""

    service: str
    group: str
    servers: tuple[str, ...]  # the group's server names, as rendered
    window: float  # seconds


def servers_pattern(servers: Iterable[str]) -> str:
    """A regular expression (RE2, anchored by Prometheus) matching exactly these names."""
    names = sorted(set(servers))
    for name in names:
        if not _SERVER.fullmatch(name):
            raise ValueError(f"server name {_shown(name)} is not one lbsync renders")
    return "|".join(name.replace(".", "[.]") for name in names)


def backends_pattern(service: str) -> str:
    """A regular expression (RE2, anchored) matching a service's HAProxy backends: its own and
    its group backends for sticky clients and pinned requests."""
    escaped = checks.name(service, "service").replace(".", "[.]")
    return f"{escaped}|{escaped}:(sticky|pin):.+"


def promql_duration(seconds: float) -> str:
    """A PromQL duration: whole seconds as `30s`, else milliseconds (`1500ms`)."""
    milliseconds = max(1, round(seconds * 1000))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def expand(query: str, target: Target) -> str:
    """The query with its placeholders filled in; ValueError for a name outside the KV
    contract's charset (none can come from a valid desired state)."""
    values = {
        "service": checks.name(target.service, "service"),
        "backends": backends_pattern(target.service),
        "group": checks.group(target.group, "group"),
        "servers": servers_pattern(target.servers),
        "window": promql_duration(target.window),
    }
    return _PLACEHOLDER.sub(lambda found: values.get(found.group(1), found.group(0)), query)
