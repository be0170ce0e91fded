"""The plan: nothing, runtime, reload or full, from the rendered, on-disk and running files."""

from __future__ import annotations

import pytest

from lbsync.haproxy import layout
from lbsync.haproxy.operations import AddServer, DelServer, SetWeight
from lbsync.pipeline.decision import Decision, Plan, Running, decide

HEAD = """global
    stats socket /run/haproxy.sock mode 600 level admin
defaults
    mode http
    default-server init-addr last,libc,none
frontend web
    bind 127.0.0.1:8080
    default_backend shop
"""
SHOP = "backend shop\n    balance roundrobin\n"
BLUE_1 = "    server blue-1 127.0.0.1:9101 weight {} check inter 2000\n"
BLUE_2 = "    server blue-2 127.0.0.1:9102 weight {} check inter 2000\n"
GREEN_1 = "    server green-1 127.0.0.1:9201 weight {} check inter 2000\n"


def config(*lines: str, head: str = HEAD, backend: str = SHOP) -> bytes:
    return (head + backend + "".join(lines)).encode()


BASE = config(BLUE_1.format(256), GREEN_1.format(28))


def decide_with_runtime(
    rendered: bytes, running: bytes | None, *, on_disk: bytes | None = BASE
) -> Decision:
    """The decision for a target with a runtime API whose proxy runs validated `running` bytes."""
    known = None if running is None else Running(running, layout.parse(running.decode()), True)
    return decide(rendered, on_disk=on_disk, running=known, layout=layout.parse(rendered.decode()))


@pytest.mark.parametrize(
    ("rendered", "on_disk", "running", "expected"),
    [
        pytest.param(BASE, BASE, BASE, Plan.NOTHING, id="disk and proxy up to date"),
        pytest.param(BASE, BASE, b"old", Plan.RELOAD, id="disk right, proxy runs older bytes"),
        pytest.param(BASE, BASE, None, Plan.RELOAD, id="disk right, proxy state unknown"),
        pytest.param(BASE, b"old", b"old", Plan.FULL, id="new bytes"),
        pytest.param(BASE, b"old", BASE, Plan.FULL, id="disk lags although proxy runs them"),
        pytest.param(BASE, None, None, Plan.FULL, id="no file yet"),
        pytest.param(b"", None, None, Plan.FULL, id="empty render, no file"),
    ],
)
def test_without_a_runtime_api_the_plan_compares_bytes(
    rendered: bytes, on_disk: bytes | None, running: bytes | None, expected: Plan
) -> None:
    decision = decide(
        rendered, on_disk=on_disk, running=None if running is None else Running(running)
    )
    assert decision.plan is expected
    assert decision.operations == ()
    assert decision.write is (rendered != on_disk)


def test_a_weight_change_is_one_set_weight_and_skips_the_validator() -> None:
    new = config(BLUE_1.format(256), GREEN_1.format(64))
    decision = decide_with_runtime(new, BASE)
    assert decision == Decision(
        Plan.RUNTIME, (SetWeight("shop", "green-1", 64),), write=True, validate=False
    )


def test_a_weight_change_from_a_file_not_validated_here_is_validated() -> None:
    new = config(BLUE_1.format(256), GREEN_1.format(64))
    running = Running(BASE, layout.parse(BASE.decode()), validated=False)
    decision = decide(new, on_disk=BASE, running=running, layout=layout.parse(new.decode()))
    assert decision.plan is Plan.RUNTIME and decision.validate


def test_a_joining_server_is_added_with_its_line_and_its_check_then_validated() -> None:
    new = config(BLUE_1.format(256), BLUE_2.format(256), GREEN_1.format(28))
    decision = decide_with_runtime(new, BASE)
    arguments = ("127.0.0.1:9102", "weight", "256", "check", "inter", "2000")
    assert decision.operations == (AddServer("shop", "blue-2", arguments, 256, checked=True),)
    assert decision.plan is Plan.RUNTIME and decision.validate


def test_servers_join_before_weights_change_and_leave_last() -> None:
    new = config(BLUE_2.format(100), GREEN_1.format(256))
    decision = decide_with_runtime(new, BASE)
    assert [type(operation) for operation in decision.operations] == [
        AddServer,
        SetWeight,
        DelServer,
    ]
    assert decision.operations[2] == DelServer("shop", "blue-1")


def test_a_file_already_on_disk_but_not_running_is_a_runtime_plan_without_write() -> None:
    new = config(BLUE_1.format(200), GREEN_1.format(28))
    decision = decide_with_runtime(new, BASE, on_disk=new)
    assert decision.plan is Plan.RUNTIME and not decision.write


STRUCTURAL = [
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28), head=HEAD.replace("8080", "8081")),
        "outside backend server lines",
        id="frontend changed",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28), backend=SHOP + "    option httpchk\n"),
        "outside backend server lines",
        id="backend option added",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28).replace("9201", "9202")),
        "changed beyond its weight",
        id="address changed",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28).replace("inter 2000", "inter 1000")),
        "changed beyond its weight",
        id="check interval changed",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(300)),
        "outside 0-256",
        id="weight out of range",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28).replace(" weight 28", "")),
        "weight given as a plain integer on only one side",
        id="weight removed",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28), '    server x "1.2.3.4:80" weight 1\n'),
        "cannot be sent to the runtime API",
        id="quoted line joins",
    ),
    pytest.param(
        config(BLUE_1.format(256), GREEN_1.format(28), GREEN_1.format(1)),
        "two servers with the same name",
        id="duplicate server",
    ),
]


@pytest.mark.parametrize(("rendered", "reason"), STRUCTURAL)
def test_anything_but_weights_joins_and_leaves_is_a_full_reload(
    rendered: bytes, reason: str
) -> None:
    decision = decide_with_runtime(rendered, BASE)
    assert decision.plan is Plan.FULL
    assert decision.write and decision.validate
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("backend", "dynamic"),
    [
        pytest.param("backend shop\n    balance roundrobin\n", True, id="roundrobin"),
        pytest.param("backend shop\n    balance leastconn\n", True, id="leastconn"),
        pytest.param("backend shop\n    balance random\n", True, id="random"),
        pytest.param("backend shop\n", True, id="default roundrobin"),
        pytest.param("backend shop\n    balance static-rr\n", False, id="static-rr"),
        pytest.param("backend shop\n    balance source\n", False, id="map-based hash"),
        pytest.param(
            "backend shop\n    balance hdr(host)\n    hash-type consistent\n",
            True,
            id="consistent hash",
        ),
    ],
)
def test_only_dynamic_balance_algorithms_take_runtime_weights(backend: str, dynamic: bool) -> None:
    old = config(BLUE_1.format(256), GREEN_1.format(28), backend=backend)
    new = config(BLUE_1.format(256), GREEN_1.format(64), backend=backend)
    decision = decide_with_runtime(new, old, on_disk=old)
    assert decision.plan is (Plan.RUNTIME if dynamic else Plan.FULL)


def test_the_balance_of_a_defaults_section_is_inherited() -> None:
    head = HEAD.replace("    mode http\n", "    mode http\n    balance static-rr\n")
    old = config(BLUE_1.format(256), GREEN_1.format(28), head=head, backend="backend shop\n")
    new = config(BLUE_1.format(256), GREEN_1.format(64), head=head, backend="backend shop\n")
    assert decide_with_runtime(new, old, on_disk=old).plan is Plan.FULL


def test_default_server_settings_make_joins_reload_but_not_weights() -> None:
    head = HEAD.replace("init-addr last,libc,none", "check inter 1000")
    old = config(BLUE_1.format(256), GREEN_1.format(28), head=head)
    weights = config(BLUE_1.format(256), GREEN_1.format(64), head=head)
    joins = config(BLUE_1.format(256), BLUE_2.format(1), GREEN_1.format(28), head=head)
    assert decide_with_runtime(weights, old, on_disk=old).plan is Plan.RUNTIME
    joined = decide_with_runtime(joins, old, on_disk=old)
    assert joined.plan is Plan.FULL and "default-server" in joined.reason


def test_cosmetic_spacing_in_server_lines_needs_no_operation() -> None:
    new = BASE.replace(b"weight 28 check", b"weight 28  check")
    decision = decide_with_runtime(new, BASE)
    assert decision == Decision(Plan.RUNTIME, (), write=True, validate=False)


def test_plan_values_are_their_names() -> None:
    assert [str(member) for member in Plan] == ["nothing", "runtime", "reload", "full"]
