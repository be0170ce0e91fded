"""lbsync.toml: one TOML file, every setting overridable by an `LBSYNC_*` environment variable.

An environment variable names a setting by its path in upper case joined by `_`:
`LBSYNC_APPLY_MIN_WAIT`, `LBSYNC_SOURCE_FILE_PATH`, and for targets by their name:
`LBSYNC_TARGET_<NAME>_DEST`, `LBSYNC_TARGET_<NAME>_VARS_MAXCONN`. Values are read as TOML
values (`LBSYNC_APPLY_MIN_WAIT=0.5`, `..._VARS_BIND='["127.0.0.1:80"]'`), else as strings.
Every error names the file and the setting.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from lbsync.model.values import HealthMode

ENV_PREFIX = "LBSYNC_"
TEMPLATES_DIR = Path(__file__).parent / "templates"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


_Choice = TypeVar("_Choice", bound=StrEnum)


class ConfigError(Exception):
    """An invalid configuration; the message names the file and the setting."""


class TargetKind(StrEnum):
    """What a target renders; it decides the default template, validator and reload."""

    HAPROXY = "haproxy"
    NGINX = "nginx"
    GENERIC = "generic"


class ReloadMethod(StrEnum):
    """How a new configuration is applied after it was written."""

    MASTER_CLI = "master-cli"
    SIGNAL = "signal"
    COMMAND = "command"
    NONE = "none"


@dataclass(frozen=True)
class ReloadConfig:
    """How to apply a written file, and how long to wait for the proxy to confirm it."""

    method: ReloadMethod = ReloadMethod.NONE
    socket: Path | None = None
    pidfile: Path | None = None
    signal: str = "HUP"
    argv: tuple[str, ...] = ()
    timeout: float = 10.0
    server_state_file: Path | None = None


@dataclass(frozen=True)
class TargetConfig:
    """One rendered file: template, destination, validator, reload, free template variables."""

    name: str
    kind: TargetKind
    template: Path
    dest: Path
    validate: tuple[str, ...]
    validate_timeout: float
    reload: ReloadConfig
    mode: int
    backup: bool
    variables: tuple[tuple[str, Any], ...]
    # weights and servers joining or leaving through HAProxy's runtime API (master socket)
    runtime: bool = False

    @property
    def vars(self) -> dict[str, Any]:
        """The template variables as a fresh dict."""
        return dict(self.variables)


@dataclass(frozen=True)
class FileSourceConfig:
    """The services file: the embedded default source."""

    path: Path


@dataclass(frozen=True)
class EtcdSourceConfig:
    """An etcd v3 cluster holding the KV contract under a prefix."""

    endpoints: tuple[str, ...]
    prefix: str = "lbsync/"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    request_timeout: float = 5.0
    idle_timeout: float = 30.0


@dataclass(frozen=True)
class ConsulSourceConfig:
    """A Consul agent (or several): KV under a prefix, catalog instances and their health."""

    addresses: tuple[str, ...]
    prefix: str = "lbsync/"
    token: str | None = None
    datacenter: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    wait: float = 30.0


SourceConfig = FileSourceConfig | EtcdSourceConfig | ConsulSourceConfig


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    path: Path
    targets: tuple[TargetConfig, ...]
    file_source: FileSourceConfig | None = None
    etcd_source: EtcdSourceConfig | None = None
    consul_source: ConsulSourceConfig | None = None
    source_order: tuple[str, ...] = ("file",)
    health_mode: HealthMode = HealthMode.PASSING
    min_wait: float = 0.2
    max_wait: float = 2.0
    api_listen: str = "127.0.0.1:9180"
    extra: tuple[tuple[str, Any], ...] = field(default=())


_VALIDATE = {
    TargetKind.HAPROXY: ("haproxy", "-c", "-f", "{staged}"),
    TargetKind.NGINX: ("nginx", "-t", "-q", "-c", "{staged}"),
    TargetKind.GENERIC: (),
}
_COMMON_VARS: dict[str, Any] = {"bind": ["*:80"]}
_VARS: dict[TargetKind, dict[str, Any]] = {
    TargetKind.HAPROXY: {
        **_COMMON_VARS,
        "maxconn": 4096,
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
    },
    TargetKind.GENERIC: {},
}
_SIGNALS = {TargetKind.HAPROXY: "USR2", TargetKind.NGINX: "HUP", TargetKind.GENERIC: "HUP"}


def parse_duration(value: object, what: str) -> float:
    """Seconds from a number or a string like `250ms`, `2s`, `1.5m`."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: must be a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(f"{what}: must be a duration such as 500ms or 2s, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{what}: must not be negative")
    return seconds


class _Reader:
    """Typed access to one table of the document, with errors that name the setting."""

    def __init__(self, table: Mapping[str, Any], where: str, base: Path) -> None:
        self.table = table
        self.where = where
        self.base = base

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def check_known(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise ConfigError(f"{self.name(unknown[0])}: unknown setting")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.name(key)}: must be a non-empty string, got {value!r}")
        return value

    def path(self, key: str, default: str | None = None) -> Path:
        path = Path(self.text(key, default)).expanduser()
        return path if path.is_absolute() else self.base / path

    def optional_path(self, key: str) -> Path | None:
        return self.path(key) if key in self.table else None

    def argv(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
            raise ConfigError(f"{self.name(key)}: must be a list of non-empty strings (argv)")
        return tuple(value)

    def duration(self, key: str, default: float) -> float:
        return parse_duration(self.table[key], self.name(key)) if key in self.table else default

    def choice(self, key: str, kind: type[_Choice], default: _Choice) -> _Choice:
        value = self.table.get(key, default.value)
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise ConfigError(
                f"{self.name(key)}: must be one of {choices}, got {value!r}"
            ) from None

    def table_at(self, key: str) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.name(key)}: must be a table")
        return _Reader(value, self.name(key), self.base)


def _prefix(reader: _Reader) -> str:
    prefix = reader.text("prefix", "lbsync/").strip("/")
    if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", prefix):
        raise ConfigError(f"{reader.name('prefix')}: letters, digits, '_', '.', '-' and '/' only")
    return prefix + "/"


def _secret(reader: _Reader, key: str) -> str | None:
    """A secret given inline or, better, in a file named by `<key>_file`."""
    if f"{key}_file" in reader.table:
        path = reader.path(f"{key}_file")
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                f"{reader.name(key + '_file')}: cannot read {path}: {error}"
            ) from error
    return reader.text(key) if key in reader.table else None


def _etcd(reader: _Reader) -> EtcdSourceConfig:
    reader.check_known(
        {"endpoints", "prefix", "username", "password", "password_file", "ca_file"}
        | {"cert_file", "key_file", "request_timeout", "idle_timeout"}
    )
    endpoints = reader.argv("endpoints", ())
    if not endpoints or not all(re.fullmatch(r"https?://[^/\s]+/?", e) for e in endpoints):
        raise ConfigError(f"{reader.name('endpoints')}: a list of http(s)://host:port URLs")
    if ("cert_file" in reader.table) != ("key_file" in reader.table):
        raise ConfigError(f"{reader.name('cert_file')}: cert_file and key_file go together")
    username = reader.text("username") if "username" in reader.table else None
    password = _secret(reader, "password")
    if (username is None) != (password is None):
        raise ConfigError(f"{reader.name('username')}: username and password go together")
    return EtcdSourceConfig(
        endpoints=tuple(e.rstrip("/") for e in endpoints),
        prefix=_prefix(reader),
        username=username,
        password=password,
        ca_file=reader.optional_path("ca_file"),
        cert_file=reader.optional_path("cert_file"),
        key_file=reader.optional_path("key_file"),
        request_timeout=reader.duration("request_timeout", 5.0),
        idle_timeout=reader.duration("idle_timeout", 30.0),
    )


def _consul(reader: _Reader) -> ConsulSourceConfig:
    reader.check_known(
        {"addresses", "prefix", "token", "token_file", "datacenter", "ca_file", "cert_file"}
        | {"key_file", "wait"}
    )
    addresses = reader.argv("addresses", ("http://127.0.0.1:8500",))
    if not all(re.fullmatch(r"https?://[^/\s]+/?", address) for address in addresses):
        raise ConfigError(f"{reader.name('addresses')}: a list of http(s)://host:port URLs")
    if "cert_file" in reader.table and "key_file" not in reader.table:
        raise ConfigError(f"{reader.name('key_file')}: required with cert_file")
    datacenter = reader.text("datacenter") if "datacenter" in reader.table else None
    wait = reader.duration("wait", 30.0)
    if not 0 < wait <= 600:
        raise ConfigError(f"{reader.name('wait')}: between 0 and 10 minutes")
    return ConsulSourceConfig(
        addresses=tuple(address.rstrip("/") for address in addresses),
        prefix=_prefix(reader),
        token=_secret(reader, "token"),
        datacenter=datacenter,
        ca_file=reader.optional_path("ca_file"),
        cert_file=reader.optional_path("cert_file"),
        key_file=reader.optional_path("key_file"),
        wait=wait,
    )


def _listen(reader: _Reader) -> str:
    """The status API's `host:port`, or "" for no API."""
    listen = reader.table.get("listen", "127.0.0.1:9180")
    if not isinstance(listen, str):
        raise ConfigError(f'{reader.name("listen")}: a host:port string, or "" for no API')
    return listen


def _reload(reader: _Reader, kind: TargetKind, state_file: Path | None) -> ReloadConfig:
    reader.check_known({"method", "socket", "pidfile", "signal", "argv", "timeout"})
    default = ReloadMethod.NONE
    method = reader.choice("method", ReloadMethod, default)
    config = ReloadConfig(
        method=method,
        socket=reader.optional_path("socket"),
        pidfile=reader.optional_path("pidfile"),
        signal=reader.text("signal", _SIGNALS[kind]).upper().removeprefix("SIG"),
        argv=reader.argv("argv", ()),
        timeout=reader.duration("timeout", 10.0),
        server_state_file=state_file if kind is TargetKind.HAPROXY else None,
    )
    required = {
        ReloadMethod.MASTER_CLI: ("socket", config.socket),
        ReloadMethod.SIGNAL: ("pidfile", config.pidfile),
        ReloadMethod.COMMAND: ("argv", config.argv),
    }
    if method in required and not required[method][1]:
        raise ConfigError(f"{reader.name(required[method][0])}: required by method {method}")
    if method is ReloadMethod.MASTER_CLI and kind is not TargetKind.HAPROXY:
        raise ConfigError(f"{reader.name('method')}: master-cli works only for haproxy targets")
    return config


def _target_name(table: Mapping[str, Any], index: int) -> str:
    """A target's name: its own, else its kind (the first target) or kind and index."""
    name = table.get("name")
    if isinstance(name, str):
        return name
    kind = str(table.get("kind", TargetKind.HAPROXY.value))
    return kind if index == 0 else f"{kind}{index}"


def _target(reader: _Reader, index: int) -> TargetConfig:
    reader.check_known(
        {"name", "kind", "template", "dest", "validate", "validate_timeout", "reload", "mode"}
        | {"backup", "vars", "runtime"}
    )
    kind = reader.choice("kind", TargetKind, TargetKind.HAPROXY)
    name = reader.text("name", _target_name(reader.table, index))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ConfigError(f"{reader.name('name')}: letters, digits, '_' and '-' only")
    if kind is TargetKind.GENERIC and "template" not in reader.table:
        raise ConfigError(f"{reader.name('template')}: required for generic targets")
    builtin = {TargetKind.HAPROXY: "haproxy.cfg.j2", TargetKind.NGINX: "nginx.conf.j2"}
    template = (
        reader.path("template") if "template" in reader.table else TEMPLATES_DIR / builtin[kind]
    )
    dest = reader.path("dest")
    variables_reader = reader.table_at("vars")
    variables = {**_VARS[kind], "run_dir": str(dest.parent), **variables_reader.table}
    for key in ("bind", "tls_bind"):
        if isinstance(variables.get(key), str):
            variables[key] = [variables[key]]
    mode = reader.table.get("mode", "0644")
    try:
        mode_bits = int(mode, 8) if isinstance(mode, str) else -1
    except ValueError:
        mode_bits = -1
    if not 0 <= mode_bits <= 0o7777:
        raise ConfigError(f'{reader.name("mode")}: must be an octal string such as "0644"')
    backup = reader.table.get("backup", True)
    if not isinstance(backup, bool):
        raise ConfigError(f"{reader.name('backup')}: must be true or false")
    reload = _reload(
        reader.table_at("reload"), kind, Path(str(variables["run_dir"])) / "haproxy.state"
    )
    return TargetConfig(
        name=name,
        kind=kind,
        template=template,
        dest=dest,
        validate=reader.argv("validate", _VALIDATE[kind]),
        validate_timeout=reader.duration("validate_timeout", 30.0),
        reload=reload,
        mode=mode_bits,
        backup=backup,
        variables=tuple(sorted(variables.items())),
        runtime=_runtime(reader, kind, reload),
    )


def _runtime(reader: _Reader, kind: TargetKind, reload: ReloadConfig) -> bool:
    """Whether runtime-only changes skip the reload: by default wherever HAProxy's master
    socket is known, since runtime commands must reach the current worker through it."""
    possible = kind is TargetKind.HAPROXY and reload.method is ReloadMethod.MASTER_CLI
    runtime = reader.table.get("runtime", possible)
    if not isinstance(runtime, bool):
        raise ConfigError(f"{reader.name('runtime')}: must be true or false")
    if runtime and not possible:
        raise ConfigError(
            f"{reader.name('runtime')}: needs kind haproxy with reload method master-cli"
        )
    return runtime


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(document: dict[str, Any], path: list[str], value: Any) -> None:
    table = document
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            return
    table[path[-1]] = value


_KNOWN_PATHS = (
    ("source", "file", "path"),
    ("source", "etcd", "endpoints"),
    ("source", "etcd", "prefix"),
    ("source", "etcd", "username"),
    ("source", "etcd", "password"),
    ("source", "etcd", "password_file"),
    ("source", "consul", "addresses"),
    ("source", "consul", "prefix"),
    ("source", "consul", "token"),
    ("source", "consul", "token_file"),
    ("source", "consul", "datacenter"),
    ("health",),
    ("apply", "min_wait"),
    ("apply", "max_wait"),
    ("api", "listen"),
)


def apply_environment(document: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay `LBSYNC_*` variables on the parsed document (a new dict is returned)."""
    result = copy.deepcopy(document)
    paths = {"_".join(path).upper(): list(path) for path in _KNOWN_PATHS}
    for section, table in document.items():
        if isinstance(table, dict):
            for key in table:
                paths.setdefault(f"{section}_{key}".upper(), [section, key])
    targets = document.get("target", [])
    for index, target in enumerate(targets if isinstance(targets, list) else []):
        if not isinstance(target, dict):
            continue
        name = _target_name(target, index)
        stem = f"TARGET_{name.upper().replace('-', '_')}"
        for key in (*target, "dest", "template", "validate", "mode"):
            paths.setdefault(f"{stem}_{key.upper()}", ["target", name, key])
        kind = target.get("kind", TargetKind.HAPROXY.value)
        known_vars = set(_VARS[TargetKind(kind)]) if kind in set(TargetKind) else set()
        own_vars = target.get("vars")
        for key in known_vars | set(own_vars if isinstance(own_vars, dict) else ()):
            paths.setdefault(f"{stem}_VARS_{key.upper()}", ["target", name, "vars", key])
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable == "LBSYNC_CONFIG":
            continue
        path = paths.get(variable.removeprefix(ENV_PREFIX))
        if path is None:
            continue
        value = _env_value(text)
        if path[0] == "target":
            for index, target in enumerate(result["target"]):
                if isinstance(target, dict) and _target_name(target, index) == path[1]:
                    _set_path(target, path[2:], value)
        else:
            _set_path(result, path, value)
    return result


def parse(document: Mapping[str, Any], path: Path) -> Config:
    """A Config from a parsed TOML document; `path` locates relative paths and names errors."""
    try:
        return _parse(_Reader(document, "", path.parent))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def _parse(root: _Reader) -> Config:
    root.check_known({"source", "target", "apply", "api", "health"})
    sources = root.table_at("source")
    sources.check_known({"file", "etcd", "consul"})
    file_source = None
    if "file" in sources.table:
        file_reader = sources.table_at("file")
        file_reader.check_known({"path"})
        file_source = FileSourceConfig(path=file_reader.path("path"))
    etcd_source = _etcd(sources.table_at("etcd")) if "etcd" in sources.table else None
    consul_source = _consul(sources.table_at("consul")) if "consul" in sources.table else None
    if not sources.table:
        raise ConfigError("source: at least one source is required, e.g. [source.file]")
    targets_data = root.table.get("target", [])
    if not isinstance(targets_data, list) or not targets_data:
        raise ConfigError("target: at least one [[target]] table is required")
    targets = []
    for index, table in enumerate(targets_data):
        if not isinstance(table, dict):
            raise ConfigError(f"target[{index}]: must be a table")
        targets.append(_target(_Reader(table, f"target[{index}]", root.base), index))
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ConfigError("target: two targets have the same name")
    dests = [target.dest for target in targets]
    if len(set(dests)) != len(dests):
        raise ConfigError("target: two targets write the same dest")
    apply = root.table_at("apply")
    apply.check_known({"min_wait", "max_wait"})
    min_wait = apply.duration("min_wait", 0.2)
    max_wait = apply.duration("max_wait", 2.0)
    if max_wait < min_wait:
        raise ConfigError("apply.max_wait: must not be shorter than apply.min_wait")
    api = root.table_at("api")
    api.check_known({"listen"})
    return Config(
        path=root.base,
        targets=tuple(targets),
        file_source=file_source,
        etcd_source=etcd_source,
        consul_source=consul_source,
        source_order=tuple(sources.table),
        health_mode=root.choice("health", HealthMode, HealthMode.PASSING),
        min_wait=min_wait,
        max_wait=max_wait,
        api_listen=_listen(api),
    )


def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, overlay the environment, and check the configuration file."""
    path = path.absolute()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    environ = os.environ if environ is None else environ
    document = apply_environment(document, environ)
    consul = document.get("source", {}).get("consul")
    token = environ.get("CONSUL_HTTP_TOKEN")  # Consul's own variable, as its CLI reads it
    if isinstance(consul, dict) and token and not {"token", "token_file"} & set(consul):
        consul["token"] = token
    return parse(document, path)
