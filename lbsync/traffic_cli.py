"""The traffic-shifting commands: `lbsync split ...` and `lbsync rollout ...`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lbsync.config import Config, parse_duration
from lbsync.daemon import first_snapshots, sources_for
from lbsync.model.catalog import merge
from lbsync.rollout import (
    Aborted,
    GateFailed,
    Phase,
    Plan,
    Progress,
    Rollout,
    RuntimeStats,
    Watcher,
    control,
    parse_steps,
)
from lbsync.splits import (
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
from lbsync.state import DesiredState, build
from lbsync.store import open_store

EXIT_OK = 0
EXIT_FAILED = 1
SNAPSHOT_TIMEOUT = 30.0


def add_parsers(commands: Any) -> None:
    """Add `split` and `rollout` to the command line."""
    split = commands.add_parser("split", help="read or change a service's traffic split")
    actions = split.add_subparsers(dest="action", required=True)
    get = actions.add_parser("get", help="target and achieved shares, eligible instances")
    get.add_argument("service")
    get.add_argument("--json", action="store_true")
    change = actions.add_parser("set", help="set group shares: blue=90 green=10")
    change.add_argument("service")
    change.add_argument("shares", nargs="+", metavar="GROUP=SHARE")
    promote = actions.add_parser("promote", help="100 %% to one group")
    promote.add_argument("service")
    promote.add_argument("group")
    for parser in (change, promote):
        parser.add_argument("--expect-revision", type=int, help="write only at this revision")
        parser.add_argument("--reason", default="", help="recorded in the history")
    shown = actions.add_parser("history", help="recorded changes, newest last")
    shown.add_argument("service")
    back = actions.add_parser("rollback", help="back to the split before the last change")
    back.add_argument("service")
    back.add_argument("--reason", default="")

    rollout = commands.add_parser(
        "rollout",
        help="shift traffic step by step behind health and error gates; "
        "`rollout resume|abort SERVICE` from another terminal",
    )
    rollout.add_argument("words", nargs="+", metavar="SERVICE | resume SERVICE | abort SERVICE")
    rollout.add_argument("--to", help="the group whose share rises")
    rollout.add_argument("--steps", default="5,25,50,100")
    rollout.add_argument("--interval", default="30s")
    rollout.add_argument("--min-healthy", type=int, default=1)
    rollout.add_argument("--max-error-rate", type=float, default=0.05, help="0.05 = 5 %%")
    rollout.add_argument("--pause-at", default="", help="shares to pause before, e.g. 50")
    rollout.add_argument("--reason", default="")


async def _state(config: Config) -> DesiredState:
    snapshots = await first_snapshots(sources_for(config), SNAPSHOT_TIMEOUT)
    bad = [snapshot.error for snapshot in snapshots if not snapshot.usable]
    if bad:
        raise SplitError("; ".join(str(error) for error in bad))
    return build(merge(snapshots), config.health_mode)


async def split_command(config: Config, arguments: argparse.Namespace) -> int:
    """`lbsync split ...`."""
    service_name: str = arguments.service
    state = await _state(config)
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
            _print_split(service_name, state, current.value, current.revision, arguments.json)
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
    name: str, state: DesiredState, value: dict[str, Any] | None, revision: int, as_json: bool
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


async def rollout_command(config: Config, arguments: argparse.Namespace) -> int:
    """`lbsync rollout SERVICE --to GROUP ...`, `rollout resume|abort SERVICE`."""
    words: list[str] = arguments.words
    if len(words) == 2 and words[0] in ("resume", "abort"):
        phase = Phase.RUNNING if words[0] == "resume" else Phase.ABORTING
        async with open_store(config) as store:
            print(f"{words[1]}: {await control(store, words[1], phase)}")
        return EXIT_OK
    if len(words) != 1 or not arguments.to:
        raise SplitError("usage: lbsync rollout SERVICE --to GROUP [--steps ...]")
    plan = Plan(
        service=words[0],
        to=arguments.to,
        steps=parse_steps(arguments.steps),
        interval=parse_duration(arguments.interval, "--interval"),
        min_healthy=arguments.min_healthy,
        max_error_rate=arguments.max_error_rate,
        pause_at=parse_steps(arguments.pause_at) if arguments.pause_at else (),
        reason=arguments.reason,
    )
    state = await _state(config)
    async with open_store(config) as store:
        current = await read(store, plan.service)
        service = require_service(state, plan.service)
        if plan.to not in known_groups(service, current.value):
            raise SplitError(f"unknown group {plan.to} for service {plan.service}")
        async with Watcher(config) as watcher:
            rollout = Rollout(
                plan=plan,
                store=store,
                watcher=watcher,
                stats=RuntimeStats(config),
                progress=Progress(sys.stdout, interactive=sys.stdout.isatty()),
            )
            try:
                await rollout.run()
            except (GateFailed, Aborted) as error:
                print(f"rollout of {plan.service} stopped: {error}", file=sys.stderr)
                return EXIT_FAILED
    print(f"rollout of {plan.service} to {plan.to} complete")
    return EXIT_OK
