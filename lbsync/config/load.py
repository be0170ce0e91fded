"""Reading `lbsync.toml`: one TOML file, every setting overridable by an `LBSYNC_*` variable.

Every error names the file and the setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lbsync.config.analysis import analysis_config
from lbsync.config.api import api_config
from lbsync.config.environment import apply_environment
from lbsync.config.reader import Reader
from lbsync.config.schema import Config, ConfigError, RolloutConfig, TargetConfig
from lbsync.config.sources import consul_source, etcd_source, file_source
from lbsync.config.targets import check_run_dirs, target
from lbsync.model.values import HealthMode


def _targets(root: Reader) -> tuple[TargetConfig, ...]:
    tables = root.table.get("target", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError("target: at least one [[target]] table is required")
    targets = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"target[{index}]: must be a table")
        targets.append(target(Reader(table, f"target[{index}]", root.base), index))
    names = [each.name for each in targets]
    if len(set(names)) != len(names):
        raise ConfigError("target: two targets have the same name")
    dests = [each.dest for each in targets]
    if len(set(dests)) != len(dests):
        raise ConfigError("target: two targets write the same dest")
    check_run_dirs(targets)
    return tuple(targets)


def _parse(root: Reader, path: Path) -> Config:
    root.check_known({"source", "target", "apply", "api", "health", "rollout", "analysis"})
    sources = root.table_at("source")
    sources.check_known({"file", "etcd", "consul"})
    if not sources.table:
        raise ConfigError("source: at least one source is required, e.g. [source.file]")
    present = sources.table
    apply = root.table_at("apply")
    apply.check_known({"min_wait", "max_wait", "fast_lane"})
    min_wait = apply.duration("min_wait", 0.2)
    max_wait = apply.duration("max_wait", 2.0)
    if max_wait < min_wait:
        raise ConfigError("apply.max_wait: must not be shorter than apply.min_wait")
    rollout = root.table_at("rollout")
    rollout.check_known({"drive", "lease_ttl"})
    lease_ttl = rollout.duration("lease_ttl", 10.0)
    if not 1.0 <= lease_ttl <= 300.0:
        raise ConfigError("rollout.lease_ttl: must be from 1s to 300s")
    return Config(
        path=path,
        targets=_targets(root),
        file_source=file_source(sources.table_at("file")) if "file" in present else None,
        etcd_source=etcd_source(sources.table_at("etcd")) if "etcd" in present else None,
        consul_source=consul_source(sources.table_at("consul")) if "consul" in present else None,
        source_order=tuple(present),
        health_mode=root.choice("health", HealthMode, HealthMode.PASSING),
        min_wait=min_wait,
        max_wait=max_wait,
        fast_lane=apply.flag("fast_lane", True),
        api=api_config(root.table_at("api")),
        rollout=RolloutConfig(drive=rollout.flag("drive", True), lease_ttl=lease_ttl),
        analysis=analysis_config(root.table_at("analysis")),
    )


def parse(document: Mapping[str, Any], path: Path) -> Config:
    """A Config from a parsed TOML document; `path` locates relative paths and names errors."""
    try:
        return _parse(Reader(document, "", path.parent), path)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, overlay the environment, and check the configuration file."""
    path = path.absolute()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    document = apply_environment(document, os.environ if environ is None else environ)
    return parse(document, path)
