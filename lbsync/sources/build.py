"""The configured sources, built once from the configuration, in the order that decides which
source wins a key two of them hold."""

from __future__ import annotations

from lbsync.config import Config, ConfigError, TlsError
from lbsync.sources.consul import ConsulSource
from lbsync.sources.etcd import EtcdSource
from lbsync.sources.file import FileSource
from lbsync.sources.protocol import Source


def sources_for(config: Config) -> list[Source]:
    """Every configured source; ConfigError names an address or TLS file that cannot be used."""
    sources: list[Source] = []
    for kind in config.source_order:
        try:
            if kind == "file" and config.file_source is not None:
                sources.append(FileSource(config.file_source.path))
            elif kind == "etcd" and config.etcd_source is not None:
                sources.append(EtcdSource(config.etcd_source))
            elif kind == "consul" and config.consul_source is not None:
                sources.append(ConsulSource(config.consul_source))
        except (TlsError, ValueError) as error:
            raise ConfigError(f"{config.path}: source.{kind}: {error}") from error
    return sources
