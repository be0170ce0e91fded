"""lbsync's main job from the command line: `run` (the daemon), `once` (one cycle), `render`
(print, no side effects) and `check` (everything through the real validator)."""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

from lbsync.cli.exits import EXIT_FAILED, EXIT_OK
from lbsync.cli.reading import desired_state, stop_on_signals
from lbsync.config import Config, ConfigError, TargetConfig, TargetKind
from lbsync.daemon import collector
from lbsync.daemon.daemon import Daemon
from lbsync.haproxy import fdlimit
from lbsync.haproxy.stats import StatsReader
from lbsync.kv.store import locks_for, open_store
from lbsync.pipeline import fsio, validate
from lbsync.pipeline.reconcile import TargetRunner
from lbsync.pipeline.render import RenderError
from lbsync.sources.follow import read_catalog
from lbsync.traffic.rollout.drivers import Drivers

# How long a thread holds the interpreter before another may take it (Python's default: 5 ms).
# The daemon renders whole files and encodes the status in worker threads; at 1 ms the event
# loop (sources, the fast lane, the API) waits at most that long for its turn.
SWITCH_INTERVAL = 0.001


async def run(config: Config) -> int:
    """`lbsync run`: the daemon, until SIGTERM or SIGINT, driving the rollouts the daemons are
    to drive (`traffic/rollout/drivers.py`) when it reads etcd or Consul."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    collector.tune()
    daemon = Daemon(config)
    stop = stop_on_signals()
    if not config.rollout.drive or (config.etcd_source is None and config.consul_source is None):
        await daemon.run(stop)
        return EXIT_OK
    async with open_store(config) as store:
        locks = locks_for(store)
        assert locks is not None  # an etcd or a Consul store
        drivers = Drivers(
            store=store,
            locks=locks,
            state=daemon.desired_state,
            raw=daemon.raw_keys,
            stats=StatsReader(config),
            ttl=config.rollout.lease_ttl,
            analysis=config.analysis,
        )
        await daemon.run(stop, beside=(drivers.run,))
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


def _hard_nofile() -> int | None:
    """The hard `nofile` limit lbsync runs under (None: unlimited)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def _fd_shortfall(target: TargetConfig, text: str) -> str | None:
    """What `check` says of a HAProxy file whose `maxconn` (or `ulimit-n`) asks for more file
    descriptors than the limits here allow: HAProxy started in the same limits would refuse
    to start, and `haproxy -c` does not see it (docs/configuration.md)."""
    launch = fdlimit.launch_of(target.reload)
    need = fdlimit.demand(text, cpus=len(os.sched_getaffinity(0)), launch=launch)
    short = None if need is None else fdlimit.shortfall(need, _hard_nofile())
    return None if short is None else _advice(target, short)


def _advice(target: TargetConfig, short: fdlimit.Shortfall) -> str:
    """The shortfall, and the three ways out of it."""
    need = short.demand
    name = need.setting.split()[0]
    from_vars = name == "maxconn" and "maxconn" in target.vars
    knob, setting = (
        ("vars.maxconn", f"{need.setting} (vars.maxconn)") if from_vars else (name, need.setting)
    )
    at_most = f" to {short.largest_maxconn} at most" if short.largest_maxconn else ""
    if short.by_fd_hard_limit:
        limit, raise_it = "fd-hard-limit", "raise fd-hard-limit (vars.fd_hard_limit)"
    else:
        limit = "the hard nofile limit here"
        raise_it = (
            f"raise the hard limit to {need.needed} (`ulimit -Hn`, compose `ulimits: nofile`, "
            f"`docker run` or `podman run --ulimit nofile={need.needed}:{need.needed}`)"
        )
    return (
        f"{target.name}: {setting} needs {need.needed} file descriptors, but {limit} is "
        f"{short.limit}: HAProxy would refuse to start\n"
        f"  lower {knob}{at_most}, {raise_it}, or leave {knob} unset so that HAProxy derives "
        "maxconn from the limit"
    )


async def check(config: Config) -> int:
    """`lbsync check`: refusals, template errors, the validator's verdict on each target, and
    a HAProxy `maxconn` the file-descriptor limits here cannot hold."""
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
        if target.kind is TargetKind.HAPROXY and (short := _fd_shortfall(target, text.decode())):
            print(short)
            failed = True
    return EXIT_FAILED if failed else EXIT_OK
