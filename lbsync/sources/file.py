"""The services file: the embedded default source, a TOML file in the KV contract's shapes.

    [services.shop.route]                  -> services/shop/route
    [services.shop.split]                  -> services/shop/split
    [services.shop.instances.blue-1]       -> services/shop/instances/blue-1
    [settings] name = value                -> settings/name
    [kv] "app/key" = "text"                -> app/key (raw, for templates' `kv`)

A file that cannot be read or is not valid TOML leaves the last good state in force; an entry
that breaks the contract is refused with the file and the entry named, and the others apply.
The watch is on the file's directory: once that directory is removed (or removed and made
again) the watch sees nothing more, so the source says so with an unusable snapshot (the last
good state stays in force), waits for the directory to be there again, and watches it anew.
"""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from lbsync.model.contract import parse_values_and_texts
from lbsync.model.jsonvalues import json_or_str
from lbsync.model.values import Rejection, Snapshot
from lbsync.sources.filewatch import changes

Problems = list[tuple[str, str]]
MAX_FILE_BYTES = 16 << 20  # 10,000 instances take about 1 MiB


def flatten(document: dict[str, Any]) -> tuple[dict[str, object], dict[str, str], Problems]:
    """The file's values by relative key, its raw `kv` texts, and (key, problem) pairs."""
    values: dict[str, object] = {}
    raw: dict[str, str] = {}
    problems: Problems = []
    for section, body in document.items():
        if section not in ("services", "settings", "kv"):
            problems.append((section, "unknown section (expected services, settings or kv)"))
        elif not isinstance(body, dict):
            problems.append((section, "must be a table"))
        elif section == "services":
            _flatten_services(body, values, problems)
        elif section == "settings":
            values.update({f"settings/{key}": value for key, value in body.items()})
        else:
            _flatten_kv(body, "", raw)
    return values, raw, problems


def _flatten_services(
    services: dict[str, Any], values: dict[str, object], problems: Problems
) -> None:
    for service, body in services.items():
        if not isinstance(body, dict):
            problems.append((f"services/{service}", "must be a table"))
            continue
        for part, value in body.items():
            if part != "instances":
                values[f"services/{service}/{part}"] = value
            elif not isinstance(value, dict):
                problems.append((f"services/{service}/instances", "must be a table of instances"))
            else:
                for instance, data in value.items():
                    values[f"services/{service}/instances/{instance}"] = data


def _flatten_kv(table: dict[str, Any], prefix: str, raw: dict[str, str]) -> None:
    """Nested tables become `/`-separated keys (iterative: any depth TOML parsed is fine)."""
    pending = [(table, prefix)]
    while pending:
        current, base = pending.pop()
        for key, value in current.items():
            if isinstance(value, dict):
                pending.append((value, f"{base}{key}/"))
            else:
                raw[f"{base}{key}"] = value if isinstance(value, str) else json_or_str(value)


def read_snapshot(path: Path, *, source: str = "file") -> Snapshot:
    """Read and parse the services file into one snapshot (unusable when unreadable)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Snapshot(
                source=source,
                usable=False,
                error=f"{path}: {size:,} bytes, more than {MAX_FILE_BYTES:,}",
            )
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        return Snapshot(source=source, usable=False, error=f"{path}: cannot read: {error}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError: an integer of thousands of digits; RecursionError: tables nested too deep
        reason = str(error) if not isinstance(error, RecursionError) else "nested too deeply"
        return Snapshot(source=source, usable=False, error=f"{path}: not valid TOML: {reason}")
    values, raw, problems = flatten(document)

    def describe(key: str) -> str:
        return f"{path} [{key.replace('/', '.')}]"

    return snapshot_of(values, raw, problems, source=source, describe=describe)


def snapshot_of(
    values: dict[str, object],
    raw: dict[str, str],
    problems: Problems,
    *,
    source: str,
    describe: Callable[[str], str],
) -> Snapshot:
    """The snapshot of a flattened file (`flatten`): its values parsed, its raw texts with
    every value's, and its structural problems refused by name."""
    (entries, rejected), texts = parse_values_and_texts(values, describe=describe)
    raw = {**texts, **raw}
    # as etcd's and Consul's keys (`decode_raw`): a key name with a control character never
    # reaches a template, where `kv.ls` would print it
    problems = [
        *problems,
        *((key, "the key holds a control character") for key in raw if not key.isprintable()),
    ]
    refused = {key for key, _ in rejected}
    structural = tuple(
        (key, Rejection(where=describe(key), message=message))
        for key, message in problems
        if key not in refused
    )
    return Snapshot(
        source=source,
        entries=entries,
        rejected=tuple(sorted(rejected + structural, key=lambda pair: pair[0])),
        raw=tuple(sorted((key, text) for key, text in raw.items() if key.isprintable())),
    )


def _nearer(directory: Path, ancestor: Path) -> bool:
    """Whether a directory between `ancestor` and `directory` exists now (watch it instead)."""
    return any(parent.is_dir() for parent in directory.parents if ancestor in parent.parents)


class FileSource:
    """Watches the services file; yields a snapshot at start and after each real change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def name(self) -> str:
        """The source's name in status and errors."""
        return f"file:{self.path}"

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Snapshots of the file, repeats dropped; while its directory is gone, one unusable
        snapshot, then the file again once the directory is back."""
        last: Snapshot | None = None
        while True:
            async for removed in changes([self.path]):
                if removed:
                    break
                snapshot = read_snapshot(self.path, source=self.name).sharing(last)
                if snapshot != last:
                    last = snapshot
                    yield snapshot
            gone = Snapshot(
                source=self.name,
                usable=False,
                error=f"{self.path.parent}: directory removed; watching again once it is back",
            )
            if gone != last:
                last = gone
                yield gone
            await self._directory_back()

    async def _directory_back(self) -> None:
        """Wait until the file's directory exists again: watch its nearest existing ancestor
        (a removed directory cannot be watched) and look again on every change there."""
        directory = self.path.parent
        while not directory.is_dir():
            ancestor = next(parent for parent in directory.parents if parent.is_dir())
            async for _ in changes([ancestor / directory.name]):
                if directory.is_dir() or not ancestor.is_dir() or _nearer(directory, ancestor):
                    break
