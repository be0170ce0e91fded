"""The file descriptors a configuration asks for: each count is what HAProxy 2.6 itself asked
for with that configuration (`Cannot raise FD limit to N` under `prlimit --nofile=100:100`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbsync.config import ReloadConfig, ReloadMethod
from lbsync.haproxy.fdlimit import Demand, Launch, demand, launch_of, shortfall

ONE_THREAD = "global\n    maxconn 1000\n    nbthread 1\n"
MASTER_CLI = Launch(master_worker=True, master_sockets=1)
DEMO = """global
    maxconn 4096
    stats socket /run/haproxy.sock mode 600 level admin
    server-state-file /run/haproxy.state
defaults
    mode http
frontend lbsync-http
    bind 127.0.0.1:8080
    default_backend shop
backend shop
    server blue-1 127.0.0.1:9101 weight 128 check inter 1000
    server blue-2 127.0.0.1:9102 weight 128 check inter 1000
    server green-1 127.0.0.1:9103 weight 256 check inter 1000
"""


@pytest.mark.parametrize(
    ("text", "launch", "needed"),
    [
        (ONE_THREAD, Launch(), 2013),
        (ONE_THREAD.replace("nbthread 1", "nbthread 4"), Launch(), 2022),
        (ONE_THREAD + "    stats socket /s.sock\n", Launch(), 2024),
        (ONE_THREAD + "    stats socket /s.sock\n    stats socket /t.sock\n", Launch(), 2025),
        (ONE_THREAD + "    stats socket /s.sock\n    stats maxconn 3\n", MASTER_CLI, 2029),
        (ONE_THREAD, Launch(master_worker=True), 2024),
        (ONE_THREAD, MASTER_CLI, 2035),
        (
            ONE_THREAD + "frontend f\n    bind 127.0.0.1:18080-18084,127.0.0.1:18090\n"
            "    bind unix@/tmp/u.sock\n",
            Launch(),
            2020,
        ),
        (
            ONE_THREAD + "backend b\n    server s1 127.0.0.1:1 check inter 1000\n"
            "    server s2 127.0.0.1:2 weight 2 check\n    server s3 127.0.0.1:3\n",
            Launch(),
            2015,
        ),
        (ONE_THREAD + "    ulimit-n 3000\n", Launch(), 3000),
        (DEMO, MASTER_CLI, 8235),
    ],
)
def test_the_count_is_what_haproxy_asks_for(text: str, launch: Launch, needed: int) -> None:
    found = demand(text, cpus=2, launch=launch)
    assert found is not None
    assert found.needed == needed


def test_without_nbthread_a_thread_runs_on_each_cpu_up_to_64() -> None:
    text = "global\n    maxconn 1000\n"
    counts = [demand(text, cpus=cpus, launch=Launch()) for cpus in (2, 64, 100)]
    assert [found.needed if found else None for found in counts] == [2016, 2202, 2202]


def test_without_maxconn_or_ulimit_n_haproxy_derives_maxconn_and_there_is_no_demand() -> None:
    text = "global\n    fd-hard-limit 1048576\n    nbthread 1\nfrontend f\n    bind :80\n"
    assert demand(text, cpus=2, launch=MASTER_CLI) is None


def test_settings_outside_the_global_section_do_not_count() -> None:
    text = "global\n    nbthread 1\ndefaults\n    maxconn 1000\nfrontend f\n    maxconn 10\n"
    assert demand(text, cpus=2, launch=Launch()) is None


def test_the_demos_old_default_falls_short_of_a_hard_limit_of_4096() -> None:
    found = demand(DEMO, cpus=2, launch=MASTER_CLI)
    assert found == Demand("maxconn 4096", 8235, overhead=43, fd_hard_limit=0)
    short = shortfall(found, 4096)
    assert short is not None
    assert (short.limit, short.by_fd_hard_limit) == (4096, False)
    assert short.largest_maxconn == 2026  # 2 x 2026 + 43 = 4095
    assert shortfall(found, 8235) is None


def test_a_lower_fd_hard_limit_is_the_limit_and_says_so() -> None:
    found = demand(DEMO + "global\n    fd-hard-limit 5000\n", cpus=2, launch=MASTER_CLI)
    assert found is not None
    short = shortfall(found, 20000)
    assert short is not None
    assert (short.limit, short.by_fd_hard_limit) == (5000, True)
    assert shortfall(found, None) == short


def test_no_limit_at_all_always_fits() -> None:
    found = demand(DEMO, cpus=2, launch=MASTER_CLI)
    assert found is not None
    assert shortfall(found, None) is None


def test_with_ulimit_n_no_maxconn_is_suggested() -> None:
    found = demand(ONE_THREAD + "    ulimit-n 9000\n", cpus=2, launch=Launch())
    assert found is not None
    short = shortfall(found, 4096)
    assert short is not None
    assert (found.setting, short.largest_maxconn) == ("ulimit-n 9000", None)


SOCKET = Path("/run/haproxy/master.sock")


@pytest.mark.parametrize(
    ("reload", "launch"),
    [
        (ReloadConfig(method=ReloadMethod.MASTER_CLI, socket=SOCKET), MASTER_CLI),
        (ReloadConfig(method=ReloadMethod.SIGNAL), Launch(master_worker=True)),
        (ReloadConfig(method=ReloadMethod.DOCKER, container="haproxy"), Launch(master_worker=True)),
        (
            ReloadConfig(method=ReloadMethod.DOCKER, container="haproxy", socket=SOCKET),
            MASTER_CLI,
        ),
        (ReloadConfig(method=ReloadMethod.COMMAND), Launch()),
        (ReloadConfig(method=ReloadMethod.NONE), Launch()),
    ],
)
def test_the_reload_method_says_how_haproxy_runs(reload: ReloadConfig, launch: Launch) -> None:
    assert launch_of(reload) == launch
