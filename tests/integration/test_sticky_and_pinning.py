"""Sticky clients and pinned requests through a real HAProxy and a real nginx, real backends.

Sticky: clients with cookie jars of their own keep the group they were sent to through a
canary step, new clients follow the split; a group at 0 % lets its clients go. Pinning: a
header or cookie naming a group reaches it at 0 %, any other value follows the split. Through
HAProxy every change here is a weight change, applied through its runtime API by a running
daemon and never by a reload; nginx reloads for each (it has no runtime API).
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support.processes import HAProxy, Nginx
from support.servicesfile import instance
from support.site import Site, next_cycle, running_daemon
from support.traffic import Client, visit

from lbsync.daemon.daemon import Daemon

HOST = "shop.example.com"
COOKIE = "lbsync.shop"
GROUP_OF = {"blue-1": "blue", "blue-2": "blue", "green-1": "green"}
CLIENTS = 1000
# nginx draws a new client's group at random: at 50 %, ±3 points is 3.8 standard deviations
NEW_CLIENTS = 4000
# what a request may say that names no group, or not one alone: each follows the split
HOSTILE = (
    "purple",
    "Green",
    "green evil",
    '"green"',
    "'green'",
    "green;",
    "green, blue",
    "green%0D%0AX-Evil: 1",
    "green\\r\\nX-Evil: 1",
    "green\\nserver evil",
    "${green}",
    "_default",
)

Services = dict[str, dict[str, Any]]
Settings = dict[str, Any] | None


def shop(
    ports: dict[str, int],
    groups: dict[str, float],
    *,
    sticky: bool = True,
    pin: bool = True,
    green: dict[str, Any] | None = None,
) -> Services:
    """blue-1 and blue-2 (blue), green-1 (green, with `green` fields), a sticky route and a
    split pinned by the header X-Canary and the cookie canary."""
    route: dict[str, Any] = {"hosts": [HOST], "path": "/"}
    split: dict[str, Any] = {"by": "tag", "groups": groups}
    if sticky:
        route["sticky"] = {"cookie": COOKIE}
    if pin:
        split["pin"] = {"header": "X-Canary", "cookie": "canary"}
    return {
        "shop": {
            "route": route,
            "split": split,
            "instances": {
                "blue-1": instance(ports["blue-1"], "blue"),
                "blue-2": instance(ports["blue-2"], "blue"),
                "green-1": instance(ports["green-1"], "green", **(green or {})),
            },
        }
    }


@dataclass
class Served:
    """The shop behind a real proxy: its port, the backends' ports, and `apply`, which makes
    the proxy run new services (and settings)."""

    port: int
    ports: dict[str, int]
    apply: Callable[[Services, Settings], Awaitable[None]]
    daemon: Daemon | None = None  # the one applying changes (HAProxy)

    async def groups(self, clients: list[Client], *, extra: tuple[str, ...] = ()) -> list[str]:
        """One request from each client: the group that answered each."""
        await visit(self.port, HOST, clients, extra=extra)
        return [GROUP_OF.get(c.answers[-1], c.answers[-1]) for c in clients]


@contextlib.asynccontextmanager
async def serving(
    request: pytest.FixtureRequest, kind: str, **shop_fields: Any
) -> AsyncIterator[Served]:
    """A real proxy of `kind` serving `shop(ports, **shop_fields)`. HAProxy: a running daemon
    applies each change, which must be a runtime plan, and no reload happens (checked at the
    end); nginx: `lbsync once` (validated, reloaded), then its new workers."""
    site: Site
    site, proxy = request.getfixturevalue(f"{kind}_site")
    ports = request.getfixturevalue("backends")(["blue-1", "blue-2", "green-1"]).ports
    site.write_services(shop(ports, **shop_fields))
    result = site.lbsync("once")
    assert result.returncode == 1 and "pending" in result.stderr, result.stderr  # no proxy yet
    proxy.start()
    if isinstance(proxy, Nginx):
        yield Served(site.port, ports, functools.partial(reload_nginx, site, proxy))
        return
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        reloads = proxy.reloads()
        yield Served(site.port, ports, functools.partial(runtime_change, site, daemon), daemon)
        assert (proxy.reloads(), proxy.failed_reloads()) == (reloads, 0)


async def reload_nginx(
    site: Site, proxy: Nginx, services: Services, settings: Settings = None
) -> None:
    before = proxy.worker_pids()
    site.write_services(services, settings)
    result = site.lbsync("once")
    assert result.returncode == 0, result.stderr
    proxy.wait_for_new_workers(before)


async def runtime_change(
    site: Site, daemon: Daemon, services: Services, settings: Settings = None
) -> None:
    status = await next_cycle(daemon, lambda: site.write_services(services, settings))
    report = status.targets[0]
    assert (report.outcome, report.plan) == ("applied", "runtime"), report


def share(answered: list[str], group: str) -> float:
    return 100 * collections.Counter(answered)[group] / len(answered)


PROXIES = pytest.mark.parametrize("kind", ["haproxy", "nginx"])


@PROXIES
async def test_each_client_keeps_its_group_through_a_canary_step_and_new_ones_follow_the_split(
    request: pytest.FixtureRequest, kind: str
) -> None:
    async with serving(request, kind, groups={"blue": 90, "green": 10}) as shop_:
        clients = [Client() for _ in range(CLIENTS)]
        before = await shop_.groups(clients)
        assert abs(share(before, "green") - 10) <= 5, collections.Counter(before)
        assert [c.jar[COOKIE] for c in clients] == before  # each is told its group
        await shop_.apply(shop(shop_.ports, {"blue": 50, "green": 50}), None)
        after = await shop_.groups(clients)
        moved = collections.Counter((b, a) for b, a in zip(before, after, strict=True) if a != b)
        assert not moved, f"{moved.total()} clients changed group: {moved}"
        new = await shop_.groups([Client() for _ in range(NEW_CLIENTS)])
        assert abs(share(new, "green") - 50) <= 3, collections.Counter(new)


@PROXIES
async def test_a_group_at_0_lets_its_sticky_clients_go_and_they_stay_where_they_went(
    request: pytest.FixtureRequest, kind: str
) -> None:
    async with serving(request, kind, groups={"blue": 80, "green": 20}) as shop_:
        clients = [Client() for _ in range(200)]
        green = [
            c for c, g in zip(clients, await shop_.groups(clients), strict=True) if g == "green"
        ]
        assert green
        await shop_.apply(shop(shop_.ports, {"blue": 100, "green": 0}), None)
        assert await shop_.groups(green) == ["blue"] * len(green)
        assert {client.jar[COOKIE] for client in green} == {"blue"}  # a new cookie
        await shop_.apply(shop(shop_.ports, {"blue": 80, "green": 20}), None)
        assert await shop_.groups(green) == ["blue"] * len(green)


@PROXIES
async def test_a_pin_reaches_its_group_at_0_and_any_other_value_follows_the_split(
    request: pytest.FixtureRequest, kind: str
) -> None:
    async with serving(request, kind, groups={"blue": 100, "green": 0}, sticky=False) as shop_:
        by_header = await shop_.groups([Client() for _ in range(40)], extra=("X-Canary: green",))
        assert by_header == ["green"] * 40
        by_cookie = await shop_.groups([Client(jar={"canary": "green"}) for _ in range(40)])
        assert by_cookie == ["green"] * 40
        both = [Client(jar={"canary": "blue"}) for _ in range(10)]
        assert await shop_.groups(both, extra=("X-Canary: green",)) == ["green"] * 10
        for value in HOSTILE:
            headed = await shop_.groups(
                [Client() for _ in range(10)], extra=(f"X-Canary: {value}",)
            )
            assert headed == ["blue"] * 10, value
            if value.split(";")[0].split(",")[0] == "green":
                continue  # `;` and `,` end a cookie: `canary=green, blue` names green
            cookies = [Client() for _ in range(10)]
            baked = await shop_.groups(cookies, extra=(f"Cookie: canary={value}",))
            assert baked == ["blue"] * 10, value
        # green's only instance critical: a pin to green follows the split
        services = shop(
            shop_.ports, {"blue": 100, "green": 0}, sticky=False, green={"health": "critical"}
        )
        await shop_.apply(services, None)
        assert (
            await shop_.groups([Client() for _ in range(20)], extra=("X-Canary: green",))
            == ["blue"] * 20
        )


async def test_weight_changes_on_a_sticky_pinned_service_reach_haproxy_without_a_reload(
    haproxy_site: tuple[Site, HAProxy], request: pytest.FixtureRequest
) -> None:
    """Both ways: the fast lane (a split alone), and the whole render for a change it leaves
    to it (a setting beside the split): runtime operations either way, never a reload."""
    _, proxy = haproxy_site
    # the split, a setting beside it (which the fast lane leaves to the whole render), and
    # the weights HAProxy must then run: each blue server's and green-1's
    changes: list[tuple[dict[str, float], Settings, int, int]] = [
        ({"blue": 40, "green": 60}, None, 85, 256),
        ({"blue": 100, "green": 0}, {"owner": "team"}, 256, 0),
        ({"blue": 75, "green": 25}, {"owner": "ops"}, 256, 171),
    ]
    async with serving(request, "haproxy", groups={"blue": 90, "green": 10}) as shop_:
        workers = proxy.worker_pids()
        for split, settings, blue, green in changes:
            await shop_.apply(shop(shop_.ports, split), settings)
            assert proxy.weights("shop") == {"blue-1": blue, "blue-2": blue, "green-1": green}
            assert proxy.weights("shop:sticky:green") == {"green-1": green}
            assert proxy.weights("shop:sticky:blue") == {"blue-1": blue, "blue-2": blue}
            assert proxy.weights("shop:pin:green") == {"green-1": 256}  # a pin reaches it at 0 %
        assert proxy.worker_pids() == workers
        pinned = await shop_.groups([Client() for _ in range(20)], extra=("X-Canary: green",))
        assert pinned == ["green"] * 20


async def test_a_hostile_sticky_cookie_or_pin_header_is_refused_and_the_last_good_ones_stay(
    haproxy_site: tuple[Site, HAProxy], request: pytest.FixtureRequest
) -> None:
    site, proxy = haproxy_site
    async with serving(request, "haproxy", groups={"blue": 90, "green": 10}) as shop_:
        services = shop(shop_.ports, {"blue": 50, "green": 50})
        services["shop"]["route"]["sticky"] = {"cookie": "lb\nserver evil 10.0.0.1:80"}
        services["shop"]["split"]["pin"] = {"header": 'X-Canary" evil', "cookie": "c;evil"}
        services["shop"]["instances"]["blue-2"]["weight"] = 3  # the good change beside them
        await shop_.apply(services, None)
        assert shop_.daemon is not None
        state = shop_.daemon.status.state
        assert state is not None
        refused = [str(rejection) for rejection in state.rejected]
        assert any(
            "[services.shop.route]: sticky.cookie must be a cookie name" in r for r in refused
        ), refused
        assert any(
            "[services.shop.split]: pin.header must be a header name" in r for r in refused
        ), refused
        text = site.dest.read_text()
        assert "evil" not in text
        assert "cookie lbsync.shop insert" in text and "req.fhdr(X-Canary,1)" in text
        # the last good split (90/10) with blue-2's new weight: 22.5 / 67.5 / 10 %
        assert proxy.weights("shop") == {"blue-1": 85, "blue-2": 256, "green-1": 38}
        pinned = await shop_.groups([Client() for _ in range(20)], extra=("X-Canary: green",))
        assert pinned == ["green"] * 20
        sticky = [Client() for _ in range(50)]
        assert await shop_.groups(sticky) == [client.jar[COOKIE] for client in sticky]
