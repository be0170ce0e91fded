"""Rendering: desired state + template -> configuration text. Pure apart from reading templates.

The template context is a versioned interface (see docs/templates.md); version 1 holds:
`services` (exposed services), `service_index` (name -> 1-based position), `all_services`,
`http_rules` (HAProxy rule order), `virtual_hosts` (nginx server blocks), `settings` (decoded
JSON), `kv` (raw keys: `get`, `ls`), `vars` (the target's free variables), `rejected`, and
`lbsync` (versions). Version 2 adds, on each service, what sticky clients and pinned requests
need: `sticky_cookie`, `pin`, `routes_by_group`, `group_servers` and `draw`. Version 3 adds
what reaches the instances and what answers instead of them: on routes `strip`, `upstream`,
`tls_verify` and `redirect` (`.code`, `.to`, `.base`, `.keeps_path`), on services `redirects`;
and failover between datacenters: on services `serving_datacenter`, `has_backups` and
`failed_over`, on servers `datacenter`, `backup` and `serving`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from lbsync import __version__
from lbsync.core.bygroup import DrawStep, GroupServers
from lbsync.core.servers import ServerState
from lbsync.core.state import DesiredState, ServiceState
from lbsync.core.weights import GroupShare
from lbsync.model.text import shown
from lbsync.model.values import (
    Balance,
    Health,
    HealthCheck,
    OnEmpty,
    Pin,
    Redirect,
    Rejection,
    Route,
    Setting,
    Split,
    Sticky,
    Upstream,
)

CONTEXT_VERSION = 3


class RenderError(Exception):
    """A template that cannot be loaded or rendered; the message names the file."""


@dataclass(frozen=True)
class HttpRule:
    """One routing rule: requests for these hosts (any when empty) under this path prefix."""

    service: ServiceState
    hosts: tuple[str, ...]
    path: str

    @property
    def path_exact(self) -> str:
        """The prefix without its trailing slash (`/api` for `/api/`); empty for `/`."""
        return self.path.rstrip("/")


@dataclass(frozen=True)
class Location:
    """An nginx location: a path prefix served by one service."""

    path: str
    service: ServiceState

    @property
    def path_exact(self) -> str:
        """The prefix without its trailing slash; empty for `/`."""
        return self.path.rstrip("/")


@dataclass(frozen=True)
class VirtualHost:
    """An nginx server block: its names (none for the default server) and its locations."""

    names: tuple[str, ...]
    locations: tuple[Location, ...]


def http_rules(state: DesiredState) -> tuple[HttpRule, ...]:
    """Rules in first-match order: longest path first, host-specific before any-host."""
    rules = [
        HttpRule(service=service, hosts=service.route.hosts, path=service.route.path)
        for service in state.exposed
        if service.route is not None
    ]
    return tuple(
        sorted(rules, key=lambda rule: (-len(rule.path_exact), not rule.hosts, rule.service.name))
    )


def virtual_hosts(state: DesiredState) -> tuple[VirtualHost, ...]:
    """One server block per host (its own routes, then any-host routes on other paths), and
    a default server with the any-host routes."""
    by_host: dict[str, dict[str, ServiceState]] = {}
    any_host: dict[str, ServiceState] = {}
    for service in state.exposed:
        assert service.route is not None
        for host in service.route.hosts:
            by_host.setdefault(host, {})[service.route.path] = service
        if not service.route.hosts:
            any_host[service.route.path] = service

    def locations(paths: Mapping[str, ServiceState]) -> tuple[Location, ...]:
        return tuple(
            Location(path=path, service=paths[path])
            for path in sorted(paths, key=lambda p: (-len(p), p))
        )

    hosts = tuple(
        VirtualHost(names=(host,), locations=locations({**any_host, **by_host[host]}))
        for host in sorted(by_host)
    )
    return (*hosts, VirtualHost(names=(), locations=locations(any_host)))


class KvView:
    """Read-only access to the raw keys below the prefix, as confd's `getv` / `ls`.

    Raw values are free text nobody checked, so `get` hands a template only text that cannot
    start a new line (or any other control character): printed anywhere, it cannot add a
    directive. A template that means a multi-line value (a PEM for a generic target) asks for
    it by name with `multiline`."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw

    def get(self, key: str, default: str | None = None) -> str | None:
        """The raw value of one key (relative to the prefix), or the default; RenderError when
        the value holds a line break or another control character."""
        value = self._raw.get(key.strip("/"))
        if value is None:
            return default
        if not value.isprintable():
            raise RenderError(
                f"kv key {shown(key)} holds a line break or another control character; "
                "a template prints it only with kv.multiline"
            )
        return value

    def multiline(self, key: str, default: str | None = None) -> str | None:
        """The raw value of one key as it is, line breaks included: for templates that mean
        it (a certificate, a whole snippet)."""
        return self._raw.get(key.strip("/"), default)

    def ls(self, prefix: str = "") -> list[str]:
        """The sorted names of the children directly under a prefix."""
        base = prefix.strip("/")
        base = f"{base}/" if base else ""
        return sorted(
            {key[len(base) :].split("/", 1)[0] for key in self._raw if key.startswith(base)}
        )

    def exists(self, key: str) -> bool:
        """Whether a key is present."""
        return key.strip("/") in self._raw


def context(state: DesiredState, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The template context, version `CONTEXT_VERSION`."""
    return {
        "services": state.exposed,
        "service_index": {service.name: n for n, service in enumerate(state.exposed, 1)},
        "all_services": state.services,
        "http_rules": http_rules(state),
        "virtual_hosts": virtual_hosts(state),
        "settings": {setting.key: json.loads(setting.json_text) for setting in state.settings},
        "kv": KvView(state.raw),
        "vars": dict(variables),
        "rejected": state.rejected,
        "lbsync": {"version": __version__, "context_version": CONTEXT_VERSION},
    }


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, reading the attributes of lbsync's own context values
    without its per-read checks, which were a third of a 10,000-server render: these frozen
    values hold nothing that reaches outside them, any name starting with `_` still goes
    through the checks, and every call still goes through the sandbox's `call`."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) in _CONTEXT_VALUES and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass  # the sandbox makes it an undefined value, named
        return super().getattr(obj, attribute)


def _environment(directory: Path) -> jinja2.Environment:
    return _Sandbox(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


_CONTEXT_VALUES: frozenset[type] = frozenset(
    {ServiceState, ServerState, GroupShare, HttpRule, Location, VirtualHost}
    | {GroupServers, DrawStep}
    | {Route, HealthCheck, Split, Setting, Rejection, Balance, OnEmpty, Health, Sticky, Pin}
    | {Redirect, Upstream}
)


def load_template(path: Path) -> jinja2.Template:
    """Load and compile a template file; syntax errors name the file and line."""
    try:
        return _environment(path.parent).get_template(path.name)
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(
            f"{path}:{error.lineno}: template syntax error: {error.message}"
        ) from error
    except jinja2.TemplateNotFound as error:
        raise RenderError(f"{path}: template not found") from error
    except OSError as error:
        raise RenderError(f"{path}: cannot read template: {error}") from error
    except UnicodeDecodeError as error:
        raise RenderError(f"{path}: the template is not UTF-8 text: {error}") from error


def render(state: DesiredState, template: jinja2.Template, variables: Mapping[str, Any]) -> str:
    """Render one template; any error (undefined name, bad filter, raise) names the template."""
    try:
        return template.render(context(state, variables))
    except jinja2.TemplateError as error:
        raise RenderError(f"{template.filename}: template error: {error}") from error
    except Exception as error:  # a template is code: whatever it raises is its own error
        raise RenderError(f"{template.filename}: template error: {error!r}") from error
