"""The configuration as frozen values: what `lbsync.toml` (with `LBSYNC_*` overrides) says.

Every value here has been checked by the readers in this package; the rest of lbsync takes
them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lbsync.config.tls import TlsFiles
from lbsync.model.values import HealthMode


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
    DOCKER = "docker"
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
    # method docker: the proxy's container, and the engine's API ("" = $DOCKER_HOST or the
    # engine's default socket)
    container: str = ""
    docker_host: str = ""

    @property
    def master_socket(self) -> Path | None:
        """HAProxy's master CLI, where this reload method knows it: runtime commands and the
        confirmation of a reload go through it."""
        if self.method in (ReloadMethod.MASTER_CLI, ReloadMethod.DOCKER):
            return self.socket
        return None


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

    @property
    def run_dir(self) -> Path:
        """Where the proxy keeps its sockets and state (`vars.run_dir`, default: dest's dir)."""
        return Path(str(dict(self.variables)["run_dir"]))


@dataclass(frozen=True)
class FileSourceConfig:
    """The services file: the embedded default source."""

    path: Path


@dataclass(frozen=True)
class EtcdSourceConfig:
    """An etcd v3 cluster holding the KV contract under a prefix."""

    endpoints: tuple[str, ...]  # normalised by `endpoints.normalise`
    prefix: str = "lbsync/"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # a repr may end up in a log
    tls: TlsFiles = field(default_factory=TlsFiles)
    request_timeout: float = 5.0
    idle_timeout: float = 30.0


@dataclass(frozen=True)
class ConsulSourceConfig:
    """A Consul agent (or several): KV under a prefix, catalog instances and their health."""

    addresses: tuple[str, ...]  # normalised by `endpoints.normalise`
    prefix: str = "lbsync/"
    token: str | None = field(default=None, repr=False)  # a repr may end up in a log
    datacenter: str | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    wait: float = 30.0
    fabio_config: str | None = None  # Fabio's KV key of manual overrides (`route weight` lines)
    # the local datacenter, then those whose instances serve when it has none, in order
    datacenters: tuple[str, ...] = ()
    config_entries: bool = False  # splits from service-splitter and service-resolver entries


SourceConfig = FileSourceConfig | EtcdSourceConfig | ConsulSourceConfig


@dataclass(frozen=True)
class ApiConfig:
    """The status API: where it listens ("" for nowhere) and who may read it."""

    listen: str = "127.0.0.1:9180"
    # every route but the probes needs `Authorization: Bearer <token>`
    token: str | None = field(default=None, repr=False)
    # beyond loopback without a token, on purpose (logged as a warning at start)
    open: bool = False


@dataclass(frozen=True)
class RolloutConfig:
    """Rollouts driven by the daemons (`lbsync rollout start`): whether this daemon may drive
    them, and the TTL of a driver's lease (another daemon takes over within it)."""

    drive: bool = True
    lease_ttl: float = 10.0


@dataclass(frozen=True)
class AnalysisConfig:
    """Where rollouts' metric gates read (`[analysis]`): a Prometheus, or none."""

    prometheus: str | None = None  # normalised by `analysis.prometheus_url`
    timeout: float = 5.0  # one query's
    window: float = 60.0  # the templates' rate window (`{window}`)


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    path: Path  # the file it was read from, for errors that name it
    targets: tuple[TargetConfig, ...]
    file_source: FileSourceConfig | None = None
    etcd_source: EtcdSourceConfig | None = None
    consul_source: ConsulSourceConfig | None = None
    source_order: tuple[str, ...] = ("file",)
    health_mode: HealthMode = HealthMode.PASSING
    min_wait: float = 0.2
    max_wait: float = 2.0
    # changes to servers alone applied at once from the changed services' lines (fastlane.py)
    fast_lane: bool = True
    api: ApiConfig = field(default_factory=ApiConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
