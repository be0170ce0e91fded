"""The `runtime` setting of a target: on by default where HAProxy's master socket is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbsync.config import ConfigError, parse

MASTER = {"method": "master-cli", "socket": "/run/haproxy/master.sock"}


def target(**settings: object) -> bool:
    document = {
        "source": {"file": {"path": "services.toml"}},
        "target": [{"dest": "/run/lbsync/out.cfg", **settings}],
    }
    return parse(document, Path("/etc/lbsync/lbsync.toml")).targets[0].runtime


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({"reload": MASTER}, True, id="haproxy with master-cli"),
        pytest.param({"reload": MASTER, "runtime": False}, False, id="turned off"),
        pytest.param({}, False, id="haproxy without a reload"),
        pytest.param(
            {"reload": {"method": "signal", "pidfile": "/run/haproxy.pid"}}, False, id="signal"
        ),
        pytest.param({"kind": "nginx"}, False, id="nginx"),
    ],
)
def test_runtime_defaults_to_haproxy_reloaded_through_its_master_socket(
    settings: dict[str, object], expected: bool
) -> None:
    assert target(**settings) is expected


def test_runtime_without_a_master_socket_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"target\[0\]\.runtime: needs kind haproxy"):
        target(kind="nginx", runtime=True)


def test_runtime_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"target\[0\]\.runtime: must be true or false"):
        target(reload=MASTER, runtime="yes")
