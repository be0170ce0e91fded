"""The pure parts of rollout webhooks: `--hook` and `--hook-header` specs (whose errors never
show a URL or a header value), how a hook is shown, the JSON body, and a round's outcome."""

from __future__ import annotations

import json

import pytest

from lbsync.traffic.analysis.readings import Reading, Verdict
from lbsync.traffic.rollout.hooks import (
    HookEvent,
    HookKind,
    HookOutcome,
    HookPolicy,
    HookResult,
    HookRound,
    HookSpecError,
    body,
    parse_header,
    parse_hook,
)
from lbsync.traffic.splits import SplitError

SECRET = "s3cr3t-t0ken"


@pytest.mark.parametrize(
    ("text", "kind", "shown"),
    [
        ("pre-rollout=http://127.0.0.1:8080/gate", HookKind.PRE_ROLLOUT, "http://127.0.0.1:8080/…"),
        ("step=https://hooks.example.com", HookKind.STEP, "https://hooks.example.com"),
        ("confirm-promotion=https://ci.example.com/", HookKind.CONFIRM_PROMOTION, "https://ci.example.com"),
        (f"post-rollout=https://x.example.com/?token={SECRET}", HookKind.POST_ROLLOUT, "https://x.example.com/…"),
        (f"rollback=https://u:{SECRET}@x.example.com:8443", HookKind.ROLLBACK, "https://x.example.com:8443"),
        (f"step=https://hooks.example.com/services/T0/B0/{SECRET}", HookKind.STEP, "https://hooks.example.com/…"),
        ("step=http://[::1]:9/x", HookKind.STEP, "http://[::1]:9/…"),
    ],
)  # fmt: skip
def test_a_hook_is_read_and_shown_without_its_path_query_or_credentials(
    text: str, kind: HookKind, shown: str
) -> None:
    headers = [] if "@" in text else [("Authorization", f"Bearer {SECRET}")]
    hook = parse_hook(text, headers=headers)
    assert (hook.kind, hook.shown) == (kind, shown)
    assert hook.url == text.partition("=")[2]
    assert SECRET not in repr(hook) and SECRET not in hook.shown


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"https://x.example.com/?token={SECRET}", "expected KIND=URL"),
        (f"https://x.example.com/{SECRET}=1", "expected KIND=URL"),
        (f"pre-deploy=https://x.example.com/{SECRET}", "--hook pre-deploy=…: unknown hook kind"),
        (f"step=ftp://x.example.com/{SECRET}", "must be http:// or https:// with a host"),
        (f"step=http:///{SECRET}", "must be http:// or https:// with a host"),
        (f"step={SECRET}", "must be http:// or https:// with a host"),
        (f"step=http://x.example.com:99999/{SECRET}", "port must be a number up to 65535"),
        (f"step=http://x.example.com/{SECRET} x", "spaces or control characters"),
        (f"step=http://x.example.com/{SECRET}\r\nX: y", "spaces or control characters"),
    ],
)
def test_a_bad_hook_is_refused_naming_the_option_and_never_its_url(text: str, says: str) -> None:
    with pytest.raises(HookSpecError, match=r"^--hook") as caught:
        parse_hook(text)
    assert says in str(caught.value)
    assert SECRET not in str(caught.value)
    assert isinstance(caught.value, SplitError)  # the rollout command's "wrong input", exit 2


def test_credentials_in_the_url_and_an_authorization_header_are_refused_together() -> None:
    with pytest.raises(HookSpecError, match="give one of them") as caught:
        parse_hook(
            f"step=https://u:{SECRET}@x.example.com",
            headers=[("authorization", f"Bearer {SECRET}")],
        )
    assert SECRET not in str(caught.value)


def test_a_header_is_read_and_a_bad_one_refused_without_its_value() -> None:
    assert parse_header(f"Authorization: Bearer {SECRET}") == ("Authorization", f"Bearer {SECRET}")
    for bad, says in (
        (f"Bearer {SECRET}", "expected 'Name: value'"),
        (f"Bad Name: {SECRET}", "expected 'Name: value'"),
        (f"X-Token: {SECRET}\r\nX-Evil: 1", "--hook-header X-Token: the value must be one line"),
        (f"X-Token: {SECRET}\x00", "the value must be one line"),
    ):
        with pytest.raises(HookSpecError, match=r"^--hook-header") as caught:
            parse_header(bad)
        assert says in str(caught.value)
        assert SECRET not in str(caught.value)


def test_the_body_names_the_service_group_step_phase_and_readings() -> None:
    reading = Reading(10.0, "error-ratio", "q", 0.01, None, Verdict.PASS)
    event = HookEvent("shop", "green", "running", step=2, share=25.0, readings=(reading,))
    payload = body(HookKind.STEP, event, now=11.0)
    assert payload == {
        "type": "step",
        "service": "shop",
        "group": "green",
        "step": 2,
        "share": 25.0,
        "phase": "running",
        "readings": [reading.to_json()],
        "time": 11.0,
    }
    json.dumps(payload, allow_nan=False)
    rollback = body(HookKind.ROLLBACK, HookEvent("shop", "green", "reverted", message="why"), now=0)
    assert rollback["message"] == "why"


def result(kind: HookKind, outcome: HookOutcome) -> HookResult:
    return HookResult(
        time=0.0,
        kind=kind,
        hook="http://h",
        outcome=outcome,
        status=None,
        attempts=1,
        message=f"{kind} {outcome}",
    )


@pytest.mark.parametrize(
    ("kind", "outcomes", "outcome", "reverts"),
    [
        (HookKind.PRE_ROLLOUT, (), HookOutcome.OK, False),
        (HookKind.PRE_ROLLOUT, (HookOutcome.OK, HookOutcome.FAILED), HookOutcome.FAILED, True),
        (HookKind.STEP, (HookOutcome.FAILED,), HookOutcome.FAILED, True),
        (HookKind.STEP, (HookOutcome.OK, HookOutcome.OK), HookOutcome.OK, False),
        (HookKind.POST_ROLLOUT, (HookOutcome.FAILED,), HookOutcome.FAILED, False),
        (HookKind.ROLLBACK, (HookOutcome.FAILED,), HookOutcome.FAILED, False),
        (
            HookKind.CONFIRM_PROMOTION,
            (HookOutcome.OK, HookOutcome.WAITING),
            HookOutcome.WAITING,
            False,
        ),
        (
            HookKind.CONFIRM_PROMOTION,
            (HookOutcome.WAITING, HookOutcome.FAILED),
            HookOutcome.FAILED,
            False,
        ),
    ],
)
def test_a_round_fails_when_one_hook_fails_and_only_pre_rollout_and_step_revert(
    kind: HookKind, outcomes: tuple[HookOutcome, ...], outcome: HookOutcome, reverts: bool
) -> None:
    round_ = HookRound(kind, tuple(result(kind, each) for each in outcomes))
    assert (round_.outcome, round_.reverts) == (outcome, reverts)
    first_bad = next((each for each in outcomes if each is not HookOutcome.OK), None)
    assert round_.message == (
        f"{kind} {first_bad}" if first_bad else f"{len(outcomes)} {kind} hook(s) answered 2xx"
    )


def test_a_policy_without_time_or_attempts_is_refused() -> None:
    for bad in ({"timeout": 0.0}, {"attempts": 0}):
        with pytest.raises(HookSpecError, match="timeout must be above 0 and attempts"):
            HookPolicy(**bad)
