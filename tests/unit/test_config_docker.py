"""`reload = { method = "docker" }`: the container, the engine, and the master socket only
where HAProxy has one."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbsync.config import ConfigError, ReloadMethod, TargetConfig, parse


def target(reload: dict[str, object], kind: str = "haproxy") -> TargetConfig:
    document = {
        "source": {"file": {"path": "services.toml"}},
        "target": [{"kind": kind, "dest": "/etc/haproxy/haproxy.cfg", "reload": reload}],
    }
    return parse(document, Path("/etc/lbsync/lbsync.toml")).targets[0]


def test_a_docker_reload_names_its_container_and_signals_by_kind() -> None:
    haproxy = target({"method": "docker", "container": "haproxy"})
    nginx = target({"method": "docker", "container": "web.proxy-1"}, kind="nginx")
    assert haproxy.reload.method is ReloadMethod.DOCKER
    assert (haproxy.reload.container, haproxy.reload.signal) == ("haproxy", "USR2")
    assert (nginx.reload.container, nginx.reload.signal) == ("web.proxy-1", "HUP")
    assert haproxy.reload.docker_host == ""  # $DOCKER_HOST, else the engine's own socket


def test_with_the_master_socket_weights_go_through_the_runtime_api() -> None:
    shared = target(
        {"method": "docker", "container": "haproxy", "socket": "/run/haproxy/master.sock"}
    )
    alone = target({"method": "docker", "container": "haproxy"})
    assert shared.reload.master_socket == Path("/run/haproxy/master.sock")
    assert shared.runtime is True
    assert (alone.reload.master_socket, alone.runtime) == (None, False)


@pytest.mark.parametrize(
    ("reload", "kind", "named"),
    [
        pytest.param({"method": "docker"}, "haproxy", "reload.container", id="no container"),
        pytest.param(
            {"method": "docker", "container": "a b"}, "haproxy", "reload.container", id="a space"
        ),
        pytest.param(
            {"method": "docker", "container": "-x"}, "haproxy", "reload.container", id="a dash"
        ),
        pytest.param(
            {"method": "docker", "container": "web", "socket": "/run/nginx/master.sock"},
            "nginx",
            "reload.socket",
            id="nginx has no master socket",
        ),
        pytest.param(
            {"method": "docker", "container": "web", "dockerhost": "unix:///x"},
            "haproxy",
            "dockerhost",
            id="unknown setting",
        ),
    ],
)
def test_a_docker_reload_that_cannot_work_is_refused_naming_the_setting(
    reload: dict[str, object], kind: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        target(reload, kind)
