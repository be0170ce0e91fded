"""`lbsync`: parse the command line, run the command, map its errors to exit statuses.

Exit status (`exits`): 0 success, 1 the work failed (a target not applied, a rejected entry in
`check`, a reverted rollout, a source or the store unreachable), 2 the configuration or the
command line is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from lbsync.cli import commands, health, logformat, rollout, traffic
from lbsync.cli.apiurl import StatusUnavailable, api_url, url_from_listen
from lbsync.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from lbsync.cli.parser import parser
from lbsync.cli.register import register_command
from lbsync.cli.status import fetch_status, format_status, in_step
from lbsync.config import Config, ConfigError, load
from lbsync.kv.store import StoreError
from lbsync.pipeline.render import RenderError
from lbsync.sources.follow import SourceUnusable
from lbsync.traffic.splits import ConcurrentChange, SplitError


def _daemon_url(arguments: argparse.Namespace) -> tuple[str, Config | None]:
    """The daemon's API URL: `--api`, else the configuration's `[api] listen` (with --api the
    configuration is optional; when it exists, its API token is sent)."""
    config = None if arguments.api and not arguments.config.exists() else load(arguments.config)
    if arguments.api:
        return api_url(arguments.api), config
    return url_from_listen(config.api.listen if config else ""), config


async def _status(arguments: argparse.Namespace) -> int:
    url, config = _daemon_url(arguments)
    document = await fetch_status(url, token=config.api.token if config else None)
    try:
        text = (
            json.dumps(document, indent=2) + "\n"
            if arguments.json
            else format_status(document, url)
        )
        answer = EXIT_OK if in_step(document) else EXIT_FAILED
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # fields of other shapes
        raise StatusUnavailable(f"{url}: not an lbsync status document ({error!r})") from error
    sys.stdout.write(text)
    return answer


async def _command(arguments: argparse.Namespace) -> int:
    if arguments.command == "status":  # needs no configuration when --api is given
        return await _status(arguments)
    if arguments.command == "health":
        return health.check(arguments.config, arguments.api, ready=arguments.ready)
    config = load(arguments.config)
    match arguments.command:
        case "run":
            return await commands.run(config)
        case "once":
            return await commands.once(config)
        case "render":
            return await commands.render(config, arguments.target)
        case "register":
            return await register_command(config, arguments)
        case "split":
            return await traffic.split_command(config, arguments)
        case "rollout":
            return await rollout.rollout_command(config, arguments)
        case _:
            return await commands.check(config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lbsync` command."""
    arguments = parser().parse_args(argv)
    logformat.configure(level=arguments.log_level, form=arguments.log_format)
    try:
        return asyncio.run(_command(arguments))
    except ConcurrentChange as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigError, UsageError, SplitError) as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SourceUnusable, RenderError, StoreError, StatusUnavailable) as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
