"""The desired state (stable names, route conflicts) and rendering (pure, deterministic)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from support.desired import Values, at, rendered, state_of

from lbsync.core.servers import server_name
from lbsync.core.state import build
from lbsync.model.catalog import merge
from lbsync.model.contract import parse_values
from lbsync.model.values import Snapshot
from lbsync.pipeline.render import (
    KvView,
    RenderError,
    http_rules,
    load_template,
    render,
    virtual_hosts,
)
from lbsync.sources.file import read_snapshot


def route(name: str, path: str = "/", *hosts: str) -> Values:
    return {f"services/{name}/route": {"path": path, "hosts": list(hosts)}}


CHECKED = {"hosts": ["shop.localhost"], "check": {"path": "/health", "interval_ms": 1000}}


def shop(
    groups: dict[str, float], *, green: Mapping[str, object] | None = None, **split: str
) -> Values:
    """The demo's shop: 2 blue and 1 green instances behind a checked route."""
    return {
        "services/shop/route": CHECKED,
        "services/shop/split": {"groups": groups, **split},
        "services/shop/instances/blue-1": at(9101, "blue"),
        "services/shop/instances/blue-2": at(9102, "blue"),
        "services/shop/instances/green-1": at(9103, "green", **(green or {})),
    }


def template_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom.j2"
    path.write_text(text)
    return path


# --- names ---


@pytest.mark.parametrize("instance_id", ["blue-1", "web_2.a", "A-b_c.d"])
def test_a_safe_instance_id_is_its_own_server_name(instance_id: str) -> None:
    assert server_name(instance_id) == instance_id


def test_an_unsafe_instance_id_is_sanitized_with_a_stable_hash_suffix() -> None:
    name = server_name("node1:web@dc1")
    assert re.fullmatch(r"node1_web_dc1-[0-9a-f]{8}", name)
    assert server_name("node1:web@dc1") == name


def test_server_names_stay_unique_when_sanitizing_maps_ids_together() -> None:
    ids = ["a:b", "a@b", "a_b", "a.b"]
    assert len({server_name(instance_id) for instance_id in ids}) == len(ids)


def test_the_state_holds_servers_sorted_by_their_stable_names() -> None:
    state = state_of(
        {**route("web"), "services/web/instances/z:1": at(1), "services/web/instances/a-1": at(2)}
    )
    web = state.service("web")
    assert web is not None
    assert [s.name for s in web.servers] == ["a-1", server_name("z:1")]
    assert [s.instance_id for s in web.servers] == ["a-1", "z:1"]


# --- route conflicts ---


def test_a_second_service_on_the_same_host_and_path_is_not_exposed() -> None:
    state = state_of(
        {
            **route("alpha", "/", "shop.example.com", "www.example.com"),
            **route("beta", "/", "www.example.com"),
        }
    )
    assert [service.name for service in state.exposed] == ["alpha"]
    beta = state.service("beta")
    assert beta is not None and beta.route is None
    assert [(r.where, r.message) for r in state.rejected] == [
        ("test services/beta/route", "host and path already routed to service alpha; not exposed"),
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("/", "a.example.com"), ("/", "b.example.com"), id="other host"),
        pytest.param(("/", "a.example.com"), ("/api", "a.example.com"), id="other path"),
        pytest.param(("/",), ("/", "a.example.com"), id="any host and one host"),
    ],
)
def test_routes_that_differ_in_host_or_path_are_both_exposed(
    first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    state = state_of({**route("alpha", *first), **route("beta", *second)})
    assert [service.name for service in state.exposed] == ["alpha", "beta"]
    assert state.rejected == ()


def test_paths_that_differ_only_by_a_trailing_slash_conflict() -> None:
    state = state_of({**route("alpha", "/api"), **route("beta", "/api/")})
    assert [service.name for service in state.exposed] == ["alpha"]


# --- determinism ---


def test_the_same_services_file_builds_equal_states_and_renders_equal_bytes(
    tmp_path: Path,
) -> None:
    services = tmp_path / "services.toml"
    services.write_text(
        '[services.shop.route]\nhosts = ["shop.localhost"]\n'
        "[services.shop.split]\ngroups = { blue = 90, green = 10 }\n"
        '[services.shop.instances.blue-1]\naddress = "127.0.0.1"\nport = 9101\ntags = ["blue"]\n'
        '[services.shop.instances.green-1]\naddress = "127.0.0.1"\nport = 9103\ntags = ["green"]\n'
    )
    first = build(merge([read_snapshot(services)]))
    second = build(merge([read_snapshot(services)]))
    assert first == second
    for kind in ("haproxy", "nginx"):
        assert rendered(first, kind, tmp_path) == rendered(second, kind, tmp_path)


def test_rendering_one_state_twice_gives_identical_text(tmp_path: Path) -> None:
    state = state_of(shop({"blue": 90, "green": 10}))
    assert rendered(state, "haproxy", tmp_path) == rendered(state, "haproxy", tmp_path)


# --- rule order and virtual hosts ---


def test_http_rules_put_longer_paths_first_then_host_specific_before_any_host() -> None:
    state = state_of(
        {
            **route("www", "/"),
            **route("api", "/api"),
            **route("shop", "/", "shop.example.com"),
            **route("shop-api", "/api/", "shop.example.com"),
            **route("v2", "/api/v2"),
        }
    )
    order = [(rule.service.name, rule.path_exact) for rule in http_rules(state)]
    assert order == [
        ("v2", "/api/v2"),
        ("shop-api", "/api"),
        ("api", "/api"),
        ("shop", ""),
        ("www", ""),
    ]


def test_virtual_hosts_add_any_host_routes_on_other_paths_and_a_default_server() -> None:
    state = state_of(
        {
            **route("www", "/"),
            **route("api", "/api"),
            **route("shop", "/", "shop.example.com"),
            **route("blog", "/blog", "b.example.com"),
        }
    )
    blocks = [
        (vhost.names, [(loc.path, loc.service.name) for loc in vhost.locations])
        for vhost in virtual_hosts(state)
    ]
    assert blocks == [
        (("b.example.com",), [("/blog", "blog"), ("/api", "api"), ("/", "www")]),
        (("shop.example.com",), [("/api", "api"), ("/", "shop")]),
        ((), [("/api", "api"), ("/", "www")]),
    ]


def test_a_default_server_exists_even_without_any_host_routes() -> None:
    assert [(v.names, v.locations) for v in virtual_hosts(state_of({}))] == [((), ())]


# --- kv ---


def test_kv_view_reads_keys_lists_children_and_tells_existence() -> None:
    kv = KvView({"app/a": "1", "app/sub/b": "2", "apple": "3", "top": "4"})
    assert kv.get("/app/a/") == "1"
    assert kv.get("app/none") is None
    assert kv.get("app/none", "fallback") == "fallback"
    assert kv.ls() == ["app", "apple", "top"]
    assert kv.ls("app") == ["a", "sub"]
    assert kv.ls("/app/sub/") == ["b"]
    assert kv.ls("nothing") == []
    assert kv.exists("app/sub/b")
    assert not kv.exists("app/sub")


# --- template errors and context ---


def test_a_template_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = template_file(tmp_path, "global\n{% if %}\n")
    with pytest.raises(RenderError) as caught:
        load_template(path)
    assert f"{path}:2:" in str(caught.value)


def test_a_missing_template_is_a_render_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=re.escape(str(tmp_path / "absent.j2"))):
        load_template(tmp_path / "absent.j2")


@pytest.mark.parametrize(
    "expression",
    [
        "services[0].__class__.__mro__",
        "services[0]._private",
        "services[0].servers[0].__reduce__()",
        "services[0].route.balance.__class__",
        "http_rules[0].__init__.__globals__",
    ],
)
def test_the_sandbox_still_refuses_private_names_of_the_context_values(
    tmp_path: Path, expression: str
) -> None:
    """Attribute reads of lbsync's own values skip the sandbox's checks, names with `_` do not."""
    template = load_template(template_file(tmp_path, f"{{{{ {expression} }}}}\n"))
    state = state_of({**route("shop", "/", "shop.localhost"), **shop({"green": 10})})
    with pytest.raises(RenderError):
        render(state, template, {})


def test_the_context_values_read_as_before(tmp_path: Path) -> None:
    text = "{% for s in services %}{{ s.name }} {{ s.route.balance.value }} "
    text += "{{ s.servers | map(attribute='weight') | join(',') }} {{ s.missing | default('-') }}"
    text += "{% endfor %}\n"
    template = load_template(template_file(tmp_path, text))
    state = state_of(shop({"green": 10}))
    weights = ",".join(str(server.weight) for server in state.services[0].servers)
    assert render(state, template, {}) == f"shop roundrobin {weights} -"


def test_an_undefined_variable_is_a_render_error_naming_the_template(tmp_path: Path) -> None:
    template = load_template(template_file(tmp_path, "maxconn {{ vars.maxconn }}\n"))
    with pytest.raises(RenderError) as caught:
        render(state_of({}), template, {})
    assert str(tmp_path / "custom.j2") in str(caught.value)
    assert "maxconn" in str(caught.value)


def test_templates_read_settings_kv_vars_and_the_context_version(tmp_path: Path) -> None:
    values: Values = {"settings/owner": "platform", "settings/limits": {"rps": 10}}
    entries, _ = parse_values(values, describe=str)
    snapshot = Snapshot(source="t", entries=entries, raw=(("app/motd", "hi"), ("app/x/y", "1")))
    text = (
        "{{ settings.owner }} {{ settings.limits.rps }} {{ kv.get('app/motd') }} "
        "{{ kv.ls('app') | join(',') }} {{ vars.port }} v{{ lbsync.context_version }}\n"
    )
    out = render(
        build(merge([snapshot])), load_template(template_file(tmp_path, text)), {"port": 81}
    )
    assert out == "platform 10 hi motd,x 81 v3\n"


# --- shipped templates, text level ---


def test_haproxy_text_has_weighted_servers_with_checks_and_a_host_rule(tmp_path: Path) -> None:
    text = rendered(state_of(shop({"blue": 90, "green": 10})), "haproxy", tmp_path)
    assert "    bind 127.0.0.1:8080\n" in text
    assert "    acl r1-host var(txn.lbsync_host) -m str shop.localhost\n" in text
    assert "    use_backend shop if r1-host\n" in text
    assert "\nbackend shop\n    balance roundrobin\n" in text
    assert "    http-check send meth GET uri /health\n" in text
    assert "    server blue-1 127.0.0.1:9101 weight 256 check inter 1000\n" in text
    assert "    server blue-2 127.0.0.1:9102 weight 256 check inter 1000\n" in text
    assert "    server green-1 127.0.0.1:9103 weight 57 check inter 1000\n" in text
    assert "rand(10000)" not in text
    assert f"stats socket {tmp_path / 'run'}/haproxy.sock" in text


def test_a_100_0_split_gives_green_weight_0_and_nginx_down(tmp_path: Path) -> None:
    state = state_of(shop({"blue": 100, "green": 0}))
    assert "server green-1 127.0.0.1:9103 weight 0 check" in rendered(state, "haproxy", tmp_path)
    nginx = rendered(state, "nginx", tmp_path)
    assert "        server 127.0.0.1:9103 down;\n" in nginx
    assert "        server 127.0.0.1:9101 weight=256;\n" in nginx
    assert "        server_name shop.localhost;\n" in nginx


def test_an_unserved_share_renders_the_503_rule_with_its_basis_points(tmp_path: Path) -> None:
    down = {"health": "critical"}
    state = state_of(shop({"blue": 87.5, "green": 12.5}, green=down, on_empty="fail"))
    haproxy = rendered(state, "haproxy", tmp_path)
    assert "if { rand(10000) -m int lt 1250 }" in haproxy
    nginx = rendered(state, "nginx", tmp_path)
    assert re.search(r'split_clients "\$\{request_id\}" \$lbsync_unserved_1 \{\s+12\.50% 1;', nginx)
    assert "if ($lbsync_unserved_1) {" in nginx


def test_a_service_without_eligible_servers_answers_503_in_nginx(tmp_path: Path) -> None:
    state = state_of({**route("web"), "services/web/instances/w-1": at(1, health="critical")})
    nginx = rendered(state, "nginx", tmp_path)
    assert "upstream lbsync_web" not in nginx
    assert 'return 503 "no eligible instance for this service\\n";' in nginx
    assert "if { rand(10000) -m int lt 10000 }" in rendered(state, "haproxy", tmp_path)


def test_ipv6_servers_are_rendered_in_brackets(tmp_path: Path) -> None:
    state = state_of({**route("web"), "services/web/instances/w-1": {"address": "::1", "port": 81}})
    assert "    server w-1 [::1]:81 weight 256\n" in rendered(state, "haproxy", tmp_path)
    assert "        server [::1]:81 weight=256;\n" in rendered(state, "nginx", tmp_path)


def test_a_route_that_redirects_is_exposed_without_instances_and_pins_no_group() -> None:
    state = state_of(
        {
            "services/moved/route": {"redirect": {"code": 301, "to": "https://x.example$path"}},
            "services/moved/split": {"groups": {"canary": 5}, "pin": {"header": "X-Canary"}},
            "services/api/route": {"path": "/api"},
            "services/api/split": {"groups": {"canary": 5}, "pin": {"header": "X-Canary"}},
        }
    )
    moved, api = state.service("moved"), state.service("api")
    assert moved is not None and api is not None
    assert moved.exposed and moved.redirects and not moved.servers
    assert moved.pin is None and not moved.routes_by_group
    assert not api.redirects and api.pin is not None and api.routes_by_group
