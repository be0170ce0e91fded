"""Atomic writes: the destination is replaced whole and the previous version kept as a backup."""

from __future__ import annotations

from pathlib import Path

from lbsync.pipeline import fsio


def test_commit_replaces_the_file_and_keeps_the_previous_bytes_as_backup(tmp_path: Path) -> None:
    dest = tmp_path / "haproxy.cfg"
    dest.write_bytes(b"old\n")
    dest.chmod(0o640)
    staged = fsio.stage(dest, b"new\n", 0o644)
    fsio.commit(staged, dest, previous=b"old\n", keep_backup=True)
    assert dest.read_bytes() == b"new\n"
    backup = fsio.backup_path(dest)
    assert backup.read_bytes() == b"old\n"
    assert backup.stat().st_mode & 0o777 == 0o640
    assert not fsio.remove_stale_stages(dest)  # nothing left behind


def test_a_second_commit_moves_the_backup_along(tmp_path: Path) -> None:
    dest = tmp_path / "haproxy.cfg"
    for content in (b"one\n", b"two\n", b"three\n"):
        previous = fsio.read_or_none(dest)
        fsio.commit(fsio.stage(dest, content, 0o644), dest, previous=previous, keep_backup=True)
    assert dest.read_bytes() == b"three\n"
    assert fsio.backup_path(dest).read_bytes() == b"two\n"


def test_without_backup_only_the_destination_changes(tmp_path: Path) -> None:
    dest = tmp_path / "haproxy.cfg"
    dest.write_bytes(b"old\n")
    fsio.commit(fsio.stage(dest, b"new\n", 0o644), dest, previous=b"old\n", keep_backup=False)
    assert dest.read_bytes() == b"new\n"
    assert not fsio.backup_path(dest).exists()
