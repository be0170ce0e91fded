"""The container's entrypoint, run outside a container (no container engine runs here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support.ports import free_port
from support.servicesfile import instance
from support.site import Site
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def entrypoint(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, LBSYNC_CONFIG=str(site.config_path))
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment['PATH']}"
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_the_entrypoint_passes_commands_through_with_the_configured_file(tmp_path: Path) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    site.write_services({"shop": {"route": {}, "instances": {"a": instance(9000)}}})
    result = entrypoint(site, "check")
    assert result.returncode == 0, result.stderr
    assert "haproxy: valid" in result.stdout


def test_run_writes_a_first_configuration_then_runs_the_daemon_until_sigterm(
    tmp_path: Path,
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config(extra='reload = { method = "none" }')
    text = site.config_path.read_text()
    site.config_path.write_text(
        text.replace(text[text.index("reload = {") :].split("\n")[0] + "\n", "", 1)
    )
    site.write_services({"shop": {"route": {}, "instances": {"a": instance(9000)}}})
    environment = dict(os.environ, LBSYNC_CONFIG=str(site.config_path))
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment['PATH']}"
    log = tmp_path / "entrypoint.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["sh", str(ROOT / "docker" / "entrypoint.sh")], env=environment, stderr=output
        )
    try:
        wait_until(lambda: "lbsync started" in log.read_text(), 30, "the daemon running")
        assert site.dest.exists()  # written by the first cycle, before the daemon started
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "server a 127.0.0.1:9000" in site.dest.read_text()
