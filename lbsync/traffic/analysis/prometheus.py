"""Prometheus instant queries (`GET /api/v1/query`), each answered by one `Sample`.

Nothing Prometheus does raises: a refused query, an error answer, a timeout, a refused
connection, an answer that is too large or is not Prometheus' JSON all come back as a `Sample`
with an `error`, which makes the reading inconclusive, never a pass. A query must give one
number: a scalar, or an instant vector of exactly one series (`parse_answer`).
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from lbsync.common.httpclient import SessionHolder, no_answer
from lbsync.traffic.analysis.metrics import promql_duration
from lbsync.traffic.analysis.readings import Sample

MAX_ANSWER: Final = 1 << 20  # bytes: one number's answer is well under a kilobyte
QUERY_PATH: Final = "/api/v1/query"


def _number(pair: object) -> Sample:
    """A `[time, "value"]` pair's value."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        return Sample(error="Prometheus' answer has no [time, value] pair")
    try:
        return Sample(value=float(pair[1]))
    except ValueError:
        return Sample(error=f"Prometheus' value {pair[1][:40]!r} is not a number")


def _result(data: dict[str, Any]) -> Sample:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result)
    if kind == "vector" and isinstance(result, list):
        if not result:
            return Sample(error="no data: the query gave no series")
        if len(result) > 1:
            return Sample(
                error=f"{len(result)} series where one is expected: aggregate them "
                "(sum, max, ...) into one"
            )
        first = result[0]
        return _number(first.get("value") if isinstance(first, dict) else None)
    if kind == "matrix":
        return Sample(error="a range vector: the query must give one number, not [range]s")
    if kind == "string":
        return Sample(error="a string: the query must give a number")
    return Sample(error="Prometheus' answer has no result")


def parse_answer(status: int, body: bytes) -> Sample:
    """The one number an answer holds, or why it holds none (pure)."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        return Sample(error=f"Prometheus answered HTTP {status} without its JSON")
    if answer.get("status") == "error":
        kind, text = str(answer.get("errorType", "error")), str(answer.get("error", ""))
        return Sample(error=f"Prometheus refused the query ({kind[:40]}): {text}")
    data = answer.get("data")
    if status != 200 or answer.get("status") != "success" or not isinstance(data, dict):
        return Sample(error=f"Prometheus answered HTTP {status} without a result")
    return _result(data)


class PrometheusClient(SessionHolder):
    """Instant queries to one Prometheus (`[analysis] prometheus`), each bounded by `timeout`.

    Use it as an async context manager to keep one connection pool; without one, each query
    opens and closes its own."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        """`url`: `http(s)://host[:port][/prefix]`, as `config.analysis` checked it."""
        super().__init__(session)
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.where = f"{parts.scheme}://{parts.netloc}"  # what errors show
        self.timeout = timeout

    async def query(self, text: str) -> Sample:
        """The one number `text` gives now, or why there is none."""
        return await self.with_session(lambda session: self._query(session, text))

    async def _query(self, session: aiohttp.ClientSession, text: str) -> Sample:
        params = {"query": text, "timeout": promql_duration(self.timeout)}
        try:
            async with session.get(
                self.url + QUERY_PATH,
                params=params,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_ANSWER:
                        return Sample(error=f"Prometheus' answer is larger than {MAX_ANSWER} bytes")
                return parse_answer(response.status, bytes(body))
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            reason = no_answer(error, timeout=self.timeout)
            return Sample(error=f"Prometheus at {self.where}: {reason}")
