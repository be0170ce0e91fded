"""The per-service gauges of /metrics as Prometheus text, one fragment per service.

With thousands of services these gauges are nearly all of /metrics, and a registry collector
would rebuild every sample at every scrape. Written here as text instead, a service's lines
depend on that service alone, so the status API keeps them with the service's other encoded
fragments and rewrites only the services that changed; `exposition` joins them per family.
The text is what prometheus-client writes (labels sorted by name, values as Go formats them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from lbsync.core.state import DesiredState, ServiceState
from lbsync.core.weights import GroupShare


@dataclass(frozen=True)
class Family:
    """One gauge family: its name and help text."""

    name: str
    documentation: str

    def header(self) -> bytes:
        """The `# HELP` and `# TYPE` lines."""
        text = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} gauge\n".encode()


GROUP_FAMILIES = (
    Family("lbsync_group_instances", "Instances in a group."),
    Family(
        "lbsync_group_eligible_instances",
        "Instances in a group that pass the health filter and have a weight.",
    ),
    Family("lbsync_group_target_percent", "A group's share as the split asks."),
    Family(
        "lbsync_group_effective_percent",
        "A group's share after empty groups are redistributed or left unserved.",
    ),
    Family("lbsync_group_achieved_percent", "A group's share as the integer weights give it."),
)
UNSERVED = Family(
    "lbsync_service_unserved_percent",
    "Share of a service's requests the proxy answers with 503 (no eligible instance).",
)
FAILED_OVER = Family(
    "lbsync_service_failed_over",
    "1 while a service with another datacenter's backups is served by them, else 0; only "
    "services with backups ([source.consul] datacenters).",
)
REJECTED = Family(
    "lbsync_rejected_entries", "Entries refused in the desired state (contract, conflicts)."
)
FAMILIES = (*GROUP_FAMILIES, UNSERVED, FAILED_OVER)


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    """A sample's value as Go (and prometheus-client) writes it: `1.0`, `1.7e+09`, `+Inf`."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _line(name: str, labels: str, value: float) -> str:
    return f"{name}{{{labels}}} {_number(value)}\n"


def _group_values(group: GroupShare) -> tuple[float, ...]:
    return (group.instances, group.eligible, group.target, group.effective, group.achieved)


def service_lines(service: ServiceState) -> tuple[bytes, ...]:
    """A service's sample lines, one bytes value per family of FAMILIES, in that order."""
    service_label = f'service="{_label(service.name)}"'
    per_family: list[list[str]] = [[] for _ in GROUP_FAMILIES]
    for group in service.groups:
        labels = f'group="{_label(group.label)}",{service_label}'
        for lines, family, value in zip(
            per_family, GROUP_FAMILIES, _group_values(group), strict=True
        ):
            lines.append(_line(family.name, labels, value))
    unserved = _line(UNSERVED.name, service_label, service.unserved)
    failed_over = (
        _line(FAILED_OVER.name, service_label, float(service.failed_over))
        if service.has_backups
        else ""
    )
    return (
        *("".join(lines).encode() for lines in per_family),
        unserved.encode(),
        failed_over.encode(),
    )


def exposition(lines: Sequence[tuple[bytes, ...]], rejected: int) -> tuple[bytes, ...]:
    """The services' gauges, as pieces to write one after the other: every family's header
    and the services' lines (`service_lines` of each service in the state's order, or of
    consecutive services joined), then the count of refused entries."""
    parts: list[bytes] = []
    for index, family in enumerate(FAMILIES):
        parts.append(family.header())
        parts.extend(service[index] for service in lines)
    parts.append(REJECTED.header())
    parts.append(f"{REJECTED.name} {_number(rejected)}\n".encode())
    return tuple(parts)


def state_exposition(state: DesiredState | None) -> bytes:
    """The services' gauges of one state, from scratch."""
    services: Iterable[ServiceState] = state.services if state is not None else ()
    return b"".join(
        exposition(
            [service_lines(service) for service in services],
            len(state.rejected) if state is not None else 0,
        )
    )
