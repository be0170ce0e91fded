"""A source fed by the test itself: a large catalog without a store to write it through."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from lbsync.model.contract import parse_values
from lbsync.model.values import Snapshot


def catalog_values(services: int, instances: int, *, weight: int = 1) -> dict[str, object]:
    """Services `svc-NNNN` with a route, a 10 % canary split and `instances` instances each;
    the second instance of `svc-0000` (a stable one) has `weight`, every other one 1."""
    values: dict[str, object] = {}
    for index in range(services):
        name = f"svc-{index:04d}"
        values[f"services/{name}/route"] = {"hosts": [f"{name}.example.com"]}
        values[f"services/{name}/split"] = {"groups": {"canary": 10}}
        for number in range(instances):
            values[f"services/{name}/instances/{name}-{number}"] = {
                "address": f"10.{index >> 8 & 255}.{index & 255}.{number + 1}",
                "port": 8080,
                "tags": ["canary" if number == 0 else "stable"],
                "weight": weight if index == 0 and number == 1 else 1,
            }
    return values


def file_target_config(root: Path) -> Path:
    """lbsync.toml for a daemon fed by a MemorySource (give it as `sources`) whose one target
    writes a file (no proxy, nothing to validate), so cycles are the catalog's own."""
    template = root / "count.j2"
    template.write_text("{{ all_services | length }} services\n")
    path = root / "lbsync.toml"
    path.write_text(
        f'[source.file]\npath = "{root / "unused.toml"}"\n\n'
        '[apply]\nmin_wait = "10ms"\nmax_wait = "100ms"\n\n'
        '[api]\nlisten = "127.0.0.1:0"\n\n'
        f'[[target]]\nkind = "generic"\ntemplate = "{template}"\ndest = "{root / "count.txt"}"\n'
    )
    return path


def snapshot_of(values: dict[str, object], source: str = "memory") -> Snapshot:
    """The snapshot a store's source builds from these relative keys and decoded values."""
    entries, rejected = parse_values(values, describe=str)
    raw = tuple(sorted((key, json.dumps(value)) for key, value in values.items()))
    return Snapshot(source=source, entries=entries, rejected=rejected, raw=raw)


class MemorySource:
    """Whole snapshots handed over by `push`, as a store's source would yield them."""

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._queue: asyncio.Queue[Snapshot] = asyncio.Queue()
        self._last: Snapshot | None = None

    @property
    def name(self) -> str:
        return self._name

    def push(self, values: dict[str, object]) -> None:
        """Deliver these relative keys and values as the source's next snapshot, keeping each
        unchanged part as the same object (as the store sources do)."""
        fresh = snapshot_of(values, self._name)
        if self._last is not None:
            kept = self._last.parts
            parts = {
                name: old if (old := kept.get(name)) == part else part
                for name, part in fresh.parts.items()
            }
            fresh = Snapshot(self._name, parts=parts)
        self._last = fresh
        self._queue.put_nowait(fresh)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        while True:
            yield await self._queue.get()
