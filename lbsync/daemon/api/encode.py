"""The status as JSON: one small explicit function per frozen dataclass.

Written out field by field on purpose: a reflective `asdict` would silently change the API's
shape whenever an internal dataclass gains or renames a field. Adding a field here is a
decision, and docs/api.md lists every one.

Left out, deliberately: the values of settings and raw keys (templates may read secrets from
them); only the settings' names appear. The one raw key shown is a service's rollout record
(`services/<svc>/rollout`, written by `lbsync rollout` for the status to show), and only its
known fields, each checked for its type, since anyone can write that key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lbsync.core.servers import ServerState
from lbsync.core.state import ServiceState
from lbsync.core.weights import GroupShare
from lbsync.daemon.status import SourceStatus, Status
from lbsync.model.keys import rollout_key
from lbsync.model.text import shown
from lbsync.model.values import Rejection, Route, Split
from lbsync.pipeline.report import ApplyReport

JSON = dict[str, Any]
API_VERSION = 1
STATUS_EVENTS = 10
_NUMBER = (int, float)
ROLLOUT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "phase": str,
    "to": str,
    "share": _NUMBER,
    "step": int,
    "interval": _NUMBER,
    "who": str,
    "updated": _NUMBER,
    "message": str,
    "mode": str,
    "driver": str,
}
EVENTS_SHOWN = 20


def not_ready_reason(status: Status) -> str | None:
    """Why the daemon is not ready yet (None once it is): the first missing condition."""
    waiting = [source.name for source in status.sources if not source.synced]
    if waiting:
        return "not synced yet: " + ", ".join(waiting)
    if status.cycles == 0:
        return "no apply yet"
    return None


def status_json(status: Status, *, now: float) -> JSON:
    """The whole status: sources, services, refusals, the last cycle and the latest events."""
    state = status.state
    raw: Mapping[str, str] = state.raw if state is not None else {}
    return {
        "version": API_VERSION,
        "now": now,
        "started_at": status.started_at,
        "ready": status.ready,
        "not_ready": not_ready_reason(status),
        "cycles": status.cycles,
        "health_mode": state.health_mode.value if state is not None else None,
        "sources": [source_json(source, now=now) for source in status.sources],
        "services": [service_json(s, rollout_json(raw, s.name)) for s in state.services]
        if state is not None
        else [],
        "rejected": [rejection_json(r) for r in state.rejected] if state is not None else [],
        "settings": [setting.key for setting in state.settings] if state is not None else [],
        "targets": [report_json(report) for report in status.targets],
        "events": events_json(status, STATUS_EVENTS),
    }


def events_json(status: Status, limit: int) -> list[JSON]:
    """The last `limit` apply reports that did something, newest first."""
    recent = status.events[-limit:] if limit > 0 else ()
    return [report_json(report) for report in reversed(recent)]


def source_json(source: SourceStatus, *, now: float) -> JSON:
    """One source: synced once, usable now, its error and when it last changed."""
    return {
        "name": source.name,
        "synced": source.synced,
        "usable": source.usable,
        "error": source.error,
        "changed_at": source.changed_at,
        "age_seconds": None if source.changed_at is None else max(0.0, now - source.changed_at),
        "rejected": list(source.rejected),
    }


def service_json(service: ServiceState, rollout: JSON | None = None) -> JSON:
    """One service: route, split, groups (target next to achieved), servers, rollout."""
    fields = _service_fields(service, rollout)
    fields["servers"] = [server_json(server) for server in service.servers]
    return fields


def summary_json(service: ServiceState, rollout: JSON | None = None) -> JSON:
    """One service without its servers, only their count: what a listing of every service
    shows (the dashboard asks for the servers of the services on screen alone)."""
    fields = _service_fields(service, rollout)
    fields["instances"] = len(service.servers)
    return fields


def _service_fields(service: ServiceState, rollout: JSON | None) -> JSON:
    return {
        "name": service.name,
        "exposed": service.exposed,
        "route": route_json(service.route) if service.route is not None else None,
        "split": split_json(service.split) if service.split is not None else None,
        "split_in_force": service.split_in_force,
        "unserved": service.unserved,
        "serving_datacenter": service.serving_datacenter or None,
        "notes": list(service.notes),
        "groups": [group_json(group) for group in service.groups],
        "rollout": rollout,
    }


def rollout_json(raw: Mapping[str, str], service: str) -> JSON | None:
    """The service's rollout record, if any (`raw`: the state's raw keys, a lookup in the
    service's own part, never a scan): its known fields (None where absent or of the wrong
    type) and the numeric steps; `{"error": ...}` when it is not a JSON object."""
    return rollout_record(rollout_key(service), raw.get(rollout_key(service)))


def rollout_record(key: str, text: str | None) -> JSON | None:
    """A rollout record's text (None: there is none) as served."""
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return {"error": f"{key}: not a JSON object"}
    fields: JSON = {
        key: value if isinstance(value, kinds) and not isinstance(value, bool) else None
        for key, kinds in ROLLOUT_FIELDS.items()
        for value in [record.get(key)]
    }
    steps = record.get("steps")
    fields["steps"] = [
        step
        for step in (steps if isinstance(steps, list) else [])
        if isinstance(step, _NUMBER) and not isinstance(step, bool)
    ]
    fields["events"] = _events(record.get("events"))
    fields["readings"] = latest_readings(record.get("readings"))
    return fields


def latest_readings(readings: object) -> list[JSON]:
    """The last reading of each metric gate in a record (metric, value, verdict, error, time),
    each field checked and made safe to show; the value is a number or a text (`+Inf`)."""
    latest: dict[str, JSON] = {}
    for reading in readings if isinstance(readings, list) else []:
        if not isinstance(reading, dict) or not isinstance(reading.get("metric"), str):
            continue
        value, at, error = reading.get("value"), reading.get("time"), reading.get("error")
        latest[reading["metric"]] = {
            "metric": shown(reading["metric"], 64),
            "value": value
            if isinstance(value, str)
            or (isinstance(value, _NUMBER) and not isinstance(value, bool))
            else None,
            "verdict": shown(str(reading.get("verdict", "")), 20),
            "error": shown(error, 300) if isinstance(error, str) else None,
            "time": at if isinstance(at, _NUMBER) and not isinstance(at, bool) else None,
        }
    return list(latest.values())


def _events(events: object) -> list[JSON]:
    """The latest events of a record's timeline, each `at` (a number or None), `what` and
    `by` (strings, made safe to show); anything else in the list is left out."""
    shown_events = []
    for event in (events if isinstance(events, list) else [])[-EVENTS_SHOWN:]:
        if not isinstance(event, dict):
            continue
        at = event.get("at")
        shown_events.append(
            {
                "at": at if isinstance(at, _NUMBER) and not isinstance(at, bool) else None,
                "what": shown(str(event.get("what", "")), 300),
                "by": shown(str(event.get("by", "")), 200),
            }
        )
    return shown_events


def route_json(route: Route) -> JSON:
    """How a service is exposed."""
    check = route.check
    return {
        "hosts": list(route.hosts),
        "path": route.path,
        "balance": route.balance.value,
        "check": None if check is None else {"path": check.path, "interval_ms": check.interval_ms},
        "sticky": None if route.sticky is None else {"cookie": route.sticky.cookie},
        "strip": route.strip,
        "upstream": route.upstream.value,
        "tls_verify": route.tls_verify,
        "redirect": None
        if route.redirect is None
        else {"code": route.redirect.code, "to": route.redirect.to},
    }


def split_json(split: Split) -> JSON:
    """The split as written (groups in the split's own order, which decides ties)."""
    return {
        "by": split.by,
        "groups": [{"name": name, "share": share} for name, share in split.groups],
        "on_empty": split.on_empty.value,
        "pin": None if (pin := split.pin) is None else {"header": pin.header, "cookie": pin.cookie},
    }


def group_json(group: GroupShare) -> JSON:
    """A group's target, effective and achieved shares (percent) and its instance counts."""
    return {
        "name": group.name,
        "label": group.label,
        "target": group.target,
        "effective": group.effective,
        "achieved": group.achieved,
        "instances": group.instances,
        "eligible": group.eligible,
        "status": group.status,
    }


def server_json(server: ServerState) -> JSON:
    """One server line: where it is, its health, whether it counts, its weight and shares."""
    return {
        "name": server.name,
        "instance_id": server.instance_id,
        "address": server.address,
        "port": server.port,
        "endpoint": server.endpoint,
        "group": server.group,
        "health": server.health.value,
        "eligible": server.eligible,
        "weight": server.weight,
        "share": server.share,
        "achieved": server.achieved,
        "tags": list(server.tags),
        "meta": dict(server.meta),
        "datacenter": server.datacenter or None,
        "backup": server.backup,
    }


def rejection_json(rejection: Rejection) -> JSON:
    """A refused entry, named by where it came from."""
    return {"where": rejection.where, "message": rejection.message}


def report_json(report: ApplyReport) -> JSON:
    """One target's cycle: outcome, plan, step timings (seconds), error and detail."""
    return {
        "target": report.target,
        "outcome": report.outcome.value,
        "failed": report.failed,
        "plan": report.plan.value if report.plan is not None else None,
        "at": report.at,
        "seconds": dict(sorted(report.seconds.items())),
        "error": report.error,
        "digest": report.digest,
        "detail": report.detail,
    }
