"""Talking to a running daemon's status API over real HTTP, with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lbsync.daemon.daemon import Daemon


async def api_url(daemon: Daemon, timeout: float = 10) -> str:
    """The daemon's API base URL, once it listens."""
    async with asyncio.timeout(timeout):
        await daemon.api.listening.wait()
    assert daemon.api.url is not None
    return daemon.api.url


async def get(
    url: str, method: str = "GET", *, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One request: status and body text."""
    status, _, text = await request(url, method, headers=headers)
    return status, text


async def request(
    url: str, method: str = "GET", *, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One request: status, response headers and body text."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.text()


def bearer(token: str) -> dict[str, str]:
    """The header that carries the API's token."""
    return {"Authorization": f"Bearer {token}"}


async def get_json(url: str, *, headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers) as response,
    ):
        assert response.status == 200, (url, response.status, await response.text())
        return await response.json()


async def until_json(
    url: str,
    condition: Callable[[Any], bool],
    timeout: float = 10,
    *,
    headers: dict[str, str] | None = None,
) -> Any:
    """Poll a JSON endpoint until its document satisfies `condition`; return that document."""
    deadline = time.monotonic() + timeout
    while True:
        document = await get_json(url, headers=headers)
        if condition(document):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; {url} still answers {document}")
        await asyncio.sleep(0.02)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus-client's parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value (None when absent)."""
    return samples(text).get((name, frozenset(labels.items())))


def service(document: dict[str, Any], name: str) -> dict[str, Any]:
    """One service of a /v1/status document."""
    return next(s for s in document["services"] if s["name"] == name)


def groups(service_document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's groups by label."""
    return {group["label"]: group for group in service_document["groups"]}
