"""A plain `pip install .` (not editable) into a fresh virtualenv ships the templates: `lbsync
render`, run from another directory, prints a configuration HAProxy accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 600


def run(argv: list[str], *, cwd: Path, timeout: float = INSTALL_TIMEOUT) -> str:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv[:3]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_a_plain_install_renders_the_demo_with_the_shipped_templates(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
        cwd=elsewhere,
    )
    where = run(
        [str(venv / "bin" / "python"), "-c", "import lbsync; print(lbsync.__file__)"], cwd=elsewhere
    )
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree
    rendered = run(
        [str(venv / "bin" / "lbsync"), "-c", str(ROOT / "examples/demo/lbsync.toml"), "render"],
        cwd=elsewhere,
        timeout=60,
    )
    assert "backend shop" in rendered
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered)
    run(["haproxy", "-c", "-f", str(config)], cwd=elsewhere, timeout=60)
    # without the `docker` extra, a docker reload is refused with what to install
    docker = tmp_path / "docker.toml"
    docker.write_text(
        f'[source.file]\npath = "{ROOT / "examples/demo/services.toml"}"\n'
        f'[[target]]\ndest = "{tmp_path / "out.cfg"}"\n'
        'reload = { method = "docker", container = "haproxy" }\n'
    )
    refused = subprocess.run(
        [str(venv / "bin" / "lbsync"), "-c", str(docker), "check"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "docker needs the docker package: pip install 'lbsync[docker]'" in refused.stderr
