"""What lbsync reads from a container engine's answers, and says when it cannot reach one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from lbsync.containers.confirm import refusal
from lbsync.containers.engine import EngineError, engine_address, process_ids, unreachable_reason


def test_the_pid_column_is_found_by_its_title() -> None:
    top = {
        "Titles": ["USER", "PID", "PPID", "COMMAND"],
        "Processes": [["haproxy", "1", "0", "haproxy -W"], ["haproxy", "7", "1", "haproxy -W"]],
    }
    assert process_ids(top) == frozenset({1, 7})


@pytest.mark.parametrize(
    "top",
    [
        {"Titles": ["USER"], "Processes": [["root"]]},
        {"Titles": ["USER", "PID"], "Processes": [["root"]]},
        {"Titles": ["USER", "PID"], "Processes": [None]},
        {"Titles": "PID", "Processes": []},
        {},
    ],
)
def test_an_answer_of_another_shape_is_an_engine_error(top: dict[str, object]) -> None:
    with pytest.raises(EngineError, match="unexpected answer to top"):
        process_ids(top)


def test_the_engine_address_is_the_setting_then_docker_host_then_dockers_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert engine_address("") == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/podman/podman.sock")
    assert engine_address("") == "unix:///run/podman/podman.sock"
    assert engine_address("tcp://10.0.0.1:2375") == "tcp://10.0.0.1:2375"


def chained(cause: BaseException) -> Exception:
    """An SDK error whose cause, two levels down, is `cause` (as requests wraps it)."""
    try:
        try:
            raise cause
        except OSError as inner:
            raise requests.ConnectionError("Connection aborted.") from inner
    except requests.ConnectionError as outer:
        return outer


def test_a_missing_socket_says_to_mount_it(tmp_path: Path) -> None:
    said = unreachable_reason(f"unix://{tmp_path}/docker.sock", chained(FileNotFoundError(2, "x")))
    assert f"no engine socket at {tmp_path}/docker.sock" in said
    assert "reload.docker_host" in said


def test_a_forbidden_socket_names_its_group(tmp_path: Path) -> None:
    socket = tmp_path / "docker.sock"
    socket.write_text("")
    if os.geteuid() == 0:  # a group lbsync's user is not in, as on a real engine socket
        os.chown(socket, -1, 4242)
    said = unreachable_reason(f"unix://{socket}", chained(PermissionError(13, "denied")))
    group = socket.stat().st_gid
    assert f"permission denied on {socket}" in said
    assert f"socket's group (gid {group})" in said
    assert f'group_add: ["{group}"]' in said


def test_a_refused_connection_names_the_address() -> None:
    said = unreachable_reason("tcp://127.0.0.1:1", chained(ConnectionRefusedError(111, "no")))
    assert said == "nothing accepts connections at tcp://127.0.0.1:1"


def test_haproxys_loading_failure_is_a_refusal_with_the_lines_before_it() -> None:
    lines = [
        "[NOTICE]   (1) : Reloading HAProxy",
        "[ALERT]    (1) : config : parsing [/etc/haproxy/haproxy.cfg:13] : unknown keyword",
        "[ALERT]    (1) : config : Fatal errors found in configuration.",
        "[WARNING]  (1) : Loading failure!",
    ]
    said = refusal(lines)
    assert said is not None
    assert said.startswith("[NOTICE]") and said.endswith("Loading failure!")
    assert "unknown keyword" in said


def test_an_alert_about_a_server_is_not_a_refusal() -> None:
    lines = [
        "[WARNING]  (7) : Server b/s1 is DOWN, reason: Layer4 connection problem",
        "[ALERT]    (7) : backend 'b' has no server available!",
        "[NOTICE]   (1) : Loading success.",
    ]
    assert refusal(lines) is None


def test_nginx_emerg_is_a_refusal() -> None:
    said = refusal(['nginx: [emerg] unknown directive "bogus" in /etc/nginx/nginx.conf:3'])
    assert said is not None and "unknown directive" in said
