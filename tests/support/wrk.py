"""wrk (Debian's package), a load generator nobody here wrote: keep-alive connections, run
until interrupted, and its own count of socket errors and non-2xx/3xx answers."""

from __future__ import annotations

import re
import signal
import subprocess
from dataclasses import dataclass

_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    """What wrk printed: requests, socket errors (connect, read, write, timeout), non-2xx/3xx."""

    requests: int
    socket_errors: tuple[int, int, int, int]
    non_2xx: int
    output: str

    @property
    def failed(self) -> int:
        return sum(self.socket_errors) + self.non_2xx


def parse(output: str) -> WrkResult:
    """wrk's summary (it prints the error lines only when they are not zero)."""
    requests = _REQUESTS.search(output)
    if requests is None:
        raise AssertionError(f"no request count in wrk's output: {output[-2000:]}")
    errors = _SOCKET_ERRORS.search(output)
    counts = (0, 0, 0, 0) if errors is None else tuple(int(n) for n in errors.groups())
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests=int(requests.group(1)),
        socket_errors=(counts[0], counts[1], counts[2], counts[3]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        output=output,
    )


def start(url: str, *, connections: int, host: str, seconds: int) -> subprocess.Popen[str]:
    """wrk on one thread with `connections` keep-alive connections, for at most `seconds`."""
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-H",
            f"Host: {host}",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> WrkResult:
    """Interrupt wrk (it then prints its summary) and read what it counted."""
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    return parse(output)
