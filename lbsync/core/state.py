"""The desired state: an immutable value built whole from the merged catalog (pure).

It holds what every target needs and nothing about any source: exposed services with their
servers' weights, the split as target and achieved shares, settings, raw keys and refusals.
Server and backend names are stable, derived from service and instance ids, so the runtime API
can address the same server across renders.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

from lbsync.core.bygroup import DrawStep, GroupServers, draw_of, groups_of
from lbsync.core.failover import allocate_tiers

# re-exported: they were defined here before core/servers.py
from lbsync.core.servers import ServerState as ServerState
from lbsync.core.servers import server_name as server_name
from lbsync.core.weights import GroupShare, basis_points, notes_on
from lbsync.model.values import (
    Catalog,
    HealthMode,
    Pin,
    RawKeys,
    Rejection,
    Route,
    ServiceSpec,
    Setting,
    Split,
)


@dataclass(frozen=True)
class ServiceState:
    """One service as the proxies should serve it."""

    name: str
    route: Route | None
    split: Split | None
    servers: tuple[ServerState, ...]
    groups: tuple[GroupShare, ...]
    split_in_force: bool
    unserved: float
    unserved_basis_points: int
    notes: tuple[str, ...]
    serving_datacenter: str = ""  # where its traffic goes, when its instances say

    @property
    def failed_over(self) -> bool:
        """Whether backup servers (another datacenter's) receive its traffic now."""
        return any(server.backup and server.serving for server in self.servers)

    @cached_property
    def has_backups(self) -> bool:
        """Whether some servers are backups (`core.failover`): the proxy then uses all of
        them together once no other server is usable."""
        return any(server.backup for server in self.servers)

    @property
    def exposed(self) -> bool:
        """Only services with a route are reachable through the proxy."""
        return self.route is not None

    @property
    def has_traffic(self) -> bool:
        """Whether any real server receives a share (otherwise everything is unserved)."""
        return any(server.weight > 0 for server in self.servers)

    @property
    def sticky_cookie(self) -> str | None:
        """The route's sticky cookie name, if its clients stay in their group."""
        sticky = self.route.sticky if self.route is not None else None
        return sticky.cookie if sticky is not None else None

    @property
    def redirects(self) -> bool:
        """Whether the route answers every request with a redirect: no request reaches an
        instance, so the service is exposed whether or not it has any."""
        return self.route is not None and self.route.redirect is not None

    @property
    def pin(self) -> Pin | None:
        """The split's pinning (a header and/or cookie naming a group), if any; none for a
        route that redirects (no request reaches a group)."""
        if self.split is None or self.redirects:
            return None
        return self.split.pin

    @property
    def routes_by_group(self) -> bool:
        """Whether some requests pick a group before a server (sticky or pinned): the proxy
        then has a backend per group besides the split's."""
        return self.sticky_cookie is not None or self.pin is not None

    @cached_property
    def group_servers(self) -> tuple[GroupServers, ...]:
        """The groups that have instances, each with its servers at split and in-group
        weights (`core.bygroup`); made on first use, as only sticky or pinned services ask."""
        return groups_of(self.servers, self.groups)

    @cached_property
    def draw(self) -> tuple[DrawStep, ...]:
        """The split as a random draw over groups in 0.01 % steps (`core.bygroup.draw_of`)."""
        return draw_of(self.group_servers, self.unserved_basis_points)


@dataclass(frozen=True)
class DesiredState:
    """Everything a target renders from; equal values render equal bytes."""

    services: tuple[ServiceState, ...]
    settings: tuple[Setting, ...]
    raw: RawKeys
    rejected: tuple[Rejection, ...]
    health_mode: HealthMode

    @property
    def exposed(self) -> tuple[ServiceState, ...]:
        """Services with a route, by name."""
        return tuple(service for service in self.services if service.exposed)

    def service(self, name: str) -> ServiceState | None:
        """One service by name."""
        return next((service for service in self.services if service.name == name), None)


def _service_state(spec: ServiceSpec, mode: HealthMode) -> ServiceState:
    tiered = allocate_tiers(spec.instances, spec.split, mode)
    shares = tiered.shares
    backups = tiered.backup if tiered.backup is not None else itertools.repeat(False)
    servers = [
        ServerState(
            server_name(instance.id),
            instance,
            instance.endpoint,
            group,
            eligible,
            weight,
            exact,
            achieved,
            backup,
        )
        for (instance, group, eligible, exact, weight, achieved), backup in zip(
            shares.rows(),
            backups,
            strict=False,  # `repeat` has no end
        )
    ]
    servers.sort(key=_by_name)
    return ServiceState(
        name=spec.name,
        route=spec.route,
        split=spec.split,
        servers=tuple(servers),
        groups=shares.groups,
        split_in_force=shares.split_in_force,
        unserved=shares.unserved,
        unserved_basis_points=basis_points(shares.unserved),
        notes=notes_on(shares.groups),
        serving_datacenter=tiered.serving_datacenter,
    )


def _by_name(server: ServerState) -> str:
    return server.name


def _route_keys(route: Route) -> list[tuple[str, str]]:
    return [(host, route.path) for host in route.hosts] or [("", route.path)]


def _where(origins: dict[str, tuple[str, ...]], service: str, key: str) -> str:
    """A refusal's place after the merge: the sources holding the service's keys, and the key."""
    sources = origins.get(service, ())
    return f"{', '.join(sources)} {key}" if sources else key


def _conflicts(
    specs: tuple[ServiceSpec, ...], origins: dict[str, tuple[str, ...]]
) -> dict[str, Rejection]:
    """The services whose route is dropped, because another service (earlier by name) owns one
    of its (host, path) pairs, with the refusal for each."""
    owners: dict[tuple[str, str], str] = {}
    refused: dict[str, Rejection] = {}
    for spec in specs:
        if spec.route is None:
            continue
        keys = _route_keys(spec.route)
        clash = next((owners[k] for k in keys if k in owners), None)
        if clash is not None:
            refused[spec.name] = Rejection(
                where=_where(origins, spec.name, f"services/{spec.name}/route"),
                message=f"host and path already routed to service {clash}; not exposed",
            )
            continue
        for key in keys:
            owners[key] = spec.name
    return refused


def _without(specs: tuple[ServiceSpec, ...], dropped: dict[str, Rejection]) -> list[ServiceSpec]:
    """The specs with the dropped services' routes removed."""
    if not dropped:
        return list(specs)
    return [
        ServiceSpec(name=spec.name, split=spec.split, instances=spec.instances)
        if spec.name in dropped
        else spec
        for spec in specs
    ]


def _without_case_clashes(
    specs: tuple[ServiceSpec, ...], origins: dict[str, tuple[str, ...]]
) -> tuple[tuple[ServiceSpec, ...], list[Rejection]]:
    """Drop a service whose name differs from an earlier one (by name) only in case: nginx
    compares upstream names without case, so `Web` and `web` would make it refuse every file."""
    seen: dict[str, str] = {}
    kept: list[ServiceSpec] = []
    refused: list[Rejection] = []
    for spec in specs:
        folded = spec.name.casefold()
        if folded in seen:
            refused.append(
                Rejection(
                    where=_where(origins, spec.name, f"services/{spec.name}"),
                    message=f"differs from service {seen[folded]} only in case (nginx upstream "
                    "names ignore case); not used",
                )
            )
            continue
        seen[folded] = spec.name
        kept.append(spec)
    return tuple(kept), refused


class BuildCache:
    """The service states `build` made, kept with the spec they came from: a service whose
    spec is the same object again (the merge reuses unchanged ones) keeps its state object, so
    one changed service costs one service's allocation, and later steps can tell what changed
    by identity. Owned by one building caller."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[ServiceSpec, HealthMode, ServiceState]] = {}
        self._routes: tuple[object, ...] = ()
        self._conflicts: dict[str, Rejection] = {}

    def conflicts(
        self, specs: tuple[ServiceSpec, ...], origins: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> dict[str, Rejection]:
        """`_conflicts`, decided again only when a route or the sources holding it changed."""
        routes = (origins, *((spec.name, spec.route) for spec in specs))
        if routes != self._routes:
            self._routes, self._conflicts = routes, _conflicts(specs, dict(origins))
        return self._conflicts

    def state(self, spec: ServiceSpec, mode: HealthMode) -> ServiceState:
        """The state of one service, reused when its spec and the mode are the same."""
        known = self._made.get(spec.name)
        if known is not None and known[0] is spec and known[1] is mode:
            return known[2]
        return _service_state(spec, mode)

    def keep(
        self, specs: list[ServiceSpec], states: tuple[ServiceState, ...], mode: HealthMode
    ) -> None:
        """Remember this build's states (and forget services that are gone)."""
        self._made = {
            spec.name: (spec, mode, state) for spec, state in zip(specs, states, strict=True)
        }


def build(
    catalog: Catalog, mode: HealthMode = HealthMode.PASSING, cache: BuildCache | None = None
) -> DesiredState:
    """The desired state of a catalog under a health mode."""
    origins = dict(catalog.origins)
    distinct, clashes = _without_case_clashes(catalog.services, origins)
    if cache is None:
        dropped = _conflicts(distinct, origins)
    else:
        dropped = cache.conflicts(distinct, catalog.origins)
    specs = _without(distinct, dropped)
    if cache is None:
        services = tuple(_service_state(spec, mode) for spec in specs)
    else:
        services = tuple(cache.state(spec, mode) for spec in specs)
        cache.keep(specs, services, mode)
    return DesiredState(
        services=services,
        settings=catalog.settings,
        raw=catalog.raw,
        rejected=catalog.rejected + tuple(clashes) + tuple(dropped.values()),
        health_mode=mode,
    )
