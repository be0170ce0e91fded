"""The command line: run, once, render, check. The only place that exits.

Exit status: 0 success, 1 the work failed (a target not applied, a rejected entry in `check`),
2 the configuration or the command line is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lbsync import __version__, fsio, logformat, traffic_cli, validate
from lbsync.api.client import (
    StatusUnavailable,
    fetch_status,
    format_status,
    in_step,
    url_from_listen,
)
from lbsync.config import Config, ConfigError, load
from lbsync.daemon import Daemon, first_snapshots, sources_for
from lbsync.model.catalog import merge
from lbsync.model.checks import ContractError
from lbsync.model.values import Catalog
from lbsync.reconcile import TargetRunner
from lbsync.register import instance_value, register
from lbsync.render import RenderError
from lbsync.sources.etcd.source import EtcdSource
from lbsync.splits import ConcurrentChange, SplitError
from lbsync.state import DesiredState, build
from lbsync.store import StoreError


class UsageError(Exception):
    """A command-line argument that cannot be used."""


class SourceError(Exception):
    """A source that cannot give a usable snapshot for a one-shot command."""


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
FIRST_SNAPSHOT_TIMEOUT = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbsync",
        description="Keep HAProxy and nginx configuration in step with etcd, Consul or a file.",
    )
    parser.add_argument("--version", action="version", version=f"lbsync {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get("LBSYNC_CONFIG", "lbsync.toml")),
        help="configuration file (default: $LBSYNC_CONFIG or ./lbsync.toml)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LBSYNC_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("LBSYNC_LOG_FORMAT", "text"),
        choices=logformat.FORMATS,
        help="text (default) or json: one JSON object per line",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="watch the sources and keep the targets in step")
    commands.add_parser("once", help="one cycle; exit 0 when every target is in step")
    render = commands.add_parser("render", help="print the rendered configuration")
    render.add_argument("--target", help="target name (default: the first)")
    commands.add_parser("check", help="check configuration, templates and rendered output")
    register = commands.add_parser(
        "register", help="register an instance in etcd under a lease while this runs"
    )
    register.add_argument("service")
    register.add_argument("instance_id", metavar="id")
    register.add_argument("--address", required=True)
    register.add_argument("--port", type=int, required=True)
    register.add_argument("--tag", action="append", default=[], help="repeatable")
    register.add_argument("--meta", action="append", default=[], help="KEY=VALUE, repeatable")
    register.add_argument("--weight", type=int, default=1)
    register.add_argument("--ttl", type=int, default=10, help="lease TTL in seconds (min 2)")
    traffic_cli.add_parsers(commands)
    status = commands.add_parser("status", help="ask a running daemon what it believes and did")
    status.add_argument("--api", help="the daemon's API URL (default: from [api] listen)")
    status.add_argument("--json", action="store_true", help="print the /v1/status document")
    return parser


async def _catalog(config: Config) -> Catalog:
    """One snapshot of every source, merged; an unusable source is an error here."""
    snapshots = await first_snapshots(sources_for(config), FIRST_SNAPSHOT_TIMEOUT)
    unusable = [snapshot.error for snapshot in snapshots if not snapshot.usable]
    if unusable:
        raise SourceError("; ".join(str(error) for error in unusable))
    return merge(snapshots)


async def _desired(config: Config) -> DesiredState:
    return build(await _catalog(config), config.health_mode)


async def _run(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    await Daemon(config).run(stop)
    return EXIT_OK


async def _once(config: Config) -> int:
    daemon = Daemon(config)
    for runner in daemon.runners:
        fsio.remove_stale_stages(runner.config.dest)
    _, reports = await daemon.cycle(await _catalog(config))
    return EXIT_FAILED if any(report.failed for report in reports) else EXIT_OK


async def _render(config: Config, target_name: str | None) -> int:
    targets = [t for t in config.targets if target_name in (None, t.name)]
    if not targets:
        raise ConfigError(f"--target: no target named {target_name!r}")
    state = await _desired(config)
    for rejection in state.rejected:
        print(f"refused: {rejection}", file=sys.stderr)
    sys.stdout.write(TargetRunner(targets[0]).render(state))
    return EXIT_OK


async def _check(config: Config) -> int:
    state = await _desired(config)
    failed = False
    for rejection in state.rejected:
        print(f"refused: {rejection}")
        failed = True
    for target in config.targets:
        try:
            text = TargetRunner(target).render(state).encode()
        except RenderError as error:
            print(f"{target.name}: {error}")
            failed = True
            continue
        directory = target.dest.parent if target.dest.parent.is_dir() else None
        with tempfile.TemporaryDirectory(dir=directory, prefix=".lbsync-check-") as scratch:
            staged = fsio.stage(Path(scratch) / target.dest.name, text, target.mode)
            verdict = await validate.run(target.validate, staged, timeout=target.validate_timeout)
        print(f"{target.name}: {'valid' if verdict.ok else 'INVALID'} ({target.template})")
        if not verdict.ok:
            print(verdict.summary)
            failed = True
    return EXIT_FAILED if failed else EXIT_OK


async def _register(config: Config, arguments: argparse.Namespace) -> int:
    if config.etcd_source is None:
        raise ConfigError("source.etcd: `register` needs an etcd source")
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
    if arguments.ttl < 2:
        raise UsageError("register: --ttl must be at least 2 seconds")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    await register(
        EtcdSource.from_config(config.etcd_source),
        service=arguments.service,
        instance_id=arguments.instance_id,
        value=value,
        ttl=arguments.ttl,
        stop=stop,
    )
    return EXIT_OK


async def _status(arguments: argparse.Namespace) -> int:
    url = arguments.api or url_from_listen(load(arguments.config).api_listen)
    document = await fetch_status(url)
    if arguments.json:
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(format_status(document, url))
    return EXIT_OK if in_step(document) else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lbsync` command."""
    arguments = _parser().parse_args(argv)
    logformat.configure(level=arguments.log_level, form=arguments.log_format)
    try:
        if arguments.command == "status":  # needs no configuration when --api is given
            return asyncio.run(_status(arguments))
        config = load(arguments.config)
        match arguments.command:
            case "run":
                return asyncio.run(_run(config))
            case "once":
                return asyncio.run(_once(config))
            case "render":
                return asyncio.run(_render(config, arguments.target))
            case "register":
                return asyncio.run(_register(config, arguments))
            case "split":
                return asyncio.run(traffic_cli.split_command(config, arguments))
            case "rollout":
                return asyncio.run(traffic_cli.rollout_command(config, arguments))
            case _:
                return asyncio.run(_check(config))
    except ConcurrentChange as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigError, UsageError, SplitError) as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SourceError, RenderError, TimeoutError, StoreError, StatusUnavailable) as error:
        print(f"lbsync: {error or 'timed out waiting for a source'}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
