"""The status API of a running daemon with a real HAProxy: JSON, metrics, readiness, methods."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.api import api_url, bearer, get, get_json, groups, sample, service, until_json
from support.processes import Backends, HAProxy
from support.shop import shop, start_shop
from support.site import Site, running_daemon

from lbsync.config import parse, parse_listen

APPLYING_PLANS = {"full", "runtime"}


def applied(metrics: str) -> float:
    return sample(metrics, "lbsync_applies_total", target="haproxy", outcome="applied") or 0.0


async def test_every_endpoint_follows_a_split_change_and_an_instance_failing(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        first = await until_json(f"{url}/v1/status", lambda d: d["ready"])
        shares = groups(service(first, "shop"))
        assert (shares["blue"]["target"], shares["green"]["target"]) == (90, 10)
        assert first["sources"][0]["usable"] and first["targets"][0]["outcome"] == "unchanged"
        assert {s["instance_id"]: s["weight"] for s in service(first, "shop")["servers"]} == {
            "blue-1": 256,
            "blue-2": 256,
            "green-1": 57,
        }
        status, metrics = await get(f"{url}/metrics")
        assert status == 200
        assert applied(metrics) == 0
        assert sample(metrics, "lbsync_ready") == 1
        assert sample(metrics, "lbsync_source_connected", source=f"file:{site.services}") == 1
        assert sample(metrics, "lbsync_group_target_percent", service="shop", group="green") == 10

        site.write_services(shop(ports, {"blue": 20, "green": 80}))
        changed = await until_json(
            f"{url}/v1/status",
            lambda d: groups(service(d, "shop"))["green"]["target"] == 80 and d["events"],
        )
        assert round(groups(service(changed, "shop"))["green"]["achieved"]) == 80
        event = changed["events"][0]
        # a weights-only change: a reload, or HAProxy's runtime API where the target uses it
        assert (event["outcome"], event["error"]) == ("applied", None)
        assert event["plan"] in APPLYING_PLANS and {"render", "total"} <= set(event["seconds"])
        _, metrics = await get(f"{url}/metrics")
        assert applied(metrics) == 1
        assert sample(metrics, "lbsync_group_achieved_percent", service="shop", group="green")
        assert (sample(metrics, "lbsync_propagation_seconds_count", target="haproxy") or 0) >= 1
        assert (
            sample(metrics, "lbsync_apply_step_seconds_count", target="haproxy", step="total") or 0
        ) >= 1

        site.write_services(shop(ports, {"blue": 20, "green": 80}, green_health="critical"))
        one = await until_json(
            f"{url}/v1/services/shop", lambda s: groups(s)["green"]["eligible"] == 0
        )
        green = groups(one)["green"]
        assert (green["status"], green["achieved"], green["instances"]) == ("redistributed", 0, 1)
        assert round(groups(one)["blue"]["achieved"]) == 100
        failing = next(s for s in one["servers"] if s["instance_id"] == "green-1")
        assert (failing["health"], failing["eligible"], failing["weight"]) == ("critical", False, 0)
        assert any("green" in note for note in one["notes"])
        events = (await until_json(f"{url}/v1/events", lambda d: len(d["events"]) == 2))["events"]
        assert [e["outcome"] for e in events] == ["applied", "applied"]
        assert events[0]["at"] > events[1]["at"]  # newest first
        assert len((await get_json(f"{url}/v1/events?limit=1"))["events"]) == 1
        _, metrics = await get(f"{url}/metrics")
        assert applied(metrics) == 2
        eligible = "lbsync_group_eligible_instances"
        assert sample(metrics, eligible, service="shop", group="green") == 0
        assert sample(metrics, eligible, service="shop", group="blue") == 2
        assert sample(metrics, "lbsync_target_failing", target="haproxy") == 0
        assert (await get(f"{url}/v1/services/nothing-here"))[0] == 404
        assert await get(f"{url}/healthz") == (200, "ok\n")


async def test_readyz_is_503_with_the_reason_until_the_first_apply(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start_shop(site, proxy, backends)
    # A long quiet time holds the first cycle back: the API answers meanwhile.
    config = dataclasses.replace(site.config(), min_wait=1.0, max_wait=1.0)
    async with running_daemon(config) as daemon:
        url = await api_url(daemon)
        status, reason = await get(f"{url}/readyz")
        assert status == 503, reason
        assert reason.startswith("not ready: "), reason
        assert "no apply yet" in reason or f"file:{site.services}" in reason
        assert (await get(f"{url}/healthz"))[0] == 200
        document = await get_json(f"{url}/v1/status")
        assert document["ready"] is False and document["not_ready"] == reason[11:].strip()
        await daemon.wait_for(lambda s: s.ready, 10)
        assert await get(f"{url}/readyz") == (200, "ready\n")


@pytest.mark.parametrize("token", [None, "7e57-api-token"], ids=["no token", "token"])
async def test_no_endpoint_accepts_anything_but_get_and_writes_change_nothing(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    token: str | None,
) -> None:
    site, proxy = haproxy_site
    if token is not None:
        (site.root / "api-token").write_text(token)
        site.write_config(api=f'listen = "127.0.0.1:0"\ntoken_file = "{site.root / "api-token"}"')
    start_shop(site, proxy, backends)
    headers = bearer(token) if token else None
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        await daemon.wait_for(lambda s: s.ready, 10)
        before = site.dest.read_bytes()
        status_before = await get_json(f"{url}/v1/status", headers=headers)
        paths = ["/", "/healthz", "/readyz", "/metrics", "/v1/status", "/v1/services/shop"]
        for path in [*paths, "/v1/events"]:
            assert (await get(f"{url}{path}", headers=headers))[0] == 200, path
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                answer = (await get(f"{url}{path}", method, headers=headers))[0]
                assert answer == 405, (method, path)
        assert (await get(f"{url}/v1/nothing", headers=headers))[0] == 404
        assert daemon.status.cycles == 1 and site.dest.read_bytes() == before
        status_after = await get_json(f"{url}/v1/status", headers=headers)
        moments = {"now", "changed_at", "age_seconds"}
        assert drop(status_after, moments) == drop(status_before, moments)


def drop(document: Any, keys: set[str]) -> Any:
    """A JSON document without the fields that change with the clock."""
    if isinstance(document, dict):
        return {k: drop(v, keys) for k, v in document.items() if k not in keys}
    if isinstance(document, list):
        return [drop(each, keys) for each in document]
    return document


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel shows them) of TCP sockets listening on a port."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


async def test_the_api_listens_on_loopback_only_unless_configured(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], tmp_path: Path
) -> None:
    default = parse({"source": {"file": {"path": "s.toml"}}, "target": [{"dest": "x"}]}, tmp_path)
    assert parse_listen(default.api.listen) == ("127.0.0.1", 9180)
    site, proxy = haproxy_site
    start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        await api_url(daemon)
        assert daemon.api.address is not None
        assert listening_addresses(daemon.api.address[1]) == {"0100007F"}  # 127.0.0.1 only
