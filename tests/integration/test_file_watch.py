"""The services file followed through its directory's watch: a watch that can no longer see
changes ends the source with an error, never in silence."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from lbsync.sources.file import FileSource, WatchLost

SERVICES = '[services.shop.route]\nhosts = ["shop.example.com"]\n'
WAIT = 10.0


def remove(directory: Path) -> None:
    shutil.rmtree(directory)


def replace(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.mkdir()
    (directory / "services.toml").write_text(SERVICES)


@pytest.mark.parametrize("change", [remove, replace], ids=["removed", "replaced"])
async def test_the_source_fails_once_its_directory_is_removed_or_replaced(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / "services.toml").write_text(SERVICES)
    snapshots = FileSource(directory / "services.toml").snapshots()
    try:
        assert (await anext(snapshots)).usable
        change(directory)
        with pytest.raises(WatchLost, match="no longer seen"):
            async with asyncio.timeout(WAIT):
                async for _ in snapshots:  # the file's removal may come first, unusable
                    pass
    finally:
        await snapshots.aclose()  # type: ignore[attr-defined]
