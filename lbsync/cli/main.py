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

from lbsync.cli import commands, logformat, traffic
from lbsync.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lbsync.cli.parser import parser
from lbsync.cli.register import UsageError, register_command
from lbsync.cli.status import (
    StatusUnavailable,
    fetch_status,
    format_status,
    in_step,
    url_from_listen,
)
from lbsync.config import ConfigError, load
from lbsync.kv.store import StoreError
from lbsync.pipeline.render import RenderError
from lbsync.sources.follow import SourceUnusable
from lbsync.traffic.splits import ConcurrentChange, SplitError


async def _status(arguments: argparse.Namespace) -> int:
    # With --api the configuration is optional; when it exists, its API token is sent.
    config = None if arguments.api and not arguments.config.exists() else load(arguments.config)
    url = arguments.api or url_from_listen(config.api.listen if config else "")
    document = await fetch_status(url, token=config.api.token if config else None)
    if arguments.json:
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(format_status(document, url))
    return EXIT_OK if in_step(document) else EXIT_FAILED


async def _command(arguments: argparse.Namespace) -> int:
    if arguments.command == "status":  # needs no configuration when --api is given
        return await _status(arguments)
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
            return await traffic.rollout_command(config, arguments)
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
