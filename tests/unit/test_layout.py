"""The layout parser and the runtime module's pure parts: commands, `show servers state`, checks."""

from __future__ import annotations

from pathlib import Path

from lbsync.config import parse
from lbsync.core.state import build
from lbsync.haproxy import layout
from lbsync.haproxy.operations import AddServer, DelServer, SetWeight
from lbsync.haproxy.runtime import (
    FORCED_MAINTENANCE,
    ServerReading,
    check,
    commands,
    parse_servers_state,
)
from lbsync.model.values import Catalog, Instance, Route, ServiceSpec
from lbsync.pipeline.render import load_template, render

TEXT = """global
    maxconn 10
defaults
    mode http
backend shop
    balance leastconn
    server a 10.0.0.1:80 weight 3 check
    server b [::1]:80 weight 0
    http-request deny if FALSE
listen stats
    server c 10.0.0.3:80
peers mine
    server p 10.0.0.9:1024
"""

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 shop 1 a 10.0.0.1 2 0 3 3 4 15 3 4 6 0 0 0 - 80 - 0 0 - - 0
3 shop 2 b ::1 2 0 0 0 4 1 0 0 0 0 0 0 - 80 - 0 0 - - 0

"""  # noqa: E501


def test_server_lines_of_backends_and_listens_leave_the_skeleton() -> None:
    parsed = layout.parse(TEXT)
    assert [backend.name for backend in parsed.backends] == ["shop", "stats"]
    shop = parsed.backends[0]
    assert [(s.name, s.address, s.weight) for s in shop.servers] == [
        ("a", "10.0.0.1:80", 3),
        ("b", "[::1]:80", 0),
    ]
    assert shop.servers[0].checked and not shop.servers[1].checked
    assert shop.balance == "leastconn" and shop.dynamic
    assert "server a" not in parsed.skeleton and "http-request deny" in parsed.skeleton
    assert "server p 10.0.0.9:1024" in parsed.skeleton  # peers' servers are structure
    assert parsed.backends[1].servers[0].weight is None


def test_the_settings_of_a_server_line_leave_out_only_its_weight() -> None:
    line = layout.parse("backend x\n    server a 1.2.3.4:80 weight 7 check inter 2000\n")
    server = line.backends[0].servers[0]
    assert server.settings == ("1.2.3.4:80", "check", "inter", "2000")


def test_the_shipped_template_renders_plain_dynamic_backends() -> None:
    instances = tuple(
        Instance(service="shop", id=f"i{n}", address="127.0.0.1", port=9000 + n) for n in (1, 2)
    )
    catalog = Catalog(
        services=(
            ServiceSpec(
                name="shop", route=Route(service="shop", hosts=("a.b",)), instances=instances
            ),
        )
    )
    document = {
        "source": {"file": {"path": "services.toml"}},
        "target": [{"kind": "haproxy", "dest": "/run/lbsync/haproxy.cfg"}],
    }
    target = parse(document, Path("/etc/lbsync/lbsync.toml")).targets[0]
    template = load_template(target.template)
    variables = target.vars
    parsed = layout.parse(render(build(catalog), template, variables))
    shop = next(backend for backend in parsed.backends if backend.name == "shop")
    assert shop.dynamic and not parsed.inherited_defaults
    assert [(s.name, s.weight, s.plain) for s in shop.servers] == [
        ("i1", 256, True),
        ("i2", 256, True),
    ]


def test_each_operation_becomes_its_runtime_api_commands() -> None:
    assert commands(SetWeight("shop", "a", 12)) == ["set server shop/a weight 12"]
    assert commands(AddServer("shop", "c", ("10.0.0.3:80", "weight", "5", "check"), 5, True)) == [
        "add server shop/c 10.0.0.3:80 weight 5 check",
        "enable health shop/c",
        "set server shop/c state ready",
    ]
    assert commands(DelServer("shop", "a")) == [
        "set server shop/a state maint",
        "del server shop/a",
    ]


def test_show_servers_state_is_read_by_column_name() -> None:
    seen = parse_servers_state(STATE + STATE.replace(" a ", " d "))
    assert seen[("shop", "a")] == ServerReading("shop", "a", "10.0.0.1", "80", 0, 3, False)
    assert set(seen) == {("shop", "a"), ("shop", "b"), ("shop", "d")}


def test_a_server_that_speaks_tls_unlike_its_file_line_is_a_problem() -> None:
    with_tls = layout.parse(TEXT.replace("weight 3", "weight 3 ssl verify none"))
    assert check(with_tls.backends[:1], parse_servers_state(STATE)).problems == (
        "shop/a does not speak TLS, unlike the file's server line",
    )
    speaking = STATE.replace(" - 80 - 0 0 - - 0\n3 shop 2", " - 80 - 1 0 - - 0\n3 shop 2")
    assert check(with_tls.backends[:1], parse_servers_state(speaking)).problems == ()
    assert check(layout.parse(TEXT).backends[:1], parse_servers_state(speaking)).problems == (
        "shop/a speaks TLS, unlike the file's server line",
    )
    unreported = "\n".join(line.rsplit(" ", 5)[0] for line in STATE.splitlines())
    assert parse_servers_state(unreported)[("shop", "a")].use_ssl is None


def test_check_accepts_the_servers_the_file_describes() -> None:
    parsed = layout.parse(TEXT)
    seen = parse_servers_state(STATE)
    assert check(parsed.backends[:1], seen).problems == ()


def test_check_names_wrong_weights_missing_servers_and_strays() -> None:
    parsed = layout.parse(TEXT.replace("weight 3", "weight 4"))
    seen = parse_servers_state(STATE.replace(" b ::1", " x ::1"))
    problems = check(parsed.backends[:1], seen).problems
    assert problems == (
        "shop/a has weight 3, the file 4",
        "shop/b is missing",
        "shop/x is not in the file but still serves",
    )


def test_a_removed_server_still_in_maintenance_is_lingering_not_a_problem() -> None:
    parsed = layout.parse(TEXT.replace("    server b [::1]:80 weight 0\n", ""))
    seen = parse_servers_state(STATE)
    seen[("shop", "b")] = ServerReading("shop", "b", "::1", "80", FORCED_MAINTENANCE, 0)
    result = check(parsed.backends[:1], seen)
    assert result.problems == () and result.lingering == frozenset({("shop", "b")})


def test_a_server_in_forced_maintenance_or_at_another_address_is_a_problem() -> None:
    parsed = layout.parse(TEXT)
    seen = parse_servers_state(STATE)
    seen[("shop", "a")] = ServerReading("shop", "a", "10.0.0.1", "80", FORCED_MAINTENANCE, 3)
    seen[("shop", "b")] = ServerReading("shop", "b", "::2", "80", 0, 0)
    problems = check(parsed.backends[:1], seen).problems
    assert problems[0].startswith("shop/a is in maintenance")
    assert problems[1] == "shop/b has address ::2:80, the file [::1]:80"
