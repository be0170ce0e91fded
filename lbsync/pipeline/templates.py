"""A target's compiled template, compiled again only when its file changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from lbsync.pipeline.render import RenderError, load_template


@dataclass(frozen=True)
class Compiled:
    """A compiled template and the file stamp (mtime, size) it was compiled from."""

    template: jinja2.Template
    stamp: tuple[int, int]


def stamp_of(path: Path) -> tuple[int, int]:
    """The file's (mtime in ns, size); RenderError names a template that cannot be read."""
    try:
        stat = path.stat()
    except OSError as error:
        raise RenderError(f"{path}: cannot read template: {error.strerror}") from error
    return stat.st_mtime_ns, stat.st_size


def compiled(path: Path, previous: Compiled | None) -> Compiled:
    """`previous` when the file is unchanged, else the file compiled anew."""
    stamp = stamp_of(path)
    if previous is not None and previous.stamp == stamp:
        return previous
    return Compiled(load_template(path), stamp)
