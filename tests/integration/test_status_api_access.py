"""Who a running daemon's status API answers, over real HTTP on loopback: the bearer token, the
probes without it, the Host check without a token, `[api] open`, and `lbsync status`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from support.api import api_url, bearer, get, get_json, request
from support.ports import free_port
from support.processes import Backends, HAProxy
from support.shop import start_shop
from support.site import Site, running_daemon

TOKEN = "c0ffee-lbsync-api-token-7d1e"
ROUTES = ["/", "/metrics", "/v1/status", "/v1/services/shop", "/v1/events"]
PROBES = ["/healthz", "/readyz"]


def with_token(site: Site, *, listen: str = "127.0.0.1:0") -> None:
    token_file = site.root / "api-token"
    token_file.write_text(TOKEN + "\n")
    site.write_config(api=f'listen = "{listen}"\ntoken_file = "{token_file}"')


async def test_with_a_token_every_route_but_the_probes_needs_it(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    with_token(site)
    start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        await daemon.wait_for(lambda s: s.ready, 10)
        for path in [*ROUTES, "/v1/nothing"]:
            for headers in (
                None,
                bearer(TOKEN + "x"),
                bearer(TOKEN[:-1]),
                {"Authorization": TOKEN},
            ):
                status, answer, body = await request(f"{url}{path}", headers=headers)
                assert (status, answer.get("WWW-Authenticate")) == (401, 'Bearer realm="lbsync"')
                assert TOKEN not in body, path
            expected = 404 if path == "/v1/nothing" else 200
            assert (await get(f"{url}{path}", headers=bearer(TOKEN)))[0] == expected, path
            # the token protects it: any Host is answered
            rebound = {**bearer(TOKEN), "Host": "rebound.example:9180"}
            assert (await get(f"{url}{path}", headers=rebound))[0] == expected, path
        for path in PROBES:
            assert (await get(f"{url}{path}"))[0] == 200, path
            assert (await get(f"{url}{path}", headers={"Host": "rebound.example"}))[0] == 200
        document = await get_json(f"{url}/v1/status", headers=bearer(TOKEN))
        assert document["ready"] and TOKEN not in str(document)


async def test_without_a_token_only_requests_for_a_loopback_host_are_answered(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        await daemon.wait_for(lambda s: s.ready, 10)
        assert daemon.api.address is not None
        port = daemon.api.address[1]
        for path in [*ROUTES, *PROBES]:
            for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
                assert (await get(f"{url}{path}", headers={"Host": host}))[0] == 200, (path, host)
            for host in (f"rebound.example:{port}", "localhost.rebound.example", "10.0.0.5"):
                status, body = await get(f"{url}{path}", headers={"Host": host})
                assert status == 421, (path, host)
                assert body.startswith("misdirected request: without [api] token_file")
                assert host not in body  # a header is never echoed


async def test_an_events_limit_other_than_ascii_digits_is_a_400(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        for limit in ("\u00b2", "\u0663", "-1", "1.5", "ten", ""):  # "²".isdigit() is true
            status, body = await get(f"{url}/v1/events?limit={limit}")
            assert (status, body) == (400, '{"error": "limit: expected a whole number"}'), limit
        assert (await get_json(f"{url}/v1/events?limit=3"))["events"] == []


async def test_an_open_api_answers_anyone_and_says_so_at_start(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    caplog: pytest.LogCaptureFixture,
) -> None:
    site, proxy = haproxy_site
    site.write_config(api='listen = "0.0.0.0:0"\nopen = true')
    start_shop(site, proxy, backends)
    caplog.set_level(logging.INFO, logger="lbsync")
    async with running_daemon(site.config()) as daemon:
        await api_url(daemon)
        assert daemon.api.address is not None
        url = f"http://127.0.0.1:{daemon.api.address[1]}"  # only loopback is ever sent to
        assert (await get(f"{url}/v1/status", headers={"Host": "lbsync.internal"}))[0] == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no token: anyone who can reach it can read" in w for w in warnings), warnings


async def test_an_api_on_loopback_logs_no_warning(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    caplog: pytest.LogCaptureFixture,
) -> None:
    site, proxy = haproxy_site
    start_shop(site, proxy, backends)
    caplog.set_level(logging.INFO, logger="lbsync")
    async with running_daemon(site.config()) as daemon:
        await api_url(daemon)
        await daemon.wait_for(lambda s: s.ready, 10)
    assert any("status API and dashboard on" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "has no token" in r.getMessage()]


async def test_lbsync_status_sends_the_configured_token(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], tmp_path: Path
) -> None:
    site, proxy = haproxy_site
    port = free_port()
    with_token(site, listen=f"127.0.0.1:{port}")
    start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        await daemon.wait_for(lambda s: s.ready, 10)
        code, out, err = await site.lbsync_async("status")  # the URL from [api] listen
        assert (code, err) == (0, ""), err
        assert out.startswith(f"lbsync at http://127.0.0.1:{port}: ready")
        code, out, err = await site.lbsync_async("status", "--api", url, "--json")
        assert code == 0, err
        assert '"ready": true' in out
        # without a configuration file there is no token to send
        missing = str(tmp_path / "absent.toml")
        code, out, err = await site.lbsync_async("status", "--api", url, "-c", missing)
        assert code == 1 and out == ""
        assert f"{url}/v1/status: HTTP 401: the API needs the token of the daemon's" in err
        assert TOKEN not in err
