"""Files on disk: stage next to the destination, fsync, keep a backup, replace atomically.

The destination is only ever the old bytes or the new bytes: a crash mid-write leaves at most a
staged file (named `.<dest>.lbsync-*`), which `remove_stale_stages` cleans at start-up.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

STAGE_MARK = ".lbsync-"


def read_or_none(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def backup_path(dest: Path) -> Path:
    """Where the previous version of a destination is kept."""
    return dest.with_name(dest.name + ".lbsync-backup")


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def stage(dest: Path, content: bytes, mode: int) -> Path:
    """Write content to a new file in the destination's directory, fsynced, with its mode."""
    descriptor, name = tempfile.mkstemp(prefix=f".{dest.name}{STAGE_MARK}", dir=dest.parent)
    staged = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        staged.chmod(mode)
    except BaseException:
        discard(staged)
        raise
    return staged


def discard(staged: Path) -> None:
    """Remove a staged file that will not be used."""
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()


def commit(staged: Path, dest: Path, *, previous: bytes | None, keep_backup: bool) -> None:
    """Replace the destination with the staged file, keeping the previous bytes as a backup.

    The backup is a second name for the previous file (a hard link, renamed into place): its
    bytes were made durable when it was written, so no copy and no fsync is needed. Where links
    are not possible the previous bytes are written out."""
    if keep_backup and previous is not None:
        _keep_backup(dest, previous)
    staged.replace(dest)
    _fsync_directory(dest.parent)


def _keep_backup(dest: Path, previous: bytes) -> None:
    link = dest.with_name(f".{dest.name}{STAGE_MARK}backup")
    discard(link)
    try:
        os.link(dest, link)
    except OSError:
        link = stage(dest, previous, dest.stat().st_mode & 0o7777)
    link.replace(backup_path(dest))


def write_atomic(dest: Path, content: bytes, mode: int = 0o644) -> None:
    """Replace a file in one step (for files lbsync owns alone, such as the server-state file)."""
    stage(dest, content, mode).replace(dest)
    _fsync_directory(dest.parent)


def restore(dest: Path, previous: bytes | None, mode: int) -> None:
    """Put the previous bytes back in place (or remove the file when there was none)."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
    else:
        stage(dest, previous, mode).replace(dest)
    _fsync_directory(dest.parent)


def remove_stale_stages(dest: Path) -> list[Path]:
    """Delete staged files a killed lbsync left next to the destination; returns them."""
    stale = sorted(dest.parent.glob(f".{dest.name}{STAGE_MARK}*"))
    for path in stale:
        discard(path)
    return stale
