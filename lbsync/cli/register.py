"""`lbsync register`: an instance in etcd under a lease while the command runs."""

from __future__ import annotations

import argparse

from lbsync.cli.exits import EXIT_OK, UsageError
from lbsync.cli.reading import stop_on_signals
from lbsync.config import Config, ConfigError, TlsError
from lbsync.kv.etcd import EtcdClient
from lbsync.model.checks import ContractError
from lbsync.traffic.register import instance_value, register

MIN_TTL = 2


async def register_command(config: Config, arguments: argparse.Namespace) -> int:
    """Check the instance, then keep it registered until SIGTERM or SIGINT."""
    etcd = config.etcd_source
    if etcd is None:
        raise ConfigError("source.etcd: `register` needs an etcd source")
    malformed = [item for item in arguments.meta if "=" not in item]
    if malformed:
        raise UsageError(f"register: --meta {malformed[0]!r}: expected KEY=VALUE")
    meta = dict(item.partition("=")[::2] for item in arguments.meta)
    try:
        value = instance_value(
            service=arguments.service,
            instance_id=arguments.instance_id,
            address=arguments.address,
            port=arguments.port,
            tags=arguments.tag,
            meta=meta,
            weight=arguments.weight,
        )
    except ContractError as error:
        raise UsageError(f"register: {error}") from error
    if arguments.ttl < MIN_TTL:
        raise UsageError(f"register: --ttl must be at least {MIN_TTL} seconds")
    try:
        client = EtcdClient.from_config(etcd)
    except (TlsError, ValueError) as error:
        raise ConfigError(f"source.etcd: {error}") from error
    await register(
        client,
        prefix=etcd.prefix,
        service=arguments.service,
        instance_id=arguments.instance_id,
        value=value,
        ttl=arguments.ttl,
        stop=stop_on_signals(),
    )
    return EXIT_OK
