"""Golden files for the shipped templates: fixed inputs rendered as `lbsync render` renders
them (services file -> catalog -> desired state -> each target's template)."""

from __future__ import annotations

from pathlib import Path

from lbsync.config import load
from lbsync.core.state import build
from lbsync.model.catalog import merge
from lbsync.pipeline.reconcile import TargetRunner
from lbsync.sources.file import read_snapshot

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def cases() -> list[Path]:
    """Every golden case's folder."""
    return sorted(path.parent for path in GOLDEN.glob("*/lbsync.toml"))


def render_case(case: Path) -> dict[str, str]:
    """The rendered text of each target of a case, by the destination's file name."""
    config = load(case / "lbsync.toml", environ={})
    assert config.file_source is not None
    snapshot = read_snapshot(config.file_source.path)
    assert snapshot.usable, snapshot.error
    state = build(merge([snapshot]), config.health_mode)
    return {target.dest.name: TargetRunner(target).render(state) for target in config.targets}
