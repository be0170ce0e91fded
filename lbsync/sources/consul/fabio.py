"""Fabio's manual overrides (its KV key, `fabio/config` by default) as lbsync splits (pure).

Fabio reads one command per line (its documentation, "Routing"):

    route weight <svc> <src> weight <w> tags "<t>"   -> the split of <svc>: group <t> at <w>*100 %
    route add ... / route del ...                    -> refused: routes to fixed addresses and
                                                        deletions are Consul's catalog's job here
    # a comment, or an empty line                    -> nothing

`<w>` is a fraction of the service's traffic (0.05 is 5 %); `<src>` is the route the weight
applies to (`host/path` or `/path`), which lbsync checks but does not need: a service has one
route. Several `route weight` lines of one service make one split with several groups; the
instances in none of them form the default group, as in any split. A group is one tag, so
`tags "a,b"` (instances carrying both) is refused; so is a weight without `tags` (it would
mean the whole service). Each line that does not parse is refused and named by its number,
and the other lines still apply: Fabio froze every update on one bad line.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from lbsync.model import checks
from lbsync.model.checks import ContractError

MAX_LINES = 10_000


@dataclass(frozen=True)
class FabioRoutes:
    """What a Fabio configuration says: the split of each service it weights (as KV split
    values), and the lines it refuses, each with its number and why."""

    splits: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    refused: tuple[tuple[int, str], ...] = ()

    def split_value(self, service: str) -> dict[str, object] | None:
        """The KV split value a service's lines make, None without any."""
        for name, groups in self.splits:
            if name == service:
                return {"by": "tag", "groups": dict(groups)}
        return None


def _weight_line(words: list[str]) -> tuple[str, str, float]:
    """(service, group, share in percent) of `route weight <svc> <src> weight <w> tags "<t>"`."""
    if len(words) < 5 or words[3] != "weight":
        raise ContractError('expected route weight <svc> <src> weight <w> tags "<tag>"')
    service, source, weight = words[1], words[2], words[4]
    checks.name(service, "the service")
    if not source.startswith("/") and "/" not in source:
        raise ContractError(f"the route {source!r} must be host/path or /path")
    try:
        fraction = float(weight)
    except ValueError:
        raise ContractError(f"the weight {weight!r} must be a number from 0 to 1") from None
    if not math.isfinite(fraction) or not 0 <= fraction <= 1:
        raise ContractError(f"the weight {weight!r} must be a number from 0 to 1")
    rest = words[5:]
    if rest[:1] != ["tags"] or len(rest) != 2:
        raise ContractError('a weight needs tags "<tag>": the group it gives the share to')
    tags = [tag.strip() for tag in rest[1].split(",") if tag.strip()]
    if len(tags) != 1:
        raise ContractError(f"one tag per weight (a group), got {rest[1]!r}")
    return service, checks.group(tags[0], "the tag"), round(fraction * 100, 4)


def _command(line: str) -> tuple[str, str, float]:
    """(service, group, share) of one command line; ContractError for any other command."""
    words = shlex.split(line)
    if words[:1] != ["route"] or len(words) < 2:
        raise ContractError("not a route command")
    if words[1] in ("add", "del"):
        raise ContractError(
            f"route {words[1]} is not carried out: lbsync's instances come from Consul's "
            "catalog (register them there), its routes from tags or KV"
        )
    if words[1] != "weight":
        raise ContractError(f"unknown route command {words[1]!r}")
    return _weight_line(words[1:])


def parse_fabio_config(text: str) -> FabioRoutes:
    """Every line of a Fabio configuration, each one applied or refused on its own."""
    groups: dict[str, dict[str, float]] = {}
    refused: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines()[:MAX_LINES], 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            service, group, share = _command(stripped)
        except (ContractError, ValueError) as error:  # ValueError: shlex's unclosed quote
            refused.append((number, str(error)))
            continue
        if group in groups.get(service, {}):
            refused.append((number, f"service {service} already weights group {group}"))
            continue
        groups.setdefault(service, {})[group] = share
    return FabioRoutes(
        splits=tuple((service, tuple(shares.items())) for service, shares in groups.items()),
        refused=tuple(refused),
    )
