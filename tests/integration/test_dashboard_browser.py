"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
from support.api import api_url
from support.memory import MemorySource, catalog_values, file_target_config
from support.processes import Backends, HAProxy
from support.shop import HOST, shop, start_shop
from support.site import Site, running_daemon
from support.traffic import tally

from lbsync.config import load

CHROMIUM = Path("/usr/lib/chromium/chromium")
# No network beyond loopback here: keep Chromium from reaching out on its own.
CLOSED_NETWORK = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-gpu",
]
BAR = '[data-service="shop"] [data-bar="{kind}"]'
SERVED = """(groups) => groups.every((group) => {
  const cell = document.querySelector(
    `[data-service="shop"] [data-traffic] [data-group="${group}"] [data-rate]`);
  return cell !== null && parseFloat(cell.dataset.rate) > 0;
})"""
WIDTH = """([bar, group]) => {
  const whole = document.querySelector(bar);
  const part = whole && whole.querySelector(`[data-group="${group}"]`);
  return part ? part.getBoundingClientRect().width / whole.getBoundingClientRect().width : -1;
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run scripts/install-system.sh --with-test-servers")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CLOSED_NETWORK
        )
        try:
            yield launched
        finally:
            await launched.close()


async def keep_sending(port: int) -> None:
    """Requests to the shop through HAProxy, batch after batch, until cancelled."""
    while True:
        await tally(port, HOST, 40, clients=2)


async def share_shown(page: Page, kind: str, group: str) -> float:
    """The fraction of a service's bar that one group's segment covers, as laid out."""
    fraction: float = await page.evaluate(WIDTH, [BAR.format(kind=kind), group])
    return fraction


async def until_shown(page: Page, kind: str, group: str, fraction: float) -> None:
    """Wait (deadline 10 s) until a segment covers `fraction` of its bar, within 1 point."""
    await page.wait_for_function(
        f"(args) => Math.abs(({WIDTH})(args) - {fraction}) < 0.01",
        arg=[BAR.format(kind=kind), group],
        timeout=10_000,
        polling=50,
    )


async def test_the_dashboard_shows_the_split_and_follows_a_change_without_a_reload(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    browser: Browser,
    tmp_path: Path,
) -> None:
    site, proxy = haproxy_site
    ports = start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        await daemon.api.listening.wait()
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        problems: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                problems.append(f"console {message.type}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
        await page.goto(f"{daemon.api.url}/")
        await until_shown(page, "target", "blue", 0.90)
        await until_shown(page, "achieved", "green", 0.10)
        card = page.locator('[data-service="shop"]')
        for text in ("shop", "blue-1", "green-1", "passing", "256"):
            assert text in await card.inner_text(), text
        navigations = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))

        rollout = {
            "phase": "running",
            "to": "green",
            "share": 80,
            "steps": [10, 80, 100],
            "mode": "daemon",
            "driver": "host-a pid 41",
            "events": [
                {"at": 1_700_000_000, "what": "step 1: green at 10%", "by": "host-a pid 40"},
                {"at": 1_700_000_030, "what": "driven by host-a pid 41", "by": "host-a pid 41"},
                {"at": 1_700_000_031, "what": "step 2: green at 80%", "by": "host-a pid 41"},
                "not an event",
            ],
            "readings": [{"metric": "error-ratio", "value": 0.01, "verdict": "pass", "time": 1}],
        }
        site.write_services(shop(ports, {"blue": 20, "green": 80}, rollout=rollout))
        await until_shown(page, "target", "green", 0.80)
        await until_shown(page, "achieved", "blue", 0.20)
        assert round(await share_shown(page, "target", "blue"), 2) == 0.20
        assert "applied" in await page.locator("#applies").inner_text()
        shown = await card.locator('[data-rollout="running"]').inner_text()
        assert shown.startswith(
            "Rollout to green: running · at 80.0% · steps 10 → 80 → 100 % · driven by host-a pid 41"
        )
        reading = card.locator('[data-readings="1"] [data-verdict="pass"]')
        assert await reading.inner_text() == "error-ratio 0.01 (pass)"
        timeline = card.locator('[data-timeline="3"] li')
        assert await timeline.count() == 3
        assert "step 2: green at 80%" in await timeline.nth(2).inner_text()
        assert "driven by host-a pid 41" in await timeline.nth(1).inner_text()
        assert navigations == []  # followed by polling, not by reloading the page

        # what HAProxy served, per group: sampled from its counters while requests flow
        daemon.observed.every = 0.5  # 5 s in use; the test need not wait that long
        flowing = asyncio.create_task(keep_sending(site.port))
        try:
            await page.wait_for_function(SERVED, arg=["blue", "green"], timeout=30_000, polling=100)
        finally:
            flowing.cancel()
        traffic = card.locator("[data-traffic]")
        assert await traffic.locator("svg.spark polyline").count() == 2
        assert "req/s" in await traffic.inner_text()

        screenshot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(screenshot), full_page=True)
        print(f"dashboard screenshot: {screenshot}")
        assert problems == []


async def test_with_many_services_the_dashboard_asks_only_for_the_servers_on_screen(
    browser: Browser, tmp_path: Path
) -> None:
    source = MemorySource()
    source.push(catalog_values(200, 2))
    config = load(file_target_config(tmp_path), environ={})
    async with running_daemon(config, sources=[source]) as daemon:
        url = await api_url(daemon)
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        await page.goto(f"{url}/")
        first = page.locator('[data-service="svc-0000"] [data-instance="svc-0000-1"]')
        await first.wait_for(timeout=10_000)
        assert await page.locator("[data-service]").count() == 200
        last = page.locator('[data-service="svc-0199"]')
        assert "2 instances" in await last.inner_text()  # not on screen: only the count
        await last.scroll_into_view_if_needed()
        await last.locator('[data-instance="svc-0199-1"]').wait_for(timeout=10_000)
        services = {u.rsplit("/", 1)[1] for u in asked if "/v1/services/" in u}
        assert {"svc-0000", "svc-0199"} <= services
        assert "svc-0100" not in services  # never on screen, never asked
        assert not any(u.endswith("/v1/status") for u in asked)


async def test_a_service_failed_over_shows_its_serving_datacenter_and_its_backups(
    browser: Browser, tmp_path: Path
) -> None:
    source = MemorySource()
    local = {"address": "10.0.0.5", "port": 80, "datacenter": "dc1"}
    remote = {"address": "10.1.0.5", "port": 80, "datacenter": "dc2", "failover": 1}
    values: dict[str, object] = {
        "services/shop/route": {"hosts": [HOST]},
        "services/shop/instances/web-1": local,
        "services/shop/instances/dc2:web-1": remote,
    }
    source.push(values)
    config = load(file_target_config(tmp_path), environ={})
    async with running_daemon(config, sources=[source]) as daemon:
        url = await api_url(daemon)
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        await page.goto(f"{url}/")
        card = page.locator('[data-service="shop"]')
        await card.locator('[data-serving="dc1"]').wait_for(timeout=10_000)
        backup = card.locator('[data-instance="dc2:web-1"]')
        await backup.wait_for(timeout=10_000)
        assert "backup (dc2)" in await backup.inner_text()
        source.push({**values, "services/shop/instances/web-1": {**local, "health": "critical"}})
        await card.locator('[data-serving="dc2"]').wait_for(timeout=10_000)
        assert "served from datacenter dc2" in await card.inner_text()
