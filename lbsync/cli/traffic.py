"""The traffic-shifting commands: `lbsync split ...` and `lbsync rollout ...`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lbsync.cli.exits import EXIT_FAILED, EXIT_OK
from lbsync.cli.progress import Progress
from lbsync.cli.reading import desired_state
from lbsync.config import Config, ConfigError, parse_duration
from lbsync.core.state import DesiredState
from lbsync.haproxy.stats import StatsReader
from lbsync.kv.store import StoreError, open_store
from lbsync.sources.build import sources_for
from lbsync.sources.follow import Following, SourceUnusable
from lbsync.traffic.rollout.driver import FollowedStates, Rollout
from lbsync.traffic.rollout.gates import GateFailed
from lbsync.traffic.rollout.record import Aborted, request
from lbsync.traffic.rollout.spec import Phase, RolloutSpec, parse_steps
from lbsync.traffic.splits import (
    SplitError,
    history,
    known_groups,
    parse_assignments,
    promoted,
    read,
    require_service,
    rollback,
    with_groups,
    write,
)

CONTROL_WORDS = {"resume": Phase.RUNNING, "abort": Phase.ABORTING}


async def split_command(config: Config, arguments: argparse.Namespace) -> int:
    """`lbsync split ...`."""
    service_name: str = arguments.service
    state = await desired_state(config)
    async with open_store(config) as store:
        current = await read(store, service_name)
        if arguments.action == "history":
            for entry in await history(store, service_name):
                print(
                    f"{entry.get('when')}  {entry.get('who')}  "
                    f"{json.dumps((entry.get('split') or {}).get('groups'))}  {entry.get('why')}"
                )
            return EXIT_OK
        service = require_service(state, service_name)
        known = known_groups(service, current.value)
        if arguments.action == "get":
            _print_split(
                service_name,
                state,
                current.value,
                revision=current.revision,
                as_json=arguments.json,
            )
            return EXIT_OK
        if arguments.action == "rollback":
            value = await rollback(store, service_name, known=known, reason=arguments.reason)
            print(f"{service_name}: split rolled back to {json.dumps(value.get('groups'))}")
            return EXIT_OK
        if arguments.action == "promote":
            if arguments.group not in known:
                raise SplitError(
                    f"unknown group {arguments.group} for service {service_name}; known: "
                    + ", ".join(sorted(known))
                )
            groups = promoted(current.value, arguments.group)
        else:
            groups = parse_assignments(arguments.shares)
        value = with_groups(current.value, groups)
        await write(
            store,
            service_name,
            value,
            known=known,
            expect_revision=arguments.expect_revision,
            reason=arguments.reason,
            current=current,
        )
        print(f"{service_name}: split set to {json.dumps(value['groups'])}")
        return EXIT_OK


def _print_split(
    name: str,
    state: DesiredState,
    value: dict[str, Any] | None,
    *,
    revision: int,
    as_json: bool,
) -> None:
    service = state.service(name)
    groups = service.groups if service else ()
    if as_json:
        rows = [
            {
                "group": g.label,
                "target": g.target,
                "achieved": round(g.achieved, 2),
                "instances": g.instances,
                "eligible": g.eligible,
                "status": g.status,
            }
            for g in groups
        ]
        print(json.dumps({"service": name, "revision": revision, "split": value, "groups": rows}))
        return
    print(f"{name}: split revision {revision}: {json.dumps(value) if value else 'none'}")
    print(f"{'group':16} {'target':>7} {'achieved':>9} {'instances':>10} {'eligible':>9}")
    for group in groups:
        print(
            f"{group.label:16} {group.target:6.2f}% {group.achieved:8.2f}% "
            f"{group.instances:10d} {group.eligible:9d}  {group.status}"
        )


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
    )


async def rollout_command(config: Config, arguments: argparse.Namespace) -> int:
    """`lbsync rollout SERVICE --to GROUP ...`, `rollout resume|abort SERVICE`."""
    words: list[str] = arguments.words
    if len(words) == 2 and words[0] in CONTROL_WORDS:
        async with open_store(config) as store:
            print(f"{words[1]}: {await request(store, words[1], CONTROL_WORDS[words[0]])}")
        return EXIT_OK
    if len(words) != 1 or not arguments.to:
        raise SplitError("usage: lbsync rollout SERVICE --to GROUP [--steps ...]")
    spec = _spec(arguments, words[0])
    async with open_store(config) as store, Following(sources_for(config)) as following:
        states = FollowedStates(following, config.health_mode)
        current = await read(store, spec.service)
        service = require_service(states.state(), spec.service)
        if spec.to not in known_groups(service, current.value):
            raise SplitError(f"unknown group {spec.to} for service {spec.service}")
        rollout = Rollout(
            spec=spec,
            store=store,
            states=states,
            stats=StatsReader(config),
            progress=Progress(sys.stdout, interactive=sys.stdout.isatty()),
        )
        try:
            await rollout.run()
        except (GateFailed, Aborted, SourceUnusable, StoreError) as error:
            print(f"rollout of {spec.service} stopped: {error}", file=sys.stderr)
            return EXIT_FAILED
    print(f"rollout of {spec.service} to {spec.to} complete")
    return EXIT_OK
