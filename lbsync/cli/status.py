"""`lbsync status`: ask a running daemon's API and print what it believes, as tables or JSON.

It reads the same `/v1/status` document as the dashboard, so the terminal and the page can
never disagree; formatting is pure (`format_status`) so it is tested without a daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from lbsync.cli.apiurl import StatusUnavailable
from lbsync.model.text import shown

JSON = dict[str, Any]
STATUS_FIELDS = frozenset(
    {"now", "ready", "not_ready", "cycles", "sources", "services", "targets", "rejected"}
)


REFUSALS = {
    401: "the API needs the token of the daemon's [api] token_file (none or another was sent)",
    421: "without a token the API answers only requests for localhost, 127.0.0.1 or [::1]",
}


async def fetch_status(base_url: str, *, token: str | None = None, timeout: float = 5.0) -> JSON:
    """GET `/v1/status` from a daemon, with the API's bearer token when there is one;
    StatusUnavailable when what answers is not one (a port that another server took answers
    too)."""
    url = base_url.rstrip("/") + "/v1/status"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                why = REFUSALS.get(response.status)
                raise StatusUnavailable(
                    f"{url}: HTTP {response.status}" + (f": {why}" if why else "")
                )
            document: object = await response.json()
    except (aiohttp.ClientError, TimeoutError) as error:
        raise StatusUnavailable(f"{url}: {error or 'timed out'}") from error
    except (ValueError, RecursionError) as error:  # not JSON, or nested past the stack
        raise StatusUnavailable(f"{url}: not an lbsync status document ({error})") from error
    if not isinstance(document, dict) or not set(document) >= STATUS_FIELDS:
        raise StatusUnavailable(f"{url}: not an lbsync status document")
    return document


def in_step(document: JSON) -> bool:
    """Ready, and no target's last cycle failed (what `lbsync status` exits 0 for)."""
    return bool(document["ready"]) and not any(t["failed"] for t in document["targets"])


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]) -> list[str]:
    """Aligned columns (the columns in `right` right-aligned), two spaces apart."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _ago(now: float, at: float | None) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _ms(seconds: dict[str, float], step: str) -> str:
    return f"{seconds[step] * 1000:.1f}" if step in seconds else "-"


def format_status(document: JSON, url: str) -> str:
    """The status document as the terminal tables `lbsync status` prints."""
    now = document["now"]
    ready = "ready" if document["ready"] else f"NOT READY ({document['not_ready']})"
    cycles = document["cycles"]
    lines = [f"lbsync at {url}: {ready}, {cycles} cycle{'' if cycles == 1 else 's'}", "", "SOURCES"]
    rows = [
        [
            source["name"],
            "waiting" if not source["synced"] else "usable" if source["usable"] else "UNUSABLE",
            _ago(now, source["changed_at"]),
            source["error"] or "",
        ]
        for source in document["sources"]
    ]
    lines += [
        "  " + row for row in table(["source", "state", "changed", "error"], rows, right=set())
    ]
    for service in document["services"]:
        lines += ["", *_service_lines(service, now)]
    if not document["services"]:
        lines += ["", "SERVICES: none"]
    lines += ["", "LAST APPLY"]
    rows = [
        [
            report["target"],
            report["outcome"],
            report["plan"] or "-",
            _ms(report["seconds"], "validate"),
            _ms(report["seconds"], "reload"),
            _ms(report["seconds"], "total"),
            _ago(now, report["at"]),
        ]
        for report in document["targets"]
    ]
    header = ["target", "outcome", "plan", "validate ms", "reload ms", "total ms", "when"]
    lines += ["  " + row for row in table(header, rows, right={3, 4, 5})]
    lines += [f"  {r['target']}: {r['error']}" for r in document["targets"] if r["error"]]
    if document["rejected"]:
        lines += ["", "REFUSED"] + [f"  {r['where']}: {r['message']}" for r in document["rejected"]]
    # the document comes over HTTP: no text in it may add a line or drive the terminal
    return "\n".join(shown(line, limit=None) for line in lines) + "\n"


def _rollout_line(rollout: JSON, now: float) -> str:
    if "error" in rollout:
        return f"  rollout: {rollout['error']}"
    line = f"  rollout to {rollout['to'] or '?'}: {rollout['phase'] or '?'}"
    if rollout["share"] is not None:
        line += f" at {_pct(rollout['share'])}"
    if rollout["steps"]:
        line += f", steps {'/'.join(f'{step:g}' for step in rollout['steps'])}"
    if rollout["who"]:
        line += f", by {rollout['who']}"
    if rollout["updated"] is not None:
        line += f", updated {_ago(now, rollout['updated'])}"
    return line + (f" ({rollout['message']})" if rollout["message"] else "")


def _routing(route: JSON, split: JSON) -> str:
    """The sticky cookie and the pin, if any (a daemon older than them sends neither)."""
    text = ""
    sticky = route.get("sticky") if route else None
    if sticky:
        text += f"; sticky cookie {sticky['cookie']}"
    pin = split.get("pin") if split else None
    if pin:
        by = [f"{kind} {pin[kind]}" for kind in ("header", "cookie") if pin.get(kind)]
        text += f"; pinned by {', '.join(by)}"
    return text


def _service_lines(service: JSON, now: float) -> list[str]:
    route = service["route"]
    where = f"{', '.join(route['hosts']) or 'any host'} {route['path']}" if route else "not exposed"
    split = service["split"]
    how = f"split by {split['by']}" if split else "no split"
    if split and not service["split_in_force"]:
        how += " (not in force)"
    how += _routing(route, split)
    serving = service.get("serving_datacenter")
    if serving:
        how += f"; served from datacenter {serving}"
    lines = [f"SERVICE {service['name']}  ({where}; {how})"]
    lines += [f"  ! {note}" for note in service["notes"]]
    if service["rollout"] is not None:
        lines.append(_rollout_line(service["rollout"], now))
    rows = [
        [
            group["label"],
            _pct(group["target"]),
            _pct(group["effective"]),
            _pct(group["achieved"]),
            f"{group['eligible']}/{group['instances']}",
        ]
        for group in service["groups"]
    ]
    header = ["group", "target", "effective", "achieved", "eligible"]
    lines += ["  " + row for row in table(header, rows, right={1, 2, 3, 4})]
    rows = [
        [
            server["instance_id"],
            server["endpoint"],
            server["group"] or "(default)",
            server["health"] + ("" if server["eligible"] else " (not eligible)"),
            str(server["weight"]) + (" backup" if server.get("backup") else ""),
            _pct(server["achieved"]),
        ]
        for server in service["servers"]
    ]
    header = ["instance", "endpoint", "group", "health", "weight", "achieved"]
    lines += ["  " + row for row in table(header, rows, right={4, 5})]
    return lines
