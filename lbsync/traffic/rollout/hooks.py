"""Webhooks around a rollout, Flagger's set, given as `--hook KIND=URL`.

| kind | the driver calls it | when it fails |
|---|---|---|
| `pre-rollout` | before the first step | the rollout reverts (`HookRound.reverts`) |
| `step` | at each step | the rollout reverts |
| `confirm-promotion` | before promoting, again at each poll | the rollout holds until a 2xx |
| `post-rollout` | after the last step | reported |
| `rollback` | after a revert | reported |

Each call is an HTTP POST of a JSON object naming the hook's `type`, the `service`, the target
`group`, the `step` (its number, from 1; 0 before the first) and `share`, the rollout's
`phase`, its latest metric `readings` (as the rollout record stores them), the `time` (Unix
seconds) and, when there is one, a `message` (why a rollback happened).

Delivery: every attempt is bounded by the policy's `timeout`. No answer, a 5xx, 408 or 429 is
tried again after the shared backoff (`common.backoff`), up to `attempts` in all; any other
answer is final, and only a 2xx is a success. A `confirm-promotion` hook is asked, not retried:
any answer that is not a 2xx means "not yet" (`WAITING`) at once, and the driver asks again at
its next poll; only no answer is retried, and after the last attempt the round is `FAILED` (the
hook could not be asked). The outcome is a value the driver turns into a revert, a hold or a
line of its record; nothing here reverts, waits on a rollout or exits.

Secrets: a hook's URL may hold a token (in its path, query or `user:password@`), and so may its
headers (`Authorization`). Neither ever reaches a log, a result, an error or a repr: a hook is
shown as `scheme://host[:port]/…` (`Hook.shown`), and errors are described by lbsync, never by
the HTTP client's own texts, which quote the URL (`common.httpclient`). Redirects are not
followed: they would carry the headers to another place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

import aiohttp

from lbsync.common.backoff import Backoff
from lbsync.common.httpclient import SessionHolder, no_answer
from lbsync.traffic.analysis.readings import Reading
from lbsync.traffic.splits import SplitError

log = logging.getLogger("lbsync")

RETRIED: Final = frozenset({408, 429})  # and every 5xx
BACKOFF: Final = Backoff(first=1.0, cap=10.0)
_KIND_TEXT: Final = re.compile(r"[A-Za-z-]{1,32}")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")  # an RFC 9110 token
_HEADER_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]{0,4096}")


class HookSpecError(SplitError):
    """A `--hook` or `--hook-header` that cannot be used; the message names the option and never
    shows a URL or a header value."""


class HookKind(StrEnum):
    """When a hook is called (Flagger's names)."""

    PRE_ROLLOUT = "pre-rollout"
    STEP = "step"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"


REVERTING: Final = frozenset({HookKind.PRE_ROLLOUT, HookKind.STEP})
"""The kinds whose failure the driver turns into a revert."""


@dataclass(frozen=True)
class Hook:
    """One webhook: its kind, where it is posted (secret) and how it is shown."""

    kind: HookKind
    url: str = field(repr=False)
    shown: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


def shown_url(parts: SplitResult) -> str:
    """`scheme://host[:port]`, then `/…` when the URL has more: what logs may show of it."""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{port}{'/…' if more else ''}"


def _kinds() -> str:
    return ", ".join(kind.value for kind in HookKind)


def parse_hook(text: str, *, headers: Iterable[tuple[str, str]] = (), what: str = "--hook") -> Hook:
    """`KIND=URL`, the URL http(s) with a host; `headers` are sent with it (`parse_header`).
    HookSpecError naming `what` and the kind otherwise, without the URL."""
    kind_text, equals, url = text.partition("=")
    kind_text, url = kind_text.strip(), url.strip()
    if not equals or not _KIND_TEXT.fullmatch(kind_text):
        raise HookSpecError(f"{what}: expected KIND=URL, KIND one of {_kinds()}")
    try:
        kind = HookKind(kind_text)
    except ValueError:
        raise HookSpecError(f"{what} {kind_text}=…: unknown hook kind; one of {_kinds()}") from None
    where = f"{what} {kind}=…"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise HookSpecError(f"{where}: the URL must not contain spaces or control characters")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (the port is checked by reading it)
    except ValueError:
        raise HookSpecError(f"{where}: the URL's port must be a number up to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HookSpecError(f"{where}: the URL must be http:// or https:// with a host")
    headers = tuple(headers)
    if parts.username is not None and any(n.lower() == "authorization" for n, _ in headers):
        raise HookSpecError(
            f"{where}: credentials in the URL and an Authorization header; give one of them"
        )
    return Hook(kind, url, shown_url(parts), headers)


def parse_header(text: str, what: str = "--hook-header") -> tuple[str, str]:
    """`Name: value`, a header sent with hooks; its value is never shown, even in errors."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _HEADER_NAME.fullmatch(name):
        raise HookSpecError(f"{what}: expected 'Name: value', the name letters, digits and '-'")
    if not _HEADER_VALUE.fullmatch(value):
        raise HookSpecError(
            f"{what} {name}: the value must be one line of at most 4096 characters (not shown: "
            "it may be a secret)"
        )
    return name, value


@dataclass(frozen=True)
class HookEvent:
    """What a hook is told about the rollout."""

    service: str
    group: str
    phase: str
    step: int = 0
    share: float | None = None
    readings: tuple[Reading, ...] = ()
    message: str = ""


def body(kind: HookKind, event: HookEvent, *, now: float) -> dict[str, Any]:
    """The JSON object posted to a hook (pure)."""
    payload: dict[str, Any] = {
        "type": kind.value,
        "service": event.service,
        "group": event.group,
        "step": event.step,
        "share": event.share,
        "phase": event.phase,
        "readings": [reading.to_json() for reading in event.readings],
        "time": now,
    }
    if event.message:
        payload["message"] = event.message
    return payload


@dataclass(frozen=True)
class HookPolicy:
    """How long one attempt may take, how many attempts, and the wait between them."""

    timeout: float = 10.0
    attempts: int = 3
    backoff: Backoff = BACKOFF

    def __post_init__(self) -> None:
        if not self.timeout > 0 or self.attempts < 1:
            raise HookSpecError("hooks: the timeout must be above 0 and attempts at least 1")


class HookOutcome(StrEnum):
    """How a call, or a round of calls, ended."""

    OK = "ok"  # answered 2xx
    WAITING = "waiting"  # confirm-promotion answered, but not 2xx: not yet
    FAILED = "failed"  # no 2xx after the attempts (confirm-promotion: no answer at all)


@dataclass(frozen=True)
class HookResult:
    """One hook called: a small value, stored as JSON in the rollout record."""

    time: float
    kind: HookKind
    hook: str  # `Hook.shown`
    outcome: HookOutcome
    status: int | None  # the last HTTP status, None when nothing answered
    attempts: int
    message: str

    def to_json(self) -> dict[str, Any]:
        """The result as the rollout record stores it."""
        return {
            "time": self.time,
            "hook": self.kind.value,
            "url": self.hook,
            "outcome": self.outcome.value,
            "status": self.status,
            "attempts": self.attempts,
            "message": self.message,
        }


@dataclass(frozen=True)
class HookRound:
    """Every hook of one kind called once, in the order given."""

    kind: HookKind
    results: tuple[HookResult, ...]

    @property
    def outcome(self) -> HookOutcome:
        """FAILED if any failed, else WAITING if any is waiting, else OK (also with no hook)."""
        outcomes = {result.outcome for result in self.results}
        for worst in (HookOutcome.FAILED, HookOutcome.WAITING):
            if worst in outcomes:
                return worst
        return HookOutcome.OK

    @property
    def reverts(self) -> bool:
        """Whether the driver must revert: a pre-rollout or step hook failed."""
        return self.kind in REVERTING and self.outcome is HookOutcome.FAILED

    @property
    def message(self) -> str:
        """What the first hook that did not answer 2xx said, or that all did."""
        bad = next((r for r in self.results if r.outcome is not HookOutcome.OK), None)
        if bad is not None:
            return bad.message
        return f"{len(self.results)} {self.kind} hook(s) answered 2xx"


class Webhooks(SessionHolder):
    """The hooks of one rollout, called with one policy.

    Use it as an async context manager to keep one connection pool; without one, each round
    opens and closes its own."""

    def __init__(
        self,
        hooks: Sequence[Hook],
        *,
        policy: HookPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(session)
        self.hooks = tuple(hooks)
        self.policy = policy or HookPolicy()
        self._rng = rng or random.Random()
        self._clock = clock

    def of(self, kind: HookKind) -> tuple[Hook, ...]:
        """The hooks of one kind, in the order given."""
        return tuple(hook for hook in self.hooks if hook.kind is kind)

    async def run(self, kind: HookKind, event: HookEvent) -> HookRound:
        """Call every hook of `kind`, one after the other; never raises for a hook's fault."""
        if not self.of(kind):
            return HookRound(kind, ())
        return await self.with_session(lambda session: self._round(session, kind, event))

    async def _round(
        self,
        session: aiohttp.ClientSession,
        kind: HookKind,
        event: HookEvent,
    ) -> HookRound:
        data = json.dumps(body(kind, event, now=self._clock())).encode()
        results = [await self._call(session, hook, data) for hook in self.of(kind)]
        return HookRound(kind, tuple(results))

    async def _call(self, session: aiohttp.ClientSession, hook: Hook, data: bytes) -> HookResult:
        policy = self.policy
        headers = {"Content-Type": "application/json", **dict(hook.headers)}
        status: int | None = None
        why = "no attempt"
        for attempt in range(1, policy.attempts + 1):
            try:
                async with session.post(
                    hook.url,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=policy.timeout),
                    allow_redirects=False,
                ) as response:
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                status, why = None, no_answer(error, timeout=policy.timeout)
            else:
                if 200 <= status < 300:
                    return self._result(hook, HookOutcome.OK, status=status, attempts=attempt)
                why = f"answered {status}"
                if hook.kind is HookKind.CONFIRM_PROMOTION:
                    return self._result(
                        hook, HookOutcome.WAITING, status=status, attempts=attempt, why="not yet"
                    )
                if status < 500 and status not in RETRIED:
                    return self._result(hook, HookOutcome.FAILED, status=status, attempts=attempt)
            log.warning(
                "%s hook %s: %s (attempt %d of %d)",
                hook.kind,
                hook.shown,
                why,
                attempt,
                policy.attempts,
            )
            if attempt < policy.attempts:
                await asyncio.sleep(policy.backoff.delay(attempt, rng=self._rng))
        return self._result(
            hook,
            HookOutcome.FAILED,
            status=status,
            attempts=policy.attempts,
            why=f"{why} after {policy.attempts} attempt(s)"
            if status is None
            else f"after {policy.attempts} attempt(s)",
        )

    def _result(
        self,
        hook: Hook,
        outcome: HookOutcome,
        *,
        status: int | None,
        attempts: int,
        why: str = "",
    ) -> HookResult:
        """A call's result; `why` defaults to the status that answered."""
        said = why if status is None else f"answered {status}" + (f": {why}" if why else "")
        return HookResult(
            time=self._clock(),
            kind=hook.kind,
            hook=hook.shown,
            outcome=outcome,
            status=status,
            attempts=attempts,
            message=f"{hook.kind} hook {hook.shown}: {said}",
        )
