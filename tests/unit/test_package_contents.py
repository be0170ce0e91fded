"""What `pip install .` ships: every package of the tree, and the templates as package data."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_listed_packages_are_the_packages_of_the_tree_and_the_templates() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "lbsync").rglob("__init__.py")
    }
    assert listed == on_disk | {"lbsync.templates"}
    assert project["tool"]["setuptools"]["package-dir"] == {"lbsync.templates": "templates"}
    assert (ROOT / "templates" / "haproxy.cfg.j2").exists()
    assert (ROOT / "templates" / "nginx.conf.j2").exists()
