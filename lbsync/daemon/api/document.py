"""The status documents as bytes: everything encoded once per status, put together per request.

`/v1/status` and `/v1/summary` are the `encode.status_json` document (the summary with each
service's servers left out). What depends on the state is encoded once per state
(`fragments.py`), the targets and events once per status; a request only writes the few
fields that depend on the moment it is asked (`now`, each source's `age_seconds`) and joins
the parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbsync.daemon.api import encode
from lbsync.daemon.api.fragments import EncodedState, dumps, encode_state
from lbsync.daemon.status import Status


@dataclass(frozen=True)
class EncodedStatus:
    """A status with its state's encoding and its reports already encoded."""

    status: Status
    state: EncodedState
    targets: bytes
    events: bytes


def encode_status(status: Status, previous: EncodedStatus | None) -> EncodedStatus:
    """Encode a status, reusing what `previous` encoded of an unchanged state or service."""
    return EncodedStatus(
        status=status,
        state=encode_state(status.state, previous.state if previous is not None else None),
        targets=dumps([encode.report_json(report) for report in status.targets]),
        events=dumps(encode.events_json(status, encode.STATUS_EVENTS)),
    )


def _document(encoded: EncodedStatus, services: tuple[bytes, ...], *, now: float) -> bytes:
    status = encoded.status
    head = dumps(
        {
            "version": encode.API_VERSION,
            "now": now,
            "started_at": status.started_at,
            "ready": status.ready,
            "not_ready": encode.not_ready_reason(status),
            "cycles": status.cycles,
        }
    )
    sources = dumps([encode.source_json(source, now=now) for source in status.sources])
    state = encoded.state
    return b"".join(
        (
            head[:-1],
            b',"health_mode":',
            state.health_mode,
            b',"sources":',
            sources,
            b',"services":',
            *services,
            b',"rejected":',
            state.rejected,
            b',"settings":',
            state.settings,
            b',"targets":',
            encoded.targets,
            b',"events":',
            encoded.events,
            b"}",
        )
    )


def status_body(encoded: EncodedStatus, *, now: float) -> bytes:
    """`/v1/status`: the whole status, every service with its servers."""
    return _document(encoded, encoded.state.services, now=now)


def summary_body(encoded: EncodedStatus, *, now: float) -> bytes:
    """`/v1/summary`: the same document, each service without its servers (`instances`
    counts them)."""
    return _document(encoded, encoded.state.summaries, now=now)


def service_body(encoded: EncodedStatus, name: str) -> bytes | None:
    """`/v1/services/{name}`: the service's own fragment, None for an unknown name."""
    found = encoded.state.fragments.get(name)
    return found.full if found is not None else None
