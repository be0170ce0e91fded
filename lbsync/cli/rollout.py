"""`lbsync rollout ...`: start a rollout for the daemons to drive, or drive one here
(`--foreground`, and the older `rollout SERVICE --to GROUP`); follow it (`status [--watch]`);
pause, resume, promote or abort it from anywhere. Every command but the foreground one returns
at once: the record in `services/<svc>/rollout` is the rollout (`traffic/rollout/record.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from lbsync.cli.exits import EXIT_FAILED, EXIT_OK
from lbsync.cli.progress import Progress
from lbsync.config import Config, ConfigError, parse_duration
from lbsync.daemon.api.encode import latest_readings
from lbsync.haproxy.stats import StatsReader
from lbsync.kv.store import Store, StoreError, open_store
from lbsync.model.keys import driver_key, rollout_key
from lbsync.model.text import shown
from lbsync.sources.build import sources_for
from lbsync.sources.follow import Following, SourceUnusable
from lbsync.traffic.rollout.driver import Rollout
from lbsync.traffic.rollout.gates import GateFailed
from lbsync.traffic.rollout.inputs import FollowedStates
from lbsync.traffic.rollout.judges import judges_for
from lbsync.traffic.rollout.record import DAEMON, Aborted, RolloutRecord, request
from lbsync.traffic.rollout.spec import ACTIVE, Phase, RolloutSpec, parse_steps, phase_of
from lbsync.traffic.splits import Current, SplitError, known_groups, read, require_service

REQUESTS = {
    "resume": Phase.RUNNING,
    "pause": Phase.PAUSED,
    "promote": Phase.PROMOTING,
    "abort": Phase.ABORTING,
}
WATCH_EVERY = 1.0


def _spec(arguments: argparse.Namespace, service: str) -> RolloutSpec:
    try:
        interval = parse_duration(arguments.interval, "--interval")
    except ConfigError as error:
        raise SplitError(str(error)) from error
    # the gates compare with these: a nan or a negative count would hold every time
    if not 0 <= arguments.max_error_rate <= 1:
        raise SplitError(
            "--max-error-rate: must be a fraction from 0 to 1 (0.05 = 5 %), "
            f"got {arguments.max_error_rate}"
        )
    if arguments.min_healthy < 0:
        raise SplitError(f"--min-healthy: must be 0 or more, got {arguments.min_healthy}")
    return RolloutSpec(
        service=service,
        to=arguments.to,
        steps=parse_steps(arguments.steps),
        interval=interval,
        min_healthy=arguments.min_healthy,
        max_error_rate=arguments.max_error_rate,
        pause_at=parse_steps(arguments.pause_at, "--pause-at") if arguments.pause_at else (),
        reason=arguments.reason,
        metrics=tuple(arguments.metric),
        hooks=tuple(arguments.hook),
        hook_headers=tuple(arguments.hook_header),
        failure_limit=arguments.failure_limit,
        inconclusive_limit=arguments.inconclusive_limit,
    )


async def rollout_command(config: Config, arguments: argparse.Namespace) -> int:
    """`lbsync rollout start|status|pause|resume|promote|abort SERVICE`, or
    `rollout SERVICE --to GROUP` (in the foreground)."""
    words: list[str] = arguments.words
    if len(words) == 2 and words[0] in REQUESTS:
        async with open_store(config) as store:
            print(f"{words[1]}: {await request(store, words[1], REQUESTS[words[0]])}")
        return EXIT_OK
    if len(words) == 2 and words[0] == "status":
        async with open_store(config) as store:
            return await _status(store, words[1], watch=arguments.watch)
    if len(words) == 2 and words[0] == "start" and arguments.to:
        spec = _spec(arguments, words[1])
        judges_for(spec, config.analysis)  # every gate and hook understood before anything
        if arguments.foreground:
            return await _foreground(config, spec)
        return await _start(config, spec)
    if len(words) == 1 and arguments.to:
        spec = _spec(arguments, words[0])
        judges_for(spec, config.analysis)
        return await _foreground(config, spec)
    raise SplitError(
        "usage: lbsync rollout start SERVICE --to GROUP [--steps ...] [--foreground], "
        "or rollout status|pause|resume|promote|abort SERVICE"
    )


async def _known(store: Store, states: FollowedStates, spec: RolloutSpec) -> Current:
    """The service's split, once its group is known to the sources; SplitError otherwise."""
    current = await read(store, spec.service)
    service = require_service(states.state(), spec.service)
    if spec.to not in known_groups(service, current.value):
        raise SplitError(f"unknown group {spec.to} for service {spec.service}")
    return current


async def _start(config: Config, spec: RolloutSpec) -> int:
    """Write the rollout's record for the daemons to drive, and return."""
    async with open_store(config) as store, Following(sources_for(config)) as following:
        states = FollowedStates(following, config.health_mode)
        current = await _known(store, states, spec)
        record = RolloutRecord(
            store, spec, current.value, split_revision=current.revision, mode=DAEMON
        )
        await record.claim()
    print(
        f"rollout of {spec.service} to {spec.to} started; the daemons drive it "
        f"(lbsync rollout status {spec.service} --watch)"
    )
    return EXIT_OK


async def _foreground(config: Config, spec: RolloutSpec) -> int:
    """Drive the rollout from this process, until it ends (Ctrl-C reverts it)."""
    async with open_store(config) as store, Following(sources_for(config)) as following:
        states = FollowedStates(following, config.health_mode)
        await _known(store, states, spec)
        rollout = Rollout(
            spec=spec,
            store=store,
            states=states,
            stats=StatsReader(config),
            progress=Progress(sys.stdout, interactive=sys.stdout.isatty()),
            judges=judges_for(spec, config.analysis),
        )
        try:
            await rollout.run()
        except (GateFailed, Aborted, SourceUnusable, StoreError) as error:
            print(f"rollout of {spec.service} stopped: {error}", file=sys.stderr)
            return EXIT_FAILED
    print(f"rollout of {spec.service} to {spec.to} complete")
    return EXIT_OK


def describe(service: str, fields: dict[str, Any], *, driver: str | None, now: float) -> str:
    """One line on a rollout: phase, step, share, who drives it and since when it said so."""
    steps = _list(fields.get("steps"))
    step = fields.get("step", 0)
    share = fields.get("share")
    updated = fields.get("updated")
    parts = [
        f"{service}: {shown(str(fields.get('phase')))}",
        f"to {shown(str(fields.get('to')))}",
        f"step {step}/{len(steps)}",
    ]
    if isinstance(share, int | float) and not isinstance(share, bool):
        parts.append(f"at {share:g}%")
    if fields.get("mode") == DAEMON:
        parts.append(f"driven by {shown(driver)}" if driver else "no daemon drives it now")
    if isinstance(updated, int | float) and not isinstance(updated, bool):
        parts.append(f"written {max(0.0, now - updated):.0f}s ago")
    if fields.get("message"):
        parts.append(shown(str(fields["message"]), 300))
    return ", ".join(parts)


def readings_of(fields: dict[str, Any]) -> list[str]:
    """The last reading of each metric gate, one line each, made safe to print."""
    lines = []
    for reading in latest_readings(fields.get("readings")):
        value = "no value" if reading["value"] is None else reading["value"]
        error = f": {reading['error']}" if reading["error"] else ""
        lines.append(f"  metric {reading['metric']} = {value} ({reading['verdict']}{error})")
    return lines


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def timeline(fields: dict[str, Any]) -> list[str]:
    """The record's events, one line each (time, who, what), made safe to print."""
    events = _list(fields.get("events"))
    lines = []
    for event in events:
        if not isinstance(event, dict):
            continue
        at = event.get("at")
        when = (
            time.strftime("%H:%M:%S", time.localtime(at))
            if isinstance(at, int | float) and not isinstance(at, bool)
            else "--:--:--"
        )
        what, by = shown(str(event.get("what")), 300), shown(str(event.get("by")))
        lines.append(f"  {when}  {what}  ({by})")
    return lines


async def _read(store: Store, service: str) -> tuple[dict[str, Any], str | None]:
    found = await store.get(rollout_key(service))
    if found is None:
        raise SplitError(f"no rollout of {service} has been recorded")
    try:
        fields = json.loads(found.value)
    except (ValueError, RecursionError) as error:
        raise SplitError(f"the rollout record of {service} is not JSON") from error
    if not isinstance(fields, dict):
        raise SplitError(f"the rollout record of {service} is not a JSON object")
    driver = await store.get(driver_key(service))
    return fields, driver.value if driver is not None else None


async def _status(store: Store, service: str, *, watch: bool) -> int:
    """The rollout's state and timeline; with `watch`, new events as they come, until it
    ends (on a terminal the state line is rewritten in place)."""
    fields, driver = await _read(store, service)
    for line in timeline(fields):
        print(line)
    for line in readings_of(fields):
        print(line)
    if not watch:
        print(describe(service, fields, driver=driver, now=time.time()))
        return EXIT_OK
    progress = Progress(sys.stdout, interactive=sys.stdout.isatty())
    seen = len(timeline(fields))
    while phase_of(fields.get("phase")) in ACTIVE:
        progress.status(describe(service, fields, driver=driver, now=time.time()))
        await asyncio.sleep(WATCH_EVERY)
        fields, driver = await _read(store, service)
        lines = timeline(fields)
        for line in lines[seen:] if len(lines) >= seen else lines:
            progress.line(line)
        seen = len(lines)
    progress.line(describe(service, fields, driver=driver, now=time.time()))
    return EXIT_OK if fields.get("phase") == Phase.DONE.value else EXIT_FAILED
