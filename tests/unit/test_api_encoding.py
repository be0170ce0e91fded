"""The status encoded once per change: fragments reused by identity, the same bytes' meaning as
a from-scratch encode, and the publisher that keeps requests off the encode."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from support.memory import catalog_values, snapshot_of
from support.waiting import async_wait_until

from lbsync.core.state import DesiredState, ServiceState, build
from lbsync.daemon.api.document import encode_status, service_body, status_body, summary_body
from lbsync.daemon.api.encode import service_json, status_json
from lbsync.daemon.api.fragments import encode_state, servers_to_encode
from lbsync.daemon.api.publisher import Publisher
from lbsync.daemon.gauges import state_exposition
from lbsync.daemon.status import SourceStatus, Status
from lbsync.model.catalog import merge
from lbsync.model.values import RawKeys
from lbsync.pipeline.decision import Plan
from lbsync.pipeline.report import ApplyReport, Outcome

T0 = 1_700_000_000.0


def catalog(services: int, instances: int = 2) -> DesiredState:
    values = {
        **catalog_values(services, instances),
        "settings/secret": "not shown",
        "services/svc-0001/rollout": {"phase": "running", "to": "canary", "share": 10},
    }
    return build(merge([snapshot_of(values)]))


def status_of(state: DesiredState) -> Status:
    source = SourceStatus(name="file", synced=True, usable=True, changed_at=T0)
    return Status(started_at=T0, sources=(source,)).with_cycle(state, ())


def reweighted(service: ServiceState) -> ServiceState:
    """The service as an incremental core hands it over after a change: a new object."""
    first = replace(service.servers[0], weight=service.servers[0].weight + 1)
    return replace(service, servers=(first, *service.servers[1:]))


def with_service(state: DesiredState, index: int, service: ServiceState) -> DesiredState:
    services = list(state.services)
    services[index] = service
    return replace(state, services=tuple(services))


def loaded(body: bytes) -> Any:
    return json.loads(body)


def test_an_unchanged_service_object_keeps_its_fragment_and_a_changed_one_is_encoded_again() -> (
    None
):
    state = catalog(3)
    first = encode_state(state, None)
    changed = reweighted(state.services[2])
    second = encode_state(with_service(state, 2, changed), first)
    assert second.fragments["svc-0000"] is first.fragments["svc-0000"]
    assert second.fragments["svc-0001"] is first.fragments["svc-0001"]
    assert second.fragments["svc-0002"] is not first.fragments["svc-0002"]
    assert loaded(second.fragments["svc-0002"].full) == service_json(changed)
    assert encode_state(second.state, second) is second  # the same state: nothing to do


def test_identity_decides_not_equality_and_a_new_rollout_record_is_encoded_again() -> None:
    state = catalog(2)
    first = encode_state(state, None)
    equal_copy = replace(state.services[0])
    assert equal_copy == state.services[0]
    assert (
        encode_state(with_service(state, 0, equal_copy), first).fragments["svc-0000"]
        is not (first.fragments["svc-0000"])
    )
    record = json.dumps({"phase": "done", "to": "canary", "share": 100})
    raw = RawKeys.of(
        (key, record if key == "services/svc-0001/rollout" else text)
        for key, text in state.raw.items()
    )
    moved = encode_state(replace(state, raw=raw), first)
    assert moved.fragments["svc-0000"] is first.fragments["svc-0000"]
    assert loaded(moved.fragments["svc-0001"].full)["rollout"]["phase"] == "done"


def test_the_servers_to_encode_are_those_of_changed_services_only() -> None:
    state = catalog(4, instances=3)
    first = encode_state(state, None)
    assert servers_to_encode(state, first) == 0
    assert servers_to_encode(with_service(state, 1, reweighted(state.services[1])), first) == 3
    assert servers_to_encode(catalog(4, instances=3), first) == 12  # a core that rebuilt all


def test_the_reused_encoding_answers_what_a_from_scratch_encode_answers() -> None:
    state = catalog(5)
    before = encode_status(status_of(state), None)
    later = status_of(with_service(state, 3, reweighted(state.services[3])))
    reused = encode_status(later, before)
    expected = status_json(later, now=T0 + 2)
    assert loaded(status_body(reused, now=T0 + 2)) == expected
    assert status_body(reused, now=T0 + 2) == status_body(encode_status(later, None), now=T0 + 2)
    summary = loaded(summary_body(reused, now=T0 + 2))
    services = expected.pop("services")
    assert {k: v for k, v in summary.items() if k != "services"} == expected
    assert summary["services"] == [
        {**{k: v for k, v in s.items() if k != "servers"}, "instances": len(s["servers"])}
        for s in services
    ]
    assert loaded(service_body(reused, "svc-0001") or b"") == services[1]
    assert services[1]["rollout"]["phase"] == "running"
    assert service_body(reused, "nothing") is None
    assert b"".join(reused.state.metrics) == state_exposition(later.state)


def test_a_status_before_any_cycle_encodes_like_the_document() -> None:
    status = Status(started_at=T0, sources=(SourceStatus(name="file"),))
    assert loaded(status_body(encode_status(status, None), now=T0)) == status_json(status, now=T0)


async def test_a_small_change_is_served_at_once_and_a_large_one_after_the_worker_encoded_it() -> (
    None
):
    state = catalog(3)
    publisher = Publisher(status_of(state), inline_work=50)
    small = status_of(with_service(state, 0, reweighted(state.services[0])))
    publisher.offer(small)
    assert publisher.current.status is small and not publisher.behind

    async def caught_up() -> bool:
        return not publisher.behind

    worker = asyncio.create_task(publisher.run())
    try:
        large, newest = status_of(catalog(40)), status_of(catalog(41))
        publisher.offer(large)
        assert publisher.current.status is small  # served until the worker is done
        publisher.offer(newest)
        await async_wait_until(caught_up, 10, "the encode")
        assert publisher.current.status is newest
        assert loaded(status_body(publisher.current, now=T0)) == status_json(newest, now=T0)
    finally:
        worker.cancel()


def test_a_status_that_cannot_be_encoded_leaves_the_previous_one_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = catalog(2)
    publisher = Publisher(status_of(state))
    served = publisher.current
    unencodable = ApplyReport("haproxy", Outcome.APPLIED, Plan.FULL, T0, {}, detail=object())  # type: ignore[arg-type]
    broken = status_of(state).with_cycle(state, (unencodable,))
    publisher.offer(broken)
    assert publisher.current is served and not publisher.behind
    assert "cannot encode the status; serving the previous one" in caplog.text
    fine = status_of(with_service(state, 1, reweighted(state.services[1])))
    publisher.offer(fine)
    assert publisher.current.status is fine
