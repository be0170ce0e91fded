"""The status API of a daemon with 1,000 services: it answers while the pipeline keeps cycling,
and what it serves is what the daemon believes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from support.api import api_url, get, get_json, service, until_json
from support.memory import MemorySource, catalog_values, file_target_config
from support.site import running_daemon

from lbsync.config import load
from lbsync.daemon.api.encode import status_json
from lbsync.daemon.status import Status

SERVICES = 1_000
INSTANCES = 3
CHANGES = 6
SETTLE = 120  # seconds: a cycle of 3,000 servers on a busy machine takes a second or more


def stable_weights(document: dict[str, Any]) -> list[int]:
    return [server["weight"] for server in service(document, "svc-0000")["servers"][1:]]


async def test_status_and_healthz_answer_while_a_large_catalog_keeps_cycling(
    tmp_path: Path,
) -> None:
    source = MemorySource()
    source.push(catalog_values(SERVICES, INSTANCES))
    config = load(file_target_config(tmp_path), environ={})
    async with running_daemon(config, sources=[source]) as daemon:
        url = await api_url(daemon)
        await until_json(
            f"{url}/v1/summary", lambda d: d["ready"] and len(d["services"]) == SERVICES, SETTLE
        )
        start = daemon.status.cycles
        before = daemon.api.publisher.current.state.fragments
        probes = 0
        cycles_seen: set[int] = set()

        async def change() -> None:
            for weight in range(2, 2 + CHANGES):
                cycles = daemon.status.cycles

                def cycled(status: Status, before: int = cycles) -> bool:
                    return status.cycles > before

                source.push(catalog_values(SERVICES, INSTANCES, weight=weight))
                await daemon.wait_for(cycled, SETTLE)

        changing = asyncio.create_task(change())
        while not changing.done():
            assert await get(f"{url}/healthz") == (200, "ok\n")
            probes += 1
            document = await get_json(f"{url}/v1/status")  # asserts a 200
            assert len(document["services"]) == SERVICES
            cycles_seen.add(document["cycles"])
        await changing

        assert daemon.status.cycles >= start + CHANGES
        assert probes >= 2
        assert len(cycles_seen) >= 2, cycles_seen  # answered between cycles, not after them

        last = await until_json(
            f"{url}/v1/status", lambda d: d["cycles"] == daemon.status.cycles, SETTLE
        )
        assert stable_weights(last)[0] > stable_weights(last)[1]  # the last change is served
        assert last == status_json(daemon.status, now=last["now"])
        after = daemon.api.publisher.current.state.fragments
        assert after["svc-0000"] is not before["svc-0000"]  # the service that changed
        assert after["svc-0999"] is before["svc-0999"]  # encoded once, through every change
        _, metrics = await get(f"{url}/metrics")
        assert metrics.count("lbsync_group_target_percent{") == SERVICES * 2
