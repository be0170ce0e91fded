"""lbsync's main job from the command line: `run` (the daemon), `once` (one cycle), `render`
(print, no side effects) and `check` (everything through the real validator)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lbsync.cli.exits import EXIT_FAILED, EXIT_OK
from lbsync.cli.reading import desired_state, stop_on_signals
from lbsync.config import Config, ConfigError
from lbsync.daemon.daemon import Daemon
from lbsync.pipeline import fsio, validate
from lbsync.pipeline.reconcile import TargetRunner
from lbsync.pipeline.render import RenderError
from lbsync.sources.follow import read_catalog


async def run(config: Config) -> int:
    """`lbsync run`: the daemon, until SIGTERM or SIGINT."""
    await Daemon(config).run(stop_on_signals())
    return EXIT_OK


async def once(config: Config) -> int:
    """`lbsync once`: one cycle; fails when a target is not in step."""
    daemon = Daemon(config)
    for runner in daemon.runners:
        fsio.remove_stale_stages(runner.config.dest)
    _, reports = await daemon.cycle(await read_catalog(daemon.sources))
    return EXIT_FAILED if any(report.failed for report in reports) else EXIT_OK


async def render(config: Config, target_name: str | None) -> int:
    """`lbsync render`: the rendered file on stdout, refusals on stderr."""
    targets = [t for t in config.targets if target_name in (None, t.name)]
    if not targets:
        raise ConfigError(f"--target: no target named {target_name!r}")
    state = await desired_state(config)
    for rejection in state.rejected:
        print(f"refused: {rejection}", file=sys.stderr)
    sys.stdout.write(TargetRunner(targets[0]).render(state))
    return EXIT_OK


async def check(config: Config) -> int:
    """`lbsync check`: refusals, template errors and the validator's verdict on each target."""
    state = await desired_state(config)
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
