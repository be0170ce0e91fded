"""The services file followed through its directory's watch: a directory removed (or removed
and made again) is said, never silent, and the file is followed again once it is back."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from lbsync.sources.file import FileSource

SERVICES = '[services.shop.route]\nhosts = ["shop.example.com"]\n'
LATER = '[services.shop.route]\nhosts = ["later.example.com"]\n'
WAIT = 10.0


def remove(directory: Path) -> None:
    shutil.rmtree(directory)


def replace(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.mkdir()
    (directory / "services.toml").write_text(SERVICES)


@pytest.mark.parametrize("change", [remove, replace], ids=["removed", "replaced"])
async def test_a_removed_directory_is_reported_and_followed_again_once_it_is_back(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / "services.toml").write_text(SERVICES)
    snapshots = FileSource(directory / "services.toml").snapshots()
    try:
        assert (await anext(snapshots)).usable
        change(directory)
        async with asyncio.timeout(WAIT):
            gone = await anext(snapshots)
            while gone.usable or "directory removed" not in (gone.error or ""):
                gone = await anext(snapshots)  # the file's removal may come first, unusable
        assert str(directory) in (gone.error or "")
        directory.mkdir(exist_ok=True)
        (directory / "services.toml").write_text(LATER)
        async with asyncio.timeout(WAIT):
            back = await anext(snapshots)
            while not back.usable:
                back = await anext(snapshots)
        assert "later.example.com" in str(dict(back.entries))
        (directory / "services.toml").write_text(SERVICES)  # and later edits are seen again
        async with asyncio.timeout(WAIT):
            edited = await anext(snapshots)
        assert "shop.example.com" in str(dict(edited.entries))
    finally:
        await snapshots.aclose()  # type: ignore[attr-defined]
