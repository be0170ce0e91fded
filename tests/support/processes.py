"""Real HAProxy, nginx and backend processes on loopback, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from support.ports import free_port, is_listening
from support.waiting import wait_until

SUPPORT = Path(__file__).parent


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate a process (and wait), killing it if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@dataclass
class Backends:
    """Named HTTP backends in one helper process; each answers with its name."""

    ports: dict[str, int]
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        names: list[str],
        statuses: dict[str, int] | None = None,
        *,
        delays_ms: dict[str, int] | None = None,
        tls: dict[str, Path] | None = None,
    ) -> Backends:
        """`statuses`: the status some answer with (else 200); `delays_ms`: how long some take
        to answer each request; `tls`: the PEM (certificate and key) some serve TLS with."""
        ports = {name: free_port() for name in names}
        statuses, delays_ms, tls = statuses or {}, delays_ms or {}, tls or {}
        process = subprocess.Popen(
            [sys.executable, str(SUPPORT / "backend_server.py")]
            + [
                f"{name}={port}:{statuses.get(name, 200)}:{delays_ms.get(name, 0)}"
                + (f":{tls[name]}" if name in tls else "")
                for name, port in ports.items()
            ],
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        return cls(ports=ports, process=process)

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


def master_cli(socket_path: Path, command: str, timeout: float = 2.0) -> str:
    """One command on HAProxy's master CLI (synchronous, for tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(socket_path))
        client.sendall(command.encode() + b"\n")
        client.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@dataclass
class HAProxy:
    """A master-worker HAProxy started on an existing config file; `prefix` runs before it
    (`prlimit --nofile=...` for limits of its own)."""

    config: Path
    master_socket: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    prefix: tuple[str, ...] = ()

    def start(self) -> None:
        self.log = self.config.with_suffix(".log")
        argv = ("haproxy", "-W", "-S", str(self.master_socket), "-f", str(self.config))
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [*self.prefix, *argv],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        process, log = self.process, self.log
        try:
            wait_until(
                lambda: process.poll() is not None or self.worker_pids() != (),
                10,
                "HAProxy's first worker",
            )
        except AssertionError as error:
            said = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{error}; its output: {said}") from None
        if process.returncode is not None:
            said = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"HAProxy exited with {process.returncode} at start: {said}")
        wait_until(lambda: is_listening(self.port), 10, f"HAProxy listening on {self.port}")

    def worker_pids(self) -> tuple[int, ...]:
        """The current workers' PIDs (empty while the master CLI does not answer)."""
        try:
            text = master_cli(self.master_socket, "show proc")
        except OSError:
            return ()
        current = text.split("# old workers", 1)[0]
        return tuple(
            int(line.split()[0])
            for line in current.splitlines()
            if len(line.split()) > 1 and line.split()[1] == "worker"
        )

    def reloads(self) -> int:
        """How many times the master has reloaded (the `show proc` master line)."""
        text = master_cli(self.master_socket, "show proc")
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == "master":
                return int(fields[2])
        raise AssertionError(f"no master line in {text!r}")

    def servers(self, backend: str) -> dict[str, tuple[int, int]]:
        """Each server of a backend as the current worker runs it: (weight, admin state),
        read with `@1 show servers state <backend>` (columns 4, 7 and 8 of format 1)."""
        text = master_cli(self.master_socket, f"@1 show servers state {backend}")
        servers = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 8 and fields[0].isdigit() and fields[1] == backend:
                servers[fields[3]] = (int(fields[7]), int(fields[6]))
        return servers

    def weights(self, backend: str) -> dict[str, int]:
        """Each server's current weight in a backend."""
        return {name: weight for name, (weight, _) in self.servers(backend).items()}

    def failed_reloads(self) -> int:
        text = master_cli(self.master_socket, "show proc")
        for line in text.splitlines():
            if " master " in f" {line} ":
                return int(line.split("[failed:")[1].split("]")[0])
        raise AssertionError(f"no master line in {text!r}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class Nginx:
    """An nginx master (not daemonised) started on an existing nginx.conf."""

    config: Path
    port: int
    pidfile: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = field(default=None)

    def start(self) -> None:
        self.log = self.config.with_suffix(".log")
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                ["nginx", "-c", str(self.config), "-g", "daemon off;"],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: is_listening(self.port), 10, f"nginx listening on {self.port}")
        wait_until(self.pidfile.exists, 10, "nginx's pidfile")

    def worker_pids(self) -> frozenset[int]:
        """The PIDs of the master's children (its workers, old ones too until they exit)."""
        if self.process is None:
            return frozenset()
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return frozenset(int(pid) for pid in children.read_text().split())
        except FileNotFoundError:
            return frozenset()

    def wait_for_new_workers(self, before: frozenset[int], timeout: float = 10) -> None:
        """Wait until none of the workers `before` a reload is left, and a new one runs: only
        then does every new connection meet the new configuration."""
        wait_until(
            lambda: bool(self.worker_pids()) and not self.worker_pids() & before,
            timeout,
            "nginx's workers to be the reloaded ones",
        )

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGQUIT)
            stop_process(self.process)
