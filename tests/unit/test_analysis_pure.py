"""The pure parts of rollout analysis: `--metric` specs, templates and their placeholders,
judging a sample, Prometheus' answers, readings as JSON, and what a run of readings decides."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from lbsync.core.state import server_name
from lbsync.traffic.analysis.metrics import (
    TEMPLATES,
    Comparison,
    MetricGate,
    MetricSpecError,
    Target,
    expand,
    parse_metric,
    parse_metrics,
    promql_duration,
    servers_pattern,
)
from lbsync.traffic.analysis.prometheus import parse_answer
from lbsync.traffic.analysis.readings import Reading, ReadingError, Sample, Verdict, judge
from lbsync.traffic.analysis.tally import Limits, Outcome, Tally, assess
from lbsync.traffic.splits import SplitError

P99 = (
    "histogram_quantile(0.99, sum by (le) "
    '(rate(http_request_duration_seconds_bucket{service="{service}",version="{group}"}[1m])))'
)


@pytest.mark.parametrize(
    ("text", "name", "query", "comparison", "threshold"),
    [
        ("error-ratio<0.05", "error-ratio", TEMPLATES["error-ratio"].query, "<", 0.05),
        ("latency <= 0.3", "latency", TEMPLATES["latency"].query, "<=", 0.3),
        (f"p99 latency={P99}<0.3", "p99 latency", P99, "<", 0.3),
        ("ok=sum(up) >= 1", "ok", "sum(up)", ">=", 1.0),
        ("rps=sum(rate(x[1m])) > 0 > 1e-3", "rps", "sum(rate(x[1m])) > 0", ">", 0.001),
        ('m=x{a=~"b=c"}<=-2', "m", 'x{a=~"b=c"}', "<=", -2.0),
        ("  error-ratio >.5 ", "error-ratio", TEMPLATES["error-ratio"].query, ">", 0.5),
    ],
    ids=["template", "template with spaces", "own query", ">=", "a filter inside", "=", ".5"],
)
def test_a_metric_is_read_from_its_name_query_comparison_and_threshold(
    text: str, name: str, query: str, comparison: str, threshold: float
) -> None:
    gate = parse_metric(text)
    assert gate == MetricGate(name, query, Comparison(comparison), threshold)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("error-ratio", "expected TEMPLATE<THRESHOLD"),
        ("error-ratio<", "expected TEMPLATE<THRESHOLD"),
        ("error-ratio<abc", "expected TEMPLATE<THRESHOLD"),
        ("error-ratio=0.05", "expected TEMPLATE<THRESHOLD"),
        ("errors<0.05", "no template named 'errors' (templates: error-ratio, latency)"),
        ("p99-latency<0.3", "has no latency histogram"),
        ("x=<0.3", "the query after x= is empty"),
        ("=up<1", "the name (before the first '=')"),
        ('sum(x{a="b"})<1', "the name (before the first '=')"),
        ("a\x00b=up<1", "the name (before the first '=')"),
        ("x=up{servcie}<1", "unknown placeholder {servcie}"),
        ("x=up\x07<1", "at most 4000 characters of text"),
        ("x=" + "u" * 4001 + "<1", "at most 4000 characters"),
        ("x=up<1e999", "finite number"),
    ],
)
def test_a_bad_metric_is_refused_naming_the_option(text: str, says: str) -> None:
    with pytest.raises(MetricSpecError, match=r"^--metric ") as caught:
        parse_metric(text)
    assert says in str(caught.value)
    assert isinstance(caught.value, SplitError)  # the rollout command's "wrong input", exit 2


def test_two_metrics_of_one_name_are_refused() -> None:
    assert [g.name for g in parse_metrics(["error-ratio<0.05", "latency<0.3"])] == [
        "error-ratio",
        "latency",
    ]
    with pytest.raises(MetricSpecError, match="two metrics are named 'x'"):
        parse_metrics(["x=up<1", "x=down<1"])


@pytest.mark.parametrize(
    ("comparison", "value", "threshold", "holds"),
    [
        ("<", 0.04, 0.05, True),
        ("<", 0.05, 0.05, False),
        ("<=", 0.05, 0.05, True),
        (">", 0.05, 0.05, False),
        (">=", 0.05, 0.05, True),
        (">", 1.0, 0.05, True),
        ("<", math.inf, 0.05, False),
        ("<", math.nan, 0.05, False),
        (">=", math.nan, 0.05, False),
    ],
)
def test_comparisons_hold_as_written_and_nan_never_does(
    comparison: str, value: float, threshold: float, holds: bool
) -> None:
    assert Comparison(comparison).holds(value, threshold) is holds


def test_placeholders_are_filled_with_the_names_lbsync_renders() -> None:
    servers = (server_name("green-1.5"), server_name("green/2"), server_name("green_3"))
    target = Target("shop", "green", servers, window=30)
    query = expand(TEMPLATES["error-ratio"].query, target)
    assert "{service}" not in query and "{servers}" not in query and "{window}" not in query
    assert 'proxy=~"shop|shop:(sticky|pin):.+"' in query
    pattern = servers_pattern(servers)
    assert f'server=~"{pattern}"' in query
    assert "[30s]" in query
    # a `.` matches itself only; the sanitised id (with its hash) is matched as rendered
    assert pattern == "|".join(sorted(n.replace(".", "[.]") for n in servers))
    assert "green-1[.]5" in pattern and server_name("green/2").startswith("green_2-")
    assert expand('x{version="{group}"}', target) == 'x{version="green"}'


@pytest.mark.parametrize(
    "target",
    [
        Target('shop"}', "green", ("a",), 60),
        Target("shop", 'g"', ("a",), 60),
        Target("shop", "green", ('a"|.*',), 60),
    ],
    ids=["service", "group", "server"],
)
def test_a_name_outside_the_contract_is_never_put_into_a_query(target: Target) -> None:
    with pytest.raises(ValueError, match=r"must be|not one lbsync renders"):
        expand('x{a="{service}",b="{group}",c=~"{servers}"}', target)


@pytest.mark.parametrize(
    ("seconds", "text"), [(60, "60s"), (1.5, "1500ms"), (0.0001, "1ms"), (300, "300s")]
)
def test_windows_are_promql_durations(seconds: float, text: str) -> None:
    assert promql_duration(seconds) == text


GATE = MetricGate("error-ratio", "q", Comparison.BELOW, 0.05)


@pytest.mark.parametrize(
    ("sample", "verdict", "value", "error"),
    [
        (Sample(value=0.01), Verdict.PASS, 0.01, None),
        (Sample(value=0.2), Verdict.FAIL, 0.2, None),
        (Sample(value=math.inf), Verdict.FAIL, math.inf, None),
        (Sample(value=math.nan), Verdict.INCONCLUSIVE, None, "NaN"),
        (Sample(error="no data: the query gave no series"), Verdict.INCONCLUSIVE, None, "no data"),
        (Sample(), Verdict.INCONCLUSIVE, None, "no value"),
    ],
)
def test_a_sample_is_judged_and_only_a_number_can_pass(
    sample: Sample, verdict: Verdict, value: float | None, error: str | None
) -> None:
    reading = judge(GATE, "the query", sample, now=1000.0)
    assert (reading.verdict, reading.value, reading.metric, reading.time) == (
        verdict,
        value,
        "error-ratio",
        1000.0,
    )
    assert (reading.error is None) == (error is None)
    assert error is None or error in str(reading.error)


@pytest.mark.parametrize("value", [0.25, math.inf, -math.inf, None])
def test_a_reading_goes_through_json_and_back(value: float | None) -> None:
    verdict = Verdict.INCONCLUSIVE if value is None else Verdict.FAIL
    reading = Reading(1.5, "latency", "max(x)", value, None if value else "no data", verdict)
    text = json.dumps(reading.to_json(), allow_nan=False)  # valid JSON: no NaN, no Infinity
    assert Reading.from_json(json.loads(text)) == reading
    assert set(json.loads(text)) == {"time", "metric", "query", "value", "error", "verdict"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "a reading must be a JSON object"),
        ({"time": "x", "metric": "m", "query": "q", "verdict": "pass"}, "reading.time"),
        ({"time": 1, "metric": 1, "query": "q", "verdict": "pass"}, "reading.metric"),
        ({"time": 1, "metric": "m", "query": "q", "verdict": "ok"}, "reading.verdict"),
        ({"time": 1, "metric": "m", "query": "q", "verdict": "pass", "value": "1"}, "value"),
        ({"time": 1, "metric": "m", "query": "q", "verdict": "pass", "error": 3}, "error"),
    ],
)
def test_a_bad_reading_in_a_record_is_refused_naming_the_field(data: object, says: str) -> None:
    with pytest.raises(ReadingError, match=says):
        Reading.from_json(data)


def vector(*values: str) -> str:
    result = [{"metric": {"server": f"s{i}"}, "value": [1.0, v]} for i, v in enumerate(values)]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def answer(kind: str, result: Any) -> bytes:
    data = {"resultType": kind, "result": result}
    return json.dumps({"status": "success", "data": data}).encode()


@pytest.mark.parametrize(
    ("status", "body", "value", "error"),
    [
        (200, vector("0.25").encode(), 0.25, None),
        (200, answer("scalar", [1.0, "1"]), 1.0, None),
        (200, answer("scalar", [1.0, "+Inf"]), math.inf, None),
        (200, vector().encode(), None, "no data: the query gave no series"),
        (200, vector("1", "2", "3").encode(), None, "3 series where one is expected"),
        (200, answer("matrix", []), None, "a range vector"),
        (200, answer("string", [1.0, "a"]), None, "a string"),
        (200, answer("vector", [{"value": [1.0, "x"]}]), None, "is not a number"),
        (200, answer("vector", [{"value": 3}]), None, "no [time, value] pair"),
        (
            400,
            b'{"status":"error","errorType":"bad_data","error":"parse error: unclosed ("}',
            None,
            "Prometheus refused the query (bad_data): parse error: unclosed (",
        ),
        (404, b"404 page not found", None, "Prometheus answered HTTP 404 without its JSON"),
        (503, b'{"status":"success"}', None, "HTTP 503 without a result"),
        (200, b"[[[[", None, "without its JSON"),
    ],
    ids=[
        "one series",
        "scalar",
        "infinity",
        "no series",
        "several",
        "matrix",
        "string",
        "not a number",
        "no pair",
        "refused",
        "not prometheus",
        "no data",
        "broken json",
    ],
)
def test_an_answer_holds_one_number_or_says_why_not(
    status: int, body: bytes, value: float | None, error: str | None
) -> None:
    sample = parse_answer(status, body)
    assert sample.value == value
    assert (sample.error is None) == (error is None)
    assert error is None or error in str(sample.error)


def test_nan_from_prometheus_is_a_value_that_judging_makes_inconclusive() -> None:
    sample = parse_answer(200, vector("NaN").encode())
    assert sample.value is not None and math.isnan(sample.value)
    assert judge(GATE, "q", sample, now=0).verdict is Verdict.INCONCLUSIVE


ERRORS = MetricGate("error-ratio", "q1", Comparison.BELOW, 0.05)
LATENCY = MetricGate("latency", "q2", Comparison.BELOW, 0.3)
GATES = (ERRORS, LATENCY)


def reading(metric: str, verdict: str, value: float | None = None) -> Reading:
    error = "no data" if verdict == "inconclusive" else None
    return Reading(0.0, metric, "q", value, error, Verdict(verdict))


DEFAULT_LIMITS = Limits()


def run(*rounds: tuple[str, str], limits: Limits = DEFAULT_LIMITS) -> tuple[Tally, Outcome, str]:
    """`(error-ratio verdict, latency verdict)` per round; the tally and its assessment."""
    tally = Tally()
    for errors, latency in rounds:
        tally = tally.add([reading("error-ratio", errors, 0.1), reading("latency", latency, 0.1)])
    found = assess(tally, GATES, limits)
    return tally, found.outcome, found.message


@pytest.mark.parametrize(
    ("rounds", "limits", "outcome"),
    [
        ((), Limits(), Outcome.WAITING),
        ((("pass", "pass"),), Limits(), Outcome.PASSING),
        ((("pass", "fail"),), Limits(), Outcome.FAILED),
        ((("pass", "fail"),), Limits(failure_limit=2), Outcome.WAITING),
        ((("pass", "fail"), ("pass", "pass")), Limits(failure_limit=2), Outcome.PASSING),
        ((("fail", "pass"), ("pass", "pass"), ("fail", "pass")), Limits(2), Outcome.FAILED),
        ((("inconclusive", "pass"),), Limits(), Outcome.WAITING),
        ((("inconclusive", "pass"),) * 2, Limits(), Outcome.WAITING),
        ((("inconclusive", "pass"),) * 3, Limits(), Outcome.PAUSED),
        ((("inconclusive", "pass"),) * 2 + (("pass", "pass"),), Limits(), Outcome.PASSING),
        (
            (("inconclusive", "pass"),) * 2 + (("pass", "pass"),) + (("inconclusive", "pass"),) * 2,
            Limits(),
            Outcome.WAITING,
        ),
        ((("inconclusive", "pass"),), Limits(inconclusive_limit=1), Outcome.PAUSED),
        ((("inconclusive", "fail"),) * 3, Limits(), Outcome.FAILED),
        ((("inconclusive", "fail"),) * 3, Limits(failure_limit=5), Outcome.PAUSED),
    ],
    ids=[
        "no reading",
        "all pass",
        "first failure fails",
        "under the failure limit",
        "a pass after a tolerated failure",
        "failures count over the whole analysis",
        "one inconclusive waits",
        "two inconclusive wait",
        "three in a row pause",
        "a pass ends the run",
        "the run starts again",
        "limit one",
        "a failure outranks a pause",
        "a pause outranks waiting",
    ],
)
def test_a_run_of_readings_decides(
    rounds: tuple[tuple[str, str], ...], limits: Limits, outcome: Outcome
) -> None:
    assert run(*rounds, limits=limits)[1] is outcome


def test_a_pause_names_the_metric_and_a_resume_starts_the_count_again() -> None:
    tally, outcome, message = run(*(("inconclusive", "pass"),) * 3)
    assert outcome is Outcome.PAUSED
    assert message.startswith("metric error-ratio was inconclusive 3 times in a row (")
    assert "no data" in message and "paused for a person" in message
    resumed = tally.resumed()
    assert assess(resumed, GATES, Limits()).outcome is Outcome.WAITING  # last is not a pass
    again = resumed.add([reading("error-ratio", "inconclusive")] * 2)
    assert assess(again, GATES, Limits()).outcome is Outcome.WAITING
    assert assess(again.add([reading("error-ratio", "inconclusive")]), GATES, Limits()).outcome is (
        Outcome.PAUSED
    )


def test_a_failure_names_the_metric_its_value_and_condition() -> None:
    _, outcome, message = run(("fail", "pass"))
    assert outcome is Outcome.FAILED
    assert message == (
        "metric error-ratio failed 1 time(s), the failure limit is 1: last 0.1, must be < 0.05"
    )


def test_no_gate_passes_and_a_metric_never_read_waits() -> None:
    assert assess(Tally(), (), Limits()).outcome is Outcome.PASSING
    only_errors = Tally().add([reading("error-ratio", "pass", 0.0)])
    found = assess(only_errors, GATES, Limits())
    assert (found.outcome, found.message) == (
        Outcome.WAITING,
        "waiting for latency (no reading yet)",
    )


def test_a_tally_goes_through_json_and_back() -> None:
    tally, _, _ = run(("fail", "inconclusive"), ("pass", "inconclusive"))
    text = json.dumps(tally.to_json(), allow_nan=False)
    assert Tally.from_json(json.loads(text)) == tally
    with pytest.raises(ReadingError, match="failures"):
        Tally.from_json([{"metric": "m", "failures": -1, "inconclusive_run": 0}])
    with pytest.raises(ReadingError, match="a tally must be a JSON list"):
        Tally.from_json({})


@pytest.mark.parametrize(
    ("limits", "option"),
    [({"failure_limit": 0}, "--failure-limit"), ({"inconclusive_limit": -1}, "--inconclusive")],
)
def test_limits_below_one_are_refused_naming_the_option(
    limits: dict[str, int], option: str
) -> None:
    with pytest.raises(MetricSpecError, match=rf"^{option}"):
        Limits(**limits)
