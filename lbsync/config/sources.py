"""The `[source.*]` tables: the services file, etcd, Consul."""

from __future__ import annotations

import re
from collections.abc import Mapping

from lbsync.config.endpoints import CONSUL_PORTS, ETCD_PORTS, CredentialsInAddress, normalise
from lbsync.config.reader import Reader
from lbsync.config.schema import (
    ConfigError,
    ConsulSourceConfig,
    EtcdSourceConfig,
    FileSourceConfig,
)
from lbsync.config.tls import TlsError, TlsFiles

TLS_SETTINGS = frozenset({"ca_file", "cert_file", "key_file"})
MAX_CONSUL_WAIT = 600.0
MAX_DATACENTERS = 16  # the instances' failover tiers (`model.contract.MAX_FAILOVER_TIER`)
DATACENTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # Consul's datacenter names


def file_source(reader: Reader) -> FileSourceConfig:
    """`[source.file]`."""
    reader.check_known({"path"})
    return FileSourceConfig(path=reader.path("path"))


def tls_files(reader: Reader) -> TlsFiles:
    """`ca_file`, `cert_file`, `key_file` under the one TLS rule (see `tls.py`)."""
    try:
        return TlsFiles(
            ca_file=reader.optional_path("ca_file"),
            cert_file=reader.optional_path("cert_file"),
            key_file=reader.optional_path("key_file"),
        )
    except TlsError as error:
        raise ConfigError(f"{reader.name('key_file')}: {error}") from error


def _endpoints(
    reader: Reader,
    key: str,
    *,
    default: tuple[str, ...],
    ports: Mapping[str, int],
    credentials: str,
) -> tuple[str, ...]:
    """The addresses under `key` (a list; `address`: one string, consul-template's name); one
    with `user:password@` is refused, shown without it, with `credentials` saying where they
    belong."""
    texts = (reader.text(key),) if key == "address" else reader.argv(key, default)
    if not texts:
        raise ConfigError(f"{reader.name(key)}: a list of http(s)://host:port URLs")
    try:
        return tuple(normalise(text, ports=ports, what="address") for text in texts)
    except CredentialsInAddress as error:
        raise ConfigError(
            f"{reader.name(key)}: {error.shown!r} (shown without its user:password@) must not "
            f"carry credentials: {credentials}"
        ) from error  # its text, too, shows the address without the userinfo
    except ValueError as error:
        raise ConfigError(
            f"{reader.name(key)}: a list of http(s)://host:port URLs: {error}"
        ) from error


def etcd_source(reader: Reader) -> EtcdSourceConfig:
    """`[source.etcd]`."""
    reader.check_known(
        {"endpoints", "prefix", "username", "password", "password_file"}
        | TLS_SETTINGS
        | {"request_timeout", "idle_timeout"}
    )
    endpoints = _endpoints(
        reader,
        "endpoints",
        default=(),
        ports=ETCD_PORTS,
        credentials=f"set {reader.name('username')} and {reader.name('password_file')}",
    )
    username = reader.optional_text("username")
    password = reader.secret("password")
    if (username is None) != (password is None):
        raise ConfigError(f"{reader.name('username')}: username and password go together")
    return EtcdSourceConfig(
        endpoints=endpoints,
        prefix=reader.prefix(),
        username=username,
        password=password,
        tls=tls_files(reader),
        request_timeout=reader.duration("request_timeout", 5.0),
        idle_timeout=reader.duration("idle_timeout", 30.0),
    )


def consul_source(reader: Reader) -> ConsulSourceConfig:
    """`[source.consul]`."""
    reader.check_known(
        {"addresses", "address", "prefix", "token", "token_file", "datacenter", "wait"}
        | {"fabio_config", "datacenters", "config_entries"}
        | TLS_SETTINGS
    )
    if "address" in reader.table and "addresses" in reader.table:
        raise ConfigError(f"{reader.name('address')}: give address or addresses, not both")
    addresses = _endpoints(
        reader,
        "address" if "address" in reader.table else "addresses",
        default=("http://127.0.0.1:8500",),
        ports=CONSUL_PORTS,
        credentials=f"put the ACL token in the file named by {reader.name('token_file')}",
    )
    wait = reader.duration("wait", 30.0)
    if not 0 < wait <= MAX_CONSUL_WAIT:
        raise ConfigError(f"{reader.name('wait')}: between 0 and 10 minutes")
    datacenters = _datacenters(reader)
    return ConsulSourceConfig(
        addresses=addresses,
        prefix=reader.prefix(),
        token=reader.secret("token"),
        datacenter=datacenters[0] if datacenters else reader.optional_text("datacenter"),
        datacenters=datacenters,
        tls=tls_files(reader),
        wait=wait,
        fabio_config=_kv_key(reader, "fabio_config"),
        config_entries=reader.flag("config_entries", False),
    )


def _datacenters(reader: Reader) -> tuple[str, ...]:
    """`datacenters`: the local datacenter first, then the ones to fail over to, in order."""
    if "datacenters" not in reader.table:
        return ()
    if "datacenter" in reader.table:
        raise ConfigError(
            f"{reader.name('datacenters')}: give datacenter or datacenters, not both "
            "(the first of datacenters is the local one)"
        )
    names = reader.argv("datacenters", ())
    if not names:
        raise ConfigError(f"{reader.name('datacenters')}: name the local datacenter at least")
    for name in names:
        if DATACENTER_RE.fullmatch(name) is None:
            raise ConfigError(
                f"{reader.name('datacenters')}: {name!r} is not a datacenter name "
                "(letters, digits, '_' or '-')"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{reader.name('datacenters')}: a datacenter is named twice")
    if len(names) > MAX_DATACENTERS:
        raise ConfigError(f"{reader.name('datacenters')}: at most {MAX_DATACENTERS}")
    return names


def _kv_key(reader: Reader, key: str) -> str | None:
    """A KV key's name (printable, no leading `/`, no trailing `/`), or None when absent."""
    value = reader.optional_text(key)
    if value is not None and (
        not value.isprintable() or value.startswith("/") or value.endswith("/")
    ):
        raise ConfigError(f"{reader.name(key)}: a key name such as fabio/config")
    return value
