"""Rollout webhooks against a real HTTP server on loopback (the user's endpoint): retries with
backoff, timeouts, confirm-promotion holding until a 2xx, the JSON body, no redirect followed,
and no secret of a URL or a header in any log line, result or error."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from support.ports import free_port

from lbsync.common.backoff import Backoff
from lbsync.traffic.analysis.readings import Reading, Verdict
from lbsync.traffic.rollout.hooks import (
    HookEvent,
    HookKind,
    HookOutcome,
    HookPolicy,
    Webhooks,
    body,
    parse_header,
    parse_hook,
)

SECRET = "tok-7f3a9c1e5b"
QUICK = HookPolicy(timeout=2.0, attempts=3, backoff=Backoff(first=0.01, cap=0.05))
READING = Reading(100.0, "error-ratio", "sum(x)", 0.01, None, Verdict.PASS)
EVENT = HookEvent("shop", "green", "running", step=2, share=25.0, readings=(READING,))


@dataclass
class Endpoint:
    """The user's hook endpoint: answers each path with the next status of its script (the last
    one over and over); `hang` never answers."""

    port: int
    scripts: dict[str, list[int | str]] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def calls(self, path: str) -> int:
        return sum(1 for seen_path, _, _ in self.seen if seen_path == path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path_qs, dict(request.headers), await request.json()))
        script = self.scripts.get(request.path, [200])
        step = script.pop(0) if len(script) > 1 else script[0]
        if step == "hang":
            await self.never.wait()
        if step == "redirect":
            raise web.HTTPFound(self.url("/elsewhere"))
        return web.Response(status=int(step), text="answered")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    server = Endpoint(port=free_port())
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)  # its log, not ours
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    server.never.set()
    await runner.cleanup()


async def test_a_hook_is_posted_the_rollouts_state_as_json(endpoint: Endpoint) -> None:
    hook = parse_hook(f"step={endpoint.url('/step')}", headers=[("X-Team", "shop")])
    async with Webhooks([hook], policy=QUICK, clock=lambda: 123.0) as hooks:
        round_ = await hooks.run(HookKind.STEP, EVENT)
    assert (round_.outcome, round_.reverts) == (HookOutcome.OK, False)
    ((path, headers, payload),) = endpoint.seen
    assert path == "/step"
    assert headers["Content-Type"] == "application/json" and headers["X-Team"] == "shop"
    assert payload == body(HookKind.STEP, EVENT, now=123.0)  # its fields: test_hooks_pure.py
    (result,) = round_.results
    assert result.to_json() == {
        "time": 123.0,
        "hook": "step",
        "url": f"http://127.0.0.1:{endpoint.port}/…",
        "outcome": "ok",
        "status": 200,
        "attempts": 1,
        "message": f"step hook http://127.0.0.1:{endpoint.port}/…: answered 200",
    }


async def test_a_5xx_is_retried_with_backoff_until_it_answers_2xx(endpoint: Endpoint) -> None:
    endpoint.scripts["/pre"] = [503, 502, 200]
    hook = parse_hook(f"pre-rollout={endpoint.url('/pre')}")
    async with Webhooks([hook], policy=QUICK) as hooks:
        round_ = await hooks.run(HookKind.PRE_ROLLOUT, EVENT)
    assert round_.outcome is HookOutcome.OK
    assert (round_.results[0].attempts, endpoint.calls("/pre")) == (3, 3)


async def test_a_pre_rollout_hook_failing_every_attempt_asks_for_a_revert(
    endpoint: Endpoint,
) -> None:
    endpoint.scripts["/pre"] = [500]
    good = parse_hook(f"pre-rollout={endpoint.url('/ok')}")
    bad = parse_hook(f"pre-rollout={endpoint.url('/pre')}")
    async with Webhooks([good, bad], policy=QUICK) as hooks:
        round_ = await hooks.run(HookKind.PRE_ROLLOUT, EVENT)
        rollback = await hooks.run(HookKind.ROLLBACK, EVENT)  # none given: nothing to call
    assert (round_.outcome, round_.reverts) == (HookOutcome.FAILED, True)
    assert [r.outcome for r in round_.results] == [HookOutcome.OK, HookOutcome.FAILED]
    assert endpoint.calls("/pre") == 3
    assert round_.message.endswith("/…: answered 500: after 3 attempt(s)")
    assert (rollback.results, rollback.outcome) == ((), HookOutcome.OK)


async def test_a_refusal_that_is_not_5xx_is_final_and_a_redirect_is_not_followed(
    endpoint: Endpoint,
) -> None:
    endpoint.scripts["/step"] = [403]
    endpoint.scripts["/moved"] = ["redirect"]
    hooks_given = [
        parse_hook(f"step={endpoint.url('/step')}"),
        parse_hook(f"step={endpoint.url('/moved')}"),
    ]
    async with Webhooks(hooks_given, policy=QUICK) as hooks:
        round_ = await hooks.run(HookKind.STEP, EVENT)
    assert [(r.outcome, r.status, r.attempts) for r in round_.results] == [
        (HookOutcome.FAILED, 403, 1),
        (HookOutcome.FAILED, 302, 1),
    ]
    assert round_.reverts
    assert endpoint.calls("/elsewhere") == 0


async def test_a_hook_that_never_answers_times_out_each_attempt(endpoint: Endpoint) -> None:
    endpoint.scripts["/slow"] = ["hang"]
    policy = HookPolicy(timeout=0.3, attempts=2, backoff=Backoff(first=0.01, cap=0.05))
    async with Webhooks([parse_hook(f"step={endpoint.url('/slow')}")], policy=policy) as hooks:
        round_ = await hooks.run(HookKind.STEP, EVENT)
    (result,) = round_.results
    assert (result.outcome, result.status, result.attempts) == (HookOutcome.FAILED, None, 2)
    assert result.message.endswith(": no answer in 0.3s after 2 attempt(s)")
    assert endpoint.calls("/slow") == 2


async def test_confirm_promotion_holds_on_503_and_goes_on_at_200(endpoint: Endpoint) -> None:
    endpoint.scripts["/confirm"] = [503, 503, 200]
    hook = parse_hook(f"confirm-promotion={endpoint.url('/confirm')}")
    outcomes = []
    async with Webhooks([hook], policy=QUICK) as hooks:
        for _ in range(3):  # the driver's polls
            round_ = await hooks.run(HookKind.CONFIRM_PROMOTION, EVENT)
            outcomes.append((round_.outcome, round_.results[0].status, round_.reverts))
    assert outcomes == [
        (HookOutcome.WAITING, 503, False),
        (HookOutcome.WAITING, 503, False),
        (HookOutcome.OK, 200, False),
    ]
    assert endpoint.calls("/confirm") == 3  # one request a poll: an answer is not retried
    assert endpoint.seen[0][2]["type"] == "confirm-promotion"


async def test_confirm_promotion_that_cannot_be_reached_fails_after_its_attempts() -> None:
    hook = parse_hook(f"confirm-promotion=http://127.0.0.1:{free_port()}/confirm")
    async with Webhooks([hook], policy=QUICK) as hooks:
        round_ = await hooks.run(HookKind.CONFIRM_PROMOTION, EVENT)
    (result,) = round_.results
    assert (round_.outcome, result.attempts, result.status) == (HookOutcome.FAILED, 3, None)
    assert result.message.endswith(": cannot connect: Connection refused after 3 attempt(s)")


async def test_no_secret_of_a_url_or_header_reaches_a_log_result_or_error(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the HTTP client's too
    endpoint.scripts[f"/hooks/{SECRET}"] = [500]
    header = parse_header(f"Authorization: Bearer {SECRET}")
    given = [
        parse_hook(f"step={endpoint.url(f'/hooks/{SECRET}')}?token={SECRET}", headers=[header]),
        parse_hook(f"step=http://user:{SECRET}@127.0.0.1:{free_port()}/x"),
        parse_hook(f"rollback={endpoint.url('/ok')}?token={SECRET}", headers=[header]),
    ]
    async with Webhooks(given, policy=QUICK) as hooks:
        rounds = [
            await hooks.run(HookKind.STEP, EVENT),
            await hooks.run(HookKind.ROLLBACK, EVENT),
        ]
    assert [r.outcome for r in rounds] == [HookOutcome.FAILED, HookOutcome.OK]
    assert endpoint.seen[0][1]["Authorization"] == f"Bearer {SECRET}"  # it was sent
    assert endpoint.seen[0][0] == f"/hooks/{SECRET}?token={SECRET}"
    shown = [
        caplog.text,
        *(repr(hook) for hook in given),
        *(repr(r) for r in rounds),
        *(r.message for r in rounds),
        json.dumps([result.to_json() for r in rounds for result in r.results]),
    ]
    assert len(caplog.records) >= 4  # each failed attempt logged
    for text in shown:
        assert SECRET not in text, text
