"""The configuration: `lbsync.toml` read, overlaid with `LBSYNC_*`, checked into frozen values.

`schema` holds the values, `load` reads the file, `sources` and `targets` read their tables,
`environment` the overrides, `api` and `listen` the status API's, `analysis` the Prometheus
that rollouts' metric gates query, `endpoints` and `tls` the one rule for every store client.
"""

from lbsync.config.endpoints import CONSUL_PORTS, ETCD_PORTS, Endpoint, parse_endpoint
from lbsync.config.listen import is_loopback, parse_listen
from lbsync.config.load import load, parse
from lbsync.config.reader import parse_duration
from lbsync.config.schema import (
    AnalysisConfig,
    ApiConfig,
    Config,
    ConfigError,
    ConsulSourceConfig,
    EtcdSourceConfig,
    FileSourceConfig,
    ReloadConfig,
    ReloadMethod,
    RolloutConfig,
    SourceConfig,
    TargetConfig,
    TargetKind,
)
from lbsync.config.targets import TEMPLATES_DIR
from lbsync.config.tls import TlsError, TlsFiles

__all__ = [
    "CONSUL_PORTS",
    "ETCD_PORTS",
    "TEMPLATES_DIR",
    "AnalysisConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "ConsulSourceConfig",
    "Endpoint",
    "EtcdSourceConfig",
    "FileSourceConfig",
    "ReloadConfig",
    "ReloadMethod",
    "RolloutConfig",
    "SourceConfig",
    "TargetConfig",
    "TargetKind",
    "TlsError",
    "TlsFiles",
    "is_loopback",
    "load",
    "parse",
    "parse_duration",
    "parse_endpoint",
    "parse_listen",
]
