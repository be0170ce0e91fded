"""The traffic-shifting commands: `lbsync split ...` and `lbsync rollout ...`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lbsync.cli.exits import EXIT_OK
from lbsync.cli.reading import desired_state
from lbsync.config import Config
from lbsync.core.state import DesiredState
from lbsync.kv.store import open_store
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
