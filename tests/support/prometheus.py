"""A real Prometheus (Debian's `prometheus`, 2.42) on a free loopback port, stopped by PID.

It scrapes the given targets' `/metrics` every second, in a temporary directory of its own.
`start` returns once it is ready (`/-/ready`) and has scraped every target once (its target
discovery hands new targets to the scrapers about 5 s after start, so that takes a while).
Setup and checks talk to its HTTP API with the standard library, not the client under test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.ports import free_port
from support.processes import stop_process
from support.waiting import wait_until


def require_prometheus() -> None:
    """Fail (not skip) when Prometheus is missing: the suite must not pass without it."""
    if shutil.which("prometheus") is None:
        pytest.fail(
            "prometheus is not installed: run scripts/install-system.sh --with-test-servers"
        )


@dataclass
class PrometheusServer:
    """One Prometheus scraping `targets` (`host:port`) as job `lbsync-test`."""

    root: Path
    targets: tuple[str, ...]
    scrape_interval: str = "1s"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    def write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "lbsync-test", "static_configs": [{"targets": list(self.targets)}]}
            ],
        }
        path = self.root / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def start(self, timeout: float = 30) -> None:
        """Start, then wait until it is ready and has scraped every target."""
        require_prometheus()
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            "prometheus",
            f"--config.file={self.write_config()}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout, f"Prometheus ready on {self.url}")
        wait_until(self._scraped, timeout, f"Prometheus' first scrape of {self.targets}")

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{tail}")

    def _ready(self) -> bool:
        self._alive()
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def _scraped(self) -> bool:
        self._alive()
        result = self.query('count(up{job="lbsync-test"})')
        return bool(result) and float(result[0]["value"][1]) >= len(self.targets)

    def query(self, text: str) -> list[dict[str, Any]]:
        """An instant query's vector result (setup and checks)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": text})
        try:
            with urllib.request.urlopen(address, timeout=5) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{text!r}: {error.read()[:300]!r}") from error
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and nothing answers (a hung host)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            stop_process(self.process)
