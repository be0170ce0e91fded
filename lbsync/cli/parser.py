"""The command line's arguments. `-c`, `--log-level` and `--log-format` may come before the
command or after it (`lbsync once -c lbsync.toml`), with the same meaning; given in both
places, the one after the command wins."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from lbsync import __version__
from lbsync.cli.logformat import FORMATS

DEFAULT_CONFIG = "lbsync.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _one_of(choices: tuple[str, ...], variable: str) -> Callable[[str], str]:
    """A value among `choices`. argparse checks `choices` only for what is on the command line,
    not for a default, and these defaults come from the environment; so the check is the
    option's type, which argparse applies to a string default too."""

    def checked(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(choices)} (from the option or {variable}), got {text!r}"
            )
        return text

    return checked


def _common(*, defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes; after a command they default to nothing, so the
    values given before it (or the environment's) stay."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default(Path(os.environ.get("LBSYNC_CONFIG", DEFAULT_CONFIG))),
        help="configuration file (default: $LBSYNC_CONFIG or ./lbsync.toml)",
    )
    common.add_argument(
        "--log-level",
        default=default(os.environ.get("LBSYNC_LOG_LEVEL", "info")),
        type=_one_of(LOG_LEVELS, "LBSYNC_LOG_LEVEL"),
        help=f"{', '.join(LOG_LEVELS)} (default: $LBSYNC_LOG_LEVEL or info)",
    )
    common.add_argument(
        "--log-format",
        default=default(os.environ.get("LBSYNC_LOG_FORMAT", "text")),
        type=_one_of(FORMATS, "LBSYNC_LOG_FORMAT"),
        help="text (default) or json: one JSON object per line ($LBSYNC_LOG_FORMAT)",
    )
    return common


def _register(register: argparse.ArgumentParser) -> None:
    register.add_argument("service")
    register.add_argument("instance_id", metavar="id")
    register.add_argument("--address", required=True)
    register.add_argument("--port", type=int, required=True)
    register.add_argument("--tag", action="append", default=[], help="repeatable")
    register.add_argument("--meta", action="append", default=[], help="KEY=VALUE, repeatable")
    register.add_argument("--weight", type=int, default=1)
    register.add_argument("--ttl", type=int, default=10, help="lease TTL in seconds (min 2)")


def _split(split: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    actions = split.add_subparsers(dest="action", required=True)
    get = actions.add_parser(
        "get", parents=[common], help="target and achieved shares, eligible instances"
    )
    get.add_argument("service")
    get.add_argument("--json", action="store_true")
    change = actions.add_parser("set", parents=[common], help="set group shares: blue=90 green=10")
    change.add_argument("service")
    change.add_argument("shares", nargs="+", metavar="GROUP=SHARE")
    promote = actions.add_parser("promote", parents=[common], help="100 %% to one group")
    promote.add_argument("service")
    promote.add_argument("group")
    for parser in (change, promote):
        parser.add_argument("--expect-revision", type=int, help="write only at this revision")
        parser.add_argument("--reason", default="", help="recorded in the history")
    shown = actions.add_parser("history", parents=[common], help="recorded changes, newest last")
    shown.add_argument("service")
    back = actions.add_parser(
        "rollback", parents=[common], help="back to the split before the last change"
    )
    back.add_argument("service")
    back.add_argument("--reason", default="")


def _rollout(rollout: argparse.ArgumentParser) -> None:
    rollout.add_argument(
        "words",
        nargs="+",
        metavar="start SERVICE | status SERVICE | pause|resume|promote|abort SERVICE | SERVICE",
    )
    rollout.add_argument("--to", help="the group whose share rises")
    rollout.add_argument("--steps", default="5,25,50,100")
    rollout.add_argument("--interval", default="30s")
    rollout.add_argument("--min-healthy", type=int, default=1)
    rollout.add_argument("--max-error-rate", type=float, default=0.05, help="0.05 = 5 %%")
    rollout.add_argument("--pause-at", default="", help="shares to pause before, e.g. 50")
    rollout.add_argument("--reason", default="")
    rollout.add_argument(
        "--foreground",
        action="store_true",
        help="drive the rollout from this process until it ends (`rollout SERVICE` does too)",
    )
    rollout.add_argument("--watch", action="store_true", help="`status`: follow until it ends")


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    root = argparse.ArgumentParser(
        prog="lbsync",
        description="Keep HAProxy and nginx configuration in step with etcd, Consul or a file.",
        parents=[_common(defaults=True)],
    )
    root.add_argument("--version", action="version", version=f"lbsync {__version__}")
    common = _common(defaults=False)
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", parents=[common], help="watch the sources and keep the targets in step"
    )
    commands.add_parser(
        "once", parents=[common], help="one cycle; exit 0 when every target is in step"
    )
    render = commands.add_parser(
        "render", parents=[common], help="print the rendered configuration"
    )
    render.add_argument("--target", help="target name (default: the first)")
    commands.add_parser(
        "check", parents=[common], help="check configuration, templates and rendered output"
    )
    _register(
        commands.add_parser(
            "register",
            parents=[common],
            help="register an instance in etcd under a lease while this runs",
        )
    )
    _split(
        commands.add_parser(
            "split", parents=[common], help="read or change a service's traffic split"
        ),
        common,
    )
    _rollout(
        commands.add_parser(
            "rollout",
            parents=[common],
            help="shift traffic step by step behind health and error gates, driven by the "
            "daemons (`rollout start`) or this process (`--foreground`)",
        )
    )
    status = commands.add_parser(
        "status", parents=[common], help="ask a running daemon what it believes and did"
    )
    status.add_argument("--api", help="the daemon's API URL (default: from [api] listen)")
    status.add_argument("--json", action="store_true", help="print the /v1/status document")
    health = commands.add_parser(
        "health",
        parents=[common],
        help="exit 0 when a running daemon answers /healthz (--ready: /readyz)",
    )
    health.add_argument("--api", help="the daemon's API URL (default: from [api] listen)")
    health.add_argument("--ready", action="store_true", help="ask /readyz instead")
    return root
