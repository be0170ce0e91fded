"""The `[[target]]` tables: what each kind renders, validates and reloads by default."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from lbsync.config.reader import Reader
from lbsync.config.schema import ConfigError, ReloadConfig, ReloadMethod, TargetConfig, TargetKind

# The shipped templates: the top-level `templates/` of the source tree, installed as the
# package `lbsync.templates` (see pyproject.toml), so a plain `pip install .` finds them.
TEMPLATES_DIR: Final = Path(str(importlib.resources.files("lbsync.templates")))
SHIPPED_TEMPLATES: Final = {TargetKind.HAPROXY: "haproxy.cfg.j2", TargetKind.NGINX: "nginx.conf.j2"}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# what Docker and podman accept as a container name (or an id)
_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
VALIDATORS: Final = {
    TargetKind.HAPROXY: ("haproxy", "-c", "-f", "{staged}"),
    TargetKind.NGINX: ("nginx", "-t", "-q", "-c", "{staged}"),
    TargetKind.GENERIC: (),
}
_COMMON_VARS: Final[dict[str, Any]] = {"bind": ["*:80"]}
DEFAULT_VARS: Final[dict[TargetKind, dict[str, Any]]] = {
    TargetKind.HAPROXY: {
        **_COMMON_VARS,
        # no maxconn: HAProxy derives it from the file-descriptor limit, at most this many
        # (what later HAProxy versions assume; 2.6 takes a limit of a billion as it is)
        "fd_hard_limit": 1048576,
        "hard_stop_after": "60s",
        "timeout_connect": "5s",
        "timeout_client": "60s",
        "timeout_server": "60s",
        "timeout_keep_alive": "10s",
        "log_target": "",
        "tls_cert": "",
        "tls_bind": ["*:443"],
    },
    TargetKind.NGINX: {
        **_COMMON_VARS,
        "worker_processes": "auto",
        "worker_connections": 1024,
        "error_log": "stderr",
        "access_log": "off",
        "keepalive_timeout": "65s",
        "proxy_connect_timeout": "5s",
        "proxy_read_timeout": "60s",
        "upstream_keepalive": 32,
        # the CAs an https upstream's certificate is verified against (Debian's bundle)
        "upstream_ca_file": "/etc/ssl/certs/ca-certificates.crt",
    },
    TargetKind.GENERIC: {},
}
# What the shipped templates (and, for HAProxy, the server-state file of a reload) keep in
# `vars.run_dir`: two targets of one kind there would share them.
RUN_DIR_FILES: Final = {
    TargetKind.HAPROXY: "haproxy.sock and haproxy.state",
    TargetKind.NGINX: "nginx.pid and its temporary directories",
}
_SIGNALS: Final = {TargetKind.HAPROXY: "USR2", TargetKind.NGINX: "HUP", TargetKind.GENERIC: "HUP"}
_TARGET_SETTINGS: Final = {"name", "kind", "template", "dest", "validate", "validate_timeout"} | {
    "reload",
    "mode",
    "backup",
    "vars",
    "runtime",
}


def target_name(table: Mapping[str, Any], index: int) -> str:
    """A target's name: its own, else its kind (the first target) or kind and index."""
    name = table.get("name")
    if isinstance(name, str):
        return name
    kind = str(table.get("kind", TargetKind.HAPROXY.value))
    return kind if index == 0 else f"{kind}{index}"


def _reload(reader: Reader, kind: TargetKind, state_file: Path | None) -> ReloadConfig:
    reader.check_known(
        {"method", "socket", "pidfile", "signal", "argv", "timeout", "container", "docker_host"}
    )
    method = reader.choice("method", ReloadMethod, ReloadMethod.NONE)
    signal_name = reader.text("signal", _SIGNALS[kind]).upper().removeprefix("SIG")
    if f"SIG{signal_name}" not in signal.Signals.__members__:
        raise ConfigError(f"{reader.name('signal')}: no signal named {signal_name!r}")
    config = ReloadConfig(
        method=method,
        socket=reader.optional_path("socket"),
        pidfile=reader.optional_path("pidfile"),
        signal=signal_name,
        argv=reader.argv("argv", ()),
        timeout=reader.duration("timeout", 10.0),
        server_state_file=state_file if kind is TargetKind.HAPROXY else None,
        container=reader.optional_text("container") or "",
        docker_host=reader.optional_text("docker_host") or "",
    )
    required = {
        ReloadMethod.MASTER_CLI: ("socket", config.socket),
        ReloadMethod.SIGNAL: ("pidfile", config.pidfile),
        ReloadMethod.COMMAND: ("argv", config.argv),
        ReloadMethod.DOCKER: ("container", config.container),
    }
    if method in required and not required[method][1]:
        raise ConfigError(f"{reader.name(required[method][0])}: required by method {method}")
    if method is ReloadMethod.MASTER_CLI and kind is not TargetKind.HAPROXY:
        raise ConfigError(f"{reader.name('method')}: master-cli works only for haproxy targets")
    if method is ReloadMethod.DOCKER:
        _check_docker(reader, kind, config)
    return config


def _check_docker(reader: Reader, kind: TargetKind, config: ReloadConfig) -> None:
    """A `docker` reload needs the SDK, a container name the engine accepts, and a master
    socket only where there is one (HAProxy's)."""
    if importlib.util.find_spec("docker") is None:
        raise ConfigError(
            f"{reader.name('method')}: docker needs the docker package: "
            "pip install 'lbsync[docker]' (the image has it)"
        )
    if not _CONTAINER.fullmatch(config.container):
        raise ConfigError(
            f"{reader.name('container')}: a container name or id "
            f"(letters, digits, '_', '.' and '-'), not {config.container!r}"
        )
    if config.socket is not None and kind is not TargetKind.HAPROXY:
        raise ConfigError(
            f"{reader.name('socket')}: only HAProxy has a master socket; "
            f"a {kind} container's reload is confirmed by its processes and logs"
        )


def _mode(reader: Reader) -> int:
    mode = reader.table.get("mode", "0644")
    try:
        bits = int(mode, 8) if isinstance(mode, str) else -1
    except ValueError:
        bits = -1
    if not 0 <= bits <= 0o7777:
        raise ConfigError(f'{reader.name("mode")}: must be an octal string such as "0644"')
    return bits


def _runtime(reader: Reader, kind: TargetKind, reload: ReloadConfig) -> bool:
    """Whether runtime-only changes skip the reload: by default wherever HAProxy's master
    socket is known, since runtime commands must reach the current worker through it."""
    possible = kind is TargetKind.HAPROXY and reload.master_socket is not None
    runtime = reader.flag("runtime", possible)
    if runtime and not possible:
        raise ConfigError(
            f"{reader.name('runtime')}: needs kind haproxy and HAProxy's master socket "
            "(reload method master-cli, or docker with a socket)"
        )
    return runtime


def target(reader: Reader, index: int) -> TargetConfig:
    """One `[[target]]` table."""
    reader.check_known(set(_TARGET_SETTINGS))
    kind = reader.choice("kind", TargetKind, TargetKind.HAPROXY)
    name = reader.text("name", target_name(reader.table, index))
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{reader.name('name')}: letters, digits, '_' and '-' only")
    if kind is TargetKind.GENERIC and "template" not in reader.table:
        raise ConfigError(f"{reader.name('template')}: required for generic targets")
    template = (
        reader.path("template")
        if "template" in reader.table
        else TEMPLATES_DIR / SHIPPED_TEMPLATES[kind]
    )
    dest = reader.path("dest")
    variables = {**DEFAULT_VARS[kind], "run_dir": str(dest.parent), **reader.table_at("vars").table}
    for key in ("bind", "tls_bind"):
        if isinstance(variables.get(key), str):
            variables[key] = [variables[key]]
    reload = _reload(
        reader.table_at("reload"), kind, Path(str(variables["run_dir"])) / "haproxy.state"
    )
    return TargetConfig(
        name=name,
        kind=kind,
        template=template,
        dest=dest,
        validate=reader.argv("validate", VALIDATORS[kind]),
        validate_timeout=reader.duration("validate_timeout", 30.0),
        reload=reload,
        mode=_mode(reader),
        backup=reader.flag("backup", True),
        variables=tuple(sorted(variables.items())),
        runtime=_runtime(reader, kind, reload),
    )


def check_run_dirs(targets: Sequence[TargetConfig]) -> None:
    """Refuse a target whose `run_dir` an earlier target of its kind already uses: the two
    proxies would overwrite each other's socket and state (HAProxy) or pid file (nginx)."""
    first: dict[tuple[TargetKind, str], TargetConfig] = {}
    for index, each in enumerate(targets):
        if each.kind not in RUN_DIR_FILES:
            continue
        seen = first.setdefault((each.kind, os.path.normpath(each.run_dir)), each)
        if seen is not each:
            raise ConfigError(
                f"target[{index}].vars.run_dir: target {each.name!r} would share "
                f"{each.run_dir}/{RUN_DIR_FILES[each.kind]} with target {seen.name!r}; "
                "give each its own vars.run_dir"
            )
