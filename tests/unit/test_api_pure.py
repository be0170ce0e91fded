"""The status API's pure parts: listen addresses, readiness, JSON, terminal tables, metrics,
and JSON log lines."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbsync.cli.apiurl import StatusUnavailable, url_from_listen
from lbsync.cli.logformat import JsonFormatter
from lbsync.cli.status import format_status, in_step
from lbsync.config import ConfigError, parse_listen
from lbsync.core.state import DesiredState, build
from lbsync.daemon.api.encode import not_ready_reason, status_json
from lbsync.daemon.gauges import state_exposition
from lbsync.daemon.metrics import Metrics
from lbsync.daemon.status import SourceStatus, Status
from lbsync.model.catalog import merge
from lbsync.model.contract import parse_values
from lbsync.model.values import RawKeys, Snapshot
from lbsync.pipeline.decision import Plan
from lbsync.pipeline.report import ApplyReport, Outcome

T0 = 1_700_000_000.0


def shop_state(green_health: str = "passing", **changed: object) -> DesiredState:
    """The shop; `changed` replaces keys (`route`, `split`) of its values."""
    values: dict[str, object] = {
        "services/shop/route": {"hosts": ["shop.example.com"]},
        "services/shop/split": {"groups": {"blue": 90, "green": 10}},
        "services/shop/instances/blue-1": {"address": "10.0.0.5", "port": 80, "tags": ["blue"]},
        "services/shop/instances/green-1": {
            "address": "10.0.0.6",
            "port": 80,
            "tags": ["green"],
            "health": green_health,
        },
        "settings/secret": "do not show",
    }
    values.update({f"services/shop/{key}": value for key, value in changed.items()})
    entries, rejected = parse_values(values, describe=str)
    return build(merge([Snapshot(source="file", entries=entries, rejected=rejected)]))


def report(outcome: Outcome, at: float, total: float = 0.2) -> ApplyReport:
    seconds = {"render": 0.01, "validate": 0.05, "reload": 0.1, "total": total}
    return ApplyReport("haproxy", outcome, Plan.FULL, at, seconds, digest="abc")


def started(changed_at: float = T0) -> Status:
    source = SourceStatus(name="file", synced=True, usable=True, changed_at=changed_at)
    return Status(started_at=T0, sources=(source,))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9180", ("127.0.0.1", 9180)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:9180", ("localhost", 9180)),
        ("", None),
    ],
)
def test_listen_addresses_parse_to_host_and_port(
    text: str, expected: tuple[str, int] | None
) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", [":9180", "9180", "127.0.0.1", "127.0.0.1:http", "h:70000"])
def test_a_listen_address_without_host_or_port_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"api\.listen"):
        parse_listen(text)


def test_a_client_reaches_a_wildcard_listen_address_on_loopback() -> None:
    assert url_from_listen("0.0.0.0:9180") == "http://127.0.0.1:9180"
    assert url_from_listen("[::]:9180") == "http://[::1]:9180"
    for unusable in ("", "127.0.0.1:0"):
        with pytest.raises(StatusUnavailable, match="--api"):
            url_from_listen(unusable)


def test_readiness_names_the_source_that_has_not_synced_then_the_missing_apply() -> None:
    waiting = Status(started_at=T0, sources=(SourceStatus("file:a"), SourceStatus("etcd")))
    assert not_ready_reason(waiting) == "not synced yet: file:a, etcd"
    synced = waiting.with_source(SourceStatus("file:a", synced=True)).with_source(
        SourceStatus("etcd", synced=True)
    )
    assert not_ready_reason(synced) == "no apply yet"
    applied = synced.with_cycle(shop_state(), (report(Outcome.APPLIED, T0),))
    assert not_ready_reason(applied) is None and applied.ready


def test_the_status_document_holds_shares_servers_and_reports_but_no_setting_values() -> None:
    status = started().with_cycle(shop_state("critical"), (report(Outcome.APPLIED, T0 + 1),))
    document = status_json(status, now=T0 + 5)
    assert json.loads(json.dumps(document)) == document  # plain JSON all the way down
    assert document["settings"] == ["secret"] and "do not show" not in json.dumps(document)
    (shop,) = document["services"]
    groups = {group["label"]: group for group in shop["groups"]}
    assert (groups["green"]["target"], groups["green"]["achieved"]) == (10, 0)
    assert groups["green"]["status"] == "redistributed" and groups["blue"]["achieved"] == 100
    servers = {server["instance_id"]: server for server in shop["servers"]}
    assert (servers["green-1"]["health"], servers["green-1"]["eligible"]) == ("critical", False)
    assert document["sources"][0]["age_seconds"] == 5
    assert document["events"][0]["seconds"]["reload"] == 0.1
    assert (document["ready"], document["not_ready"]) == (True, None)


def test_the_terminal_table_names_a_sticky_cookie_and_a_pin() -> None:
    state = shop_state(
        route={"hosts": ["shop.example.com"], "sticky": {"cookie": "lbsync.shop"}},
        split={"groups": {"blue": 90}, "pin": {"header": "X-Canary", "cookie": "canary"}},
    )
    document = status_json(started().with_cycle(state, ()), now=T0 + 3)
    assert document["services"][0]["split"]["pin"] == {"header": "X-Canary", "cookie": "canary"}
    text = format_status(document, "http://127.0.0.1:9180")
    assert (
        "SERVICE shop  (shop.example.com /; split by tag; sticky cookie lbsync.shop; "
        "pinned by header X-Canary, cookie canary)"
    ) in text


def test_the_terminal_table_shows_groups_instances_sources_and_the_last_apply() -> None:
    status = started().with_cycle(shop_state(), (report(Outcome.APPLIED, T0 + 1),))
    document = status_json(status, now=T0 + 3)
    text = format_status(document, "http://127.0.0.1:9180")
    assert "lbsync at http://127.0.0.1:9180: ready, 1 cycle" in text
    assert "SERVICE shop  (shop.example.com /; split by tag)" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["blue", "90.0%", "90.0%", "90.1%", "1/1"] in rows  # 256 : 28 gives 90.1 : 9.9
    assert ["green-1", "10.0.0.6:80", "green", "passing", "28", "9.9%"] in rows
    assert "haproxy  applied  full" in text
    assert in_step(document)
    failed = started().with_cycle(shop_state(), (report(Outcome.RELOAD_FAILED, T0),))
    assert not in_step(status_json(failed, now=T0))


def test_the_status_says_which_datacenter_serves_and_marks_backups() -> None:
    values: dict[str, object] = {
        "services/shop/route": {"hosts": ["shop.example.com"]},
        "services/shop/instances/web-1": {
            "address": "10.0.0.5",
            "port": 80,
            "datacenter": "dc1",
            "health": "critical",
        },
        "services/shop/instances/dc2:web-1": {
            "address": "10.1.0.5",
            "port": 80,
            "datacenter": "dc2",
            "failover": 1,
        },
    }
    entries, rejected = parse_values(values, describe=str)
    state = build(merge([Snapshot(source="test", entries=entries, rejected=rejected)]))
    document = status_json(started().with_cycle(state, ()), now=T0 + 3)
    service = document["services"][0]
    assert service["serving_datacenter"] == "dc2"
    assert [(s["datacenter"], s["backup"]) for s in service["servers"]] == [
        ("dc2", True),
        ("dc1", False),
    ]
    text = format_status(document, "http://127.0.0.1:9180")
    assert "SERVICE shop  (shop.example.com /; no split; served from datacenter dc2)" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["dc2:web-1", "10.1.0.5:80", "(default)", "passing", "256", "backup", "100.0%"] in rows


def test_a_rollout_record_shows_only_its_known_fields_each_checked_for_type() -> None:
    record = {
        "phase": "running",
        "to": "green",
        "share": 25,
        "step": 2,
        "steps": [5, 25, "x", 50],
        "who": True,
        "updated": T0,
        "start_split": {"groups": {"blue": 100}},
        "mode": "daemon",
        "driver": ["not", "text"],
        "events": [{"at": T0, "what": "step 2: green at 25%\x1b[31m", "by": 7}, "x", {"at": "no"}],
        "readings": [
            {"metric": "error-ratio", "value": 0.5, "verdict": "fail", "time": T0},
            {"metric": "latency", "value": "+Inf", "verdict": "fail", "error": None, "time": T0},
            {"metric": "error-ratio", "value": 0.01, "verdict": "pass", "time": T0 + 1},
            {"metric": ["x"]},
        ],
    }
    state = replace(shop_state(), raw=RawKeys.of([("services/shop/rollout", json.dumps(record))]))
    document = status_json(started().with_cycle(state, ()), now=T0 + 4)
    assert document["services"][0]["rollout"] == {
        "phase": "running",
        "to": "green",
        "share": 25,
        "step": 2,
        "interval": None,
        "who": None,
        "updated": T0,
        "message": None,
        "mode": "daemon",
        "driver": None,
        "steps": [5, 25, 50],
        "events": [
            {"at": T0, "what": "step 2: green at 25%\\x1b[31m", "by": "7"},
            {"at": None, "what": "", "by": ""},
        ],
        "readings": [
            {
                "metric": "error-ratio",
                "value": 0.01,
                "verdict": "pass",
                "error": None,
                "time": T0 + 1,
            },
            {"metric": "latency", "value": "+Inf", "verdict": "fail", "error": None, "time": T0},
        ],
    }
    text = format_status(document, "u")
    assert "  rollout to green: running at 25.0%, steps 5/25/50, updated 4s ago\n" in text
    broken = replace(shop_state(), raw=RawKeys.of([("services/shop/rollout", "[1]")]))
    (service,) = status_json(started().with_cycle(broken, ()), now=T0)["services"]
    assert service["rollout"] == {"error": "services/shop/rollout: not a JSON object"}
    assert (
        status_json(started().with_cycle(shop_state(), ()), now=T0)["services"][0]["rollout"]
        is None
    )


def test_applies_are_counted_by_outcome_and_propagation_only_for_new_changes() -> None:
    current = [started(changed_at=T0)]
    metrics = Metrics(lambda: current[0])

    def cycle(outcome: Outcome, at: float) -> str:
        current[0] = current[0].with_cycle(shop_state(), (report(outcome, at),))
        metrics.observe_cycle(current[0])
        return (metrics.exposition() + state_exposition(current[0].state)).decode()

    def value(text: str, name: str, **labels: str) -> float | None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    text = cycle(Outcome.APPLIED, T0 + 0.3)  # change seen at T0, applied 0.5 s later
    assert value(text, "lbsync_applies_total", target="haproxy", outcome="applied") == 1
    assert value(text, "lbsync_applies_total", target="haproxy", outcome="invalid") == 0
    assert value(text, "lbsync_propagation_seconds_count", target="haproxy") == 1
    assert value(text, "lbsync_propagation_seconds_sum", target="haproxy") == pytest.approx(0.5)
    text = cycle(Outcome.APPLIED, T0 + 10)  # e.g. a template edit: no new source change
    assert value(text, "lbsync_propagation_seconds_count", target="haproxy") == 1
    current[0] = current[0].with_source(replace(current[0].sources[0], changed_at=T0 + 20))
    cycle(Outcome.RELOAD_FAILED, T0 + 20.1)  # the change is not live yet ...
    text = cycle(Outcome.APPLIED, T0 + 21)  # ... until the retry: 1.2 s after it was seen
    assert value(text, "lbsync_propagation_seconds_count", target="haproxy") == 2
    assert value(text, "lbsync_propagation_seconds_sum", target="haproxy") == pytest.approx(1.7)
    assert value(text, "lbsync_applies_total", target="haproxy", outcome="reload-failed") == 1
    assert value(text, "lbsync_cycles_total") == 4
    assert value(text, "lbsync_apply_plans_total", target="haproxy", plan="full") == 4
    assert value(text, "lbsync_apply_plans_total", target="haproxy", plan="nothing") == 0
    assert value(text, "lbsync_group_target_percent", service="shop", group="green") == 10
    assert value(text, "lbsync_group_eligible_instances", service="shop", group="blue") == 1
    assert value(text, "lbsync_source_connected", source="file") == 1


def test_two_daemons_never_share_a_registry() -> None:
    first, second = Metrics(started), Metrics(started)
    first.observe_cycle(started().with_cycle(shop_state(), (report(Outcome.APPLIED, T0),)))
    assert b'lbsync_applies_total{outcome="applied",target="haproxy"} 1.0' in first.exposition()
    assert b"lbsync_applies_total{" not in second.exposition()


def test_json_log_lines_carry_the_extra_fields() -> None:
    record = logging.LogRecord("lbsync", logging.INFO, __file__, 1, "target=%s", ("x",), None)
    record.__dict__.update({"outcome": "applied", "seconds": {"total": 0.2}})
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "target=x" and line["level"] == "info" and line["logger"] == "lbsync"
    assert (line["outcome"], line["seconds"]) == ("applied", {"total": 0.2})
    assert line["time"].endswith("+00:00") and "args" not in line and "msg" not in line
