"""Free loopback ports for servers started by the tests.

A port is the kernel's pick, but free only when picked: a test binds it later (a proxy started
once its configuration exists, an agent restarted on its own ports), and the kernel may hand
the same port to the next caller meanwhile. So no port is handed out twice in one run: this
process remembers its own, and the processes of one pytest run (pytest-xdist's workers) claim
theirs in the directory named by `PORTS_DIRECTORY` (set by tests/conftest.py), one file each.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

PORTS_DIRECTORY = "LBSYNC_TEST_PORTS"
_HANDED_OUT: set[int] = set()


def _claimed(port: int) -> bool:
    """Claim a port for this run; False when another process of the run has it."""
    directory = os.environ.get(PORTS_DIRECTORY)
    if not directory:
        return True
    try:
        (Path(directory) / str(port)).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick) and that no other caller in
    this run was given."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            if _claimed(port):
                return port


def is_listening(port: int) -> bool:
    """Whether something accepts connections on a loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
