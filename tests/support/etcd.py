"""A real etcd (Debian's etcd-server, /usr/bin/etcd) on free loopback ports, stopped by PID.

The server keeps its ports and data directory for its whole life, so a test can kill it
(SIGKILL, as a crash) or freeze it (SIGSTOP, as a hung host) and start it again where clients
expect it. It can serve TLS with a client certificate (files made with the `openssl` CLI) and
can have auth enabled with a user confined to a prefix. Setup talks to etcd's gateway with the
standard library, not with the client under test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.ports import free_port
from support.waiting import wait_until

ROOT_PASSWORD = "root-secret"
"""The `root` user's password on servers started with auth."""


# etcd sends a watch progress notification every second: quiet watches stay well inside the
# idle watchdog, and tests see progress without waiting minutes
PROGRESS_EVERY_SECOND = ("--experimental-watch-progress-notify-interval", "1s")


def require_etcd() -> None:
    """Fail (not skip) when etcd is missing: the suite must not pass without it."""
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run scripts/install-system.sh --with-test-servers")


@dataclass(frozen=True)
class TlsFiles:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate the CA and both certificates (P-256 keys: fast to make) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        directory,
        *("req", "-x509", *new_key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"),
        *("-subj", "/CN=lbsync test CA", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    leaf = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    usages = {
        # etcd's gateway dials etcd's own gRPC port with the server certificate: clientAuth too.
        "server": (
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        "client": ("lbsync", "extendedKeyUsage=clientAuth\n"),
    }
    for name, (common_name, extensions) in usages.items():
        (directory / f"{name}.ext").write_text(leaf + extensions)
        _openssl(
            directory,
            *("req", "-new", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr"),
            *("-subj", f"/CN={common_name}"),
        )
        _openssl(
            directory,
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", "2", "-out", f"{name}.crt"),
            *("-extfile", f"{name}.ext"),
        )
    return TlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


def b64(text: str) -> str:
    """Text as the gateway's base64."""
    return base64.b64encode(text.encode()).decode()


@dataclass
class EtcdServer:
    """One single-member etcd; `start` again after `kill` reuses its ports and data."""

    root: Path
    tls: TlsFiles | None = None
    extra_args: tuple[str, ...] = ()
    name: str = "lbsync-test"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, as the client under test is given it."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "etcd.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "etcd was never started"
        return self.process.pid

    def argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            *("etcd", "--name", self.name, "--data-dir", str(self.data_dir)),
            *("--listen-client-urls", self.url, "--advertise-client-urls", self.url),
            *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
            *("--initial-cluster", f"{self.name}={peer}", "--logger", "zap"),
        ]
        if self.tls is not None:
            argv += [
                *("--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key)),
                *("--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"),
            ]
        return argv + list(self.extra_args)

    def start(self, timeout: float = 20) -> None:
        """Start etcd and wait until it reports itself healthy (it has a leader)."""
        require_etcd()
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(self.argv(), stdout=output, stderr=subprocess.STDOUT)
        wait_until(self._healthy_or_dead, timeout, f"etcd healthy on {self.url}")

    def _healthy_or_dead(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"etcd exited with {self.process.returncode}:\n{tail}")
        try:
            status, body = self.post_raw("/health", None, timeout=0.5)
            if status != 200 or body.get("health") != "true":
                return False
            # /health bypasses the gateway; a range proves the gateway reaches gRPC (with TLS
            # it dials etcd itself with the server certificate). Refusals by auth are answers.
            status, _ = self.post_raw("/v3/kv/range", {"key": b64("probe")}, timeout=0.5)
        except OSError:
            return False
        return status in (200, 400, 401, 403)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal etcd (SIGKILL: a crash; SIGTERM: a clean stop) and wait until it is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as with a hung host."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop for good (thawed first, in case a test froze it)."""
        if self.process is not None and self.process.poll() is None:
            self.thaw()
        self.kill(signal.SIGTERM)

    def client_ssl(self) -> ssl.SSLContext | None:
        """A context trusting the test CA and presenting the client certificate."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context

    def post_raw(
        self,
        path: str,
        body: dict[str, Any] | None,
        *,
        token: str | None = None,
        timeout: float = 5,
    ) -> tuple[int, dict[str, Any]]:
        """One request to the gateway (GET without a body); the status and the JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data)
        if token:
            request.add_header("Authorization", token)
        try:
            with urllib.request.urlopen(
                request, timeout=timeout, context=self.client_ssl()
            ) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def post(self, path: str, body: dict[str, Any], *, token: str | None = None) -> dict[str, Any]:
        """`post_raw` that insists on success."""
        status, answer = self.post_raw(path, body, token=token)
        assert status == 200, f"{path} answered {status}: {answer}"
        return answer

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        """Create `root` and `user` (read-write on `prefix` only), then enable auth."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        steps: list[tuple[str, dict[str, Any]]] = [
            ("/v3/auth/user/add", {"name": "root", "password": ROOT_PASSWORD}),
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/role/add", {"name": user}),
            (
                "/v3/auth/role/grant",
                {
                    "name": user,
                    "perm": {"permType": "READWRITE", "key": b64(prefix), "range_end": b64(end)},
                },
            ),
            ("/v3/auth/user/add", {"name": user, "password": password}),
            ("/v3/auth/user/grant", {"user": user, "role": user}),
            ("/v3/auth/enable", {}),
        ]
        for path, body in steps:
            self.post(path, body)

    def log_has(self, *fragments: str) -> bool:
        """Whether one line of etcd's log contains every fragment."""
        text = self.log.read_text(errors="replace")
        return any(all(part in line for part in fragments) for line in text.splitlines())
