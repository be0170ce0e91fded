"""Properties over arbitrary input: nothing that reaches the contract raises, every key ends as
an entry, a refusal naming it, or raw text; and whatever a catalog holds, the shipped templates
render a file the real `haproxy -c` and `nginx -t` accept.

Examples are few and the deadline off (a validator run takes ~50 ms, more on a busy machine),
so the module stays under about a minute. Failures the properties found are kept as
`@example`s next to the property that found them.
"""

from __future__ import annotations

import json
import string
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lbsync.config import EtcdSourceConfig, TargetConfig, load
from lbsync.core.state import build
from lbsync.model import checks
from lbsync.model.catalog import merge
from lbsync.model.contract import parse_raw, parse_values
from lbsync.model.held import HeldKeys
from lbsync.model.keys import is_contract_key
from lbsync.model.text import shown
from lbsync.model.values import Rejection, Snapshot
from lbsync.pipeline.reconcile import TargetRunner
from lbsync.sources.consul.mapping import service_view
from lbsync.sources.etcd import EtcdSource
from lbsync.sources.file import read_snapshot

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RENDERED = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HUGE = "7" * 5000


# ---- arbitrary values ----------------------------------------------------------------------

# any code point, surrogates and control characters included
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
trees = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)


def nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


deep_trees = st.builds(nested, trees, st.integers(0, 1200))


def json_text(value: Any) -> str:
    """JSON text of a tree, as a store would hold it (NaN and Infinity included, which JSON
    has not: some writers emit them)."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return repr(value)


texts = st.one_of(
    st.builds(json_text, trees),
    st.builds(json_text, deep_trees),
    any_text,
    st.sampled_from(["", "{", '{"a": ' + HUGE + "}", "[" * 5000, '{"a": 1, "a": 2}', "\x00"]),
)
names = st.integers(0, 3).flatmap(
    lambda n: st.sampled_from(["shop", "Shop", "a.b", "i-1"]) if n else st.just("-x") | any_text
)
contract_keys = st.one_of(
    st.sampled_from(
        [
            "services/shop/route",
            "services/shop/split",
            "services/shop/instances/i1",
            "services/shop/rollout",
            "services/shop/bogus",
            "settings/owner",
            "settings/",
            "app/motd",
        ]
    ),
    st.builds("services/{}/route".format, names),
    st.builds("services/{}/split".format, names),
    st.builds("services/{}/instances/{}".format, names, names),
    st.builds("settings/{}".format, names),
    any_text,
)


def weighted(valid: st.SearchStrategy[Any], odds: int) -> st.SearchStrategy[Any]:
    """`valid` `odds` times out of `odds + 1`, else any tree (`one_of` would give each
    strategy once, however often it is listed)."""
    return st.integers(0, odds).flatmap(lambda n: valid if n else trees)


def near(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly what a field takes, sometimes anything at all."""
    return weighted(valid, 3)


instances = st.fixed_dictionaries(
    {},
    optional={
        "address": near(st.sampled_from(["127.0.0.1", "::1", "fe80::1%eth0", "db.example.com"])),
        "port": near(st.integers(-5, 70_000)),
        "tags": near(st.lists(st.sampled_from(["blue", "green"]) | any_text, max_size=3)),
        "meta": near(st.dictionaries(st.just("version") | any_text, any_text, max_size=3)),
        "weight": near(st.integers(-5, 70_000) | st.floats()),
        "health": near(st.sampled_from(["passing", "warning", "critical", "maintenance"])),
    },
)
splits = st.fixed_dictionaries(
    {},
    optional={
        "by": near(st.sampled_from(["tag", "meta:version", "meta:", "meta:a b"])),
        "groups": near(st.dictionaries(any_text, st.floats() | st.integers(), max_size=4)),
        "on_empty": near(st.sampled_from(["redistribute", "fail"])),
    },
)
routes = st.fixed_dictionaries(
    {},
    optional={
        "hosts": near(st.lists(any_text, max_size=4)),
        "path": near(st.sampled_from(["/", "/api/", "/a b"]) | any_text),
        "balance": near(st.sampled_from(["roundrobin", "leastconn", "static-rr"])),
        "check": near(
            st.fixed_dictionaries({}, optional={"path": any_text, "interval_ms": leaves})
        ),
    },
)
shaped = st.one_of(
    st.tuples(st.builds("services/{}/instances/{}".format, names, names), instances),
    st.tuples(st.builds("services/{}/split".format, names), splits),
    st.tuples(st.builds("services/{}/route".format, names), routes),
    st.tuples(contract_keys, trees | deep_trees),
)


def describe(key: str) -> str:
    return f"key {key}"


def assert_each_key_accounted_for(
    keys: set[str],
    entries: tuple[tuple[str, Any], ...],
    rejected: tuple[tuple[str, Rejection], ...],
) -> None:
    """Every contract key is an entry or a refusal that names it, never both; nothing else
    appears (raw-only contract keys, `rollout` and `split-history`, are neither)."""
    entered = {key for key, _ in entries}
    refused = {key: rejection for key, rejection in rejected}
    assert not entered & set(refused)
    assert entered | set(refused) <= keys
    for key, rejection in refused.items():
        assert rejection.where == shown(describe(key)), (key, rejection)
    for key in keys - entered - set(refused):
        assert key.split("/")[-1] in ("rollout", "split-history"), key


raw_pairs = st.one_of(
    st.tuples(contract_keys, texts), shaped.map(lambda pair: (pair[0], json_text(pair[1])))
)


@QUICK
@given(st.lists(raw_pairs, max_size=6).map(dict))
def test_parse_raw_turns_any_text_into_entries_and_named_refusals(raw: dict[str, str]) -> None:
    entries, rejected = parse_raw(raw, describe=describe)
    assert_each_key_accounted_for({key for key in raw if is_contract_key(key)}, entries, rejected)


@QUICK
@given(st.lists(shaped, max_size=6).map(dict))
def test_parse_values_turns_any_decoded_value_into_entries_and_named_refusals(
    values: dict[str, Any],
) -> None:
    entries, rejected = parse_values(values, describe=describe)
    assert_each_key_accounted_for(
        {key for key in values if is_contract_key(key)}, entries, rejected
    )


SOURCE = EtcdSource(EtcdSourceConfig(endpoints=("http://127.0.0.1:2379",)))  # opens nothing
etcd_values = st.one_of(
    st.builds(lambda text: text.encode("utf-8", "surrogatepass"), texts),
    st.binary(max_size=40),
    st.just(b'"' + b"a" * (1 << 20) + b'"'),
)


@QUICK
@given(st.dictionaries(contract_keys, etcd_values, max_size=6))
def test_the_etcd_snapshot_of_any_keys_and_bytes_accounts_for_every_key(
    values: dict[str, bytes],
) -> None:
    held = HeldKeys(SOURCE.describe)
    held.replace(values.items())
    snapshot = SOURCE.snapshot(held)
    entered = {key for key, _ in snapshot.entries}
    refused = {key: rejection for key, rejection in snapshot.rejected}
    raw = dict(snapshot.raw)
    for key in values:
        assert key in refused or key in raw, key
        assert not (key in refused and key in entered), key
        if key in refused:
            assert refused[key].where == shown(f"etcd key lbsync/{key}")
        if key in raw:
            assert key.isprintable(), key  # a raw key is text a template may print
        if key in raw and is_contract_key(key) and key not in entered:
            assert key in refused or key.split("/")[-1] in ("rollout", "split-history"), key


# ---- arbitrary TOML ------------------------------------------------------------------------


def toml_literal(value: Any) -> str:
    """A TOML literal for a tree (inline tables, arrays); inf and nan as TOML writes them.
    Arrays of one array (`nested`, 1,200 deep) are unwrapped without recursing."""
    levels = 0
    while isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value, levels = value[0], levels + 1
    if levels:
        return "[" * levels + toml_literal(value) + "]" * levels
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) == float("inf"):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"
        )
    return '""'  # None: TOML has no null


def toml_document(sections: dict[str, dict[str, Any]]) -> str:
    return "".join(
        f"[{json.dumps(section)}]\n"
        + "".join(f"{json.dumps(k)} = {toml_literal(v)}\n" for k, v in table.items())
        for section, table in sections.items()
    )


def services_document(items: list[tuple[str, Any]]) -> str:
    """`(key, value)` pairs as services-file tables: `services/<s>/<part>` and settings."""
    lines = []
    for key, value in items:
        parts = key.split("/")
        if parts[0] == "services" and len(parts) >= 3:
            header = ".".join(json.dumps(part) for part in parts)
            body = value if isinstance(value, dict) else {"value": value}
            lines.append(
                f"[{header}]\n"
                + "".join(f"{json.dumps(k)} = {toml_literal(v)}\n" for k, v in body.items())
            )
        else:
            lines.append(f"[settings]\n{json.dumps(key)} = {toml_literal(value)}\n")
    return "".join(lines)


toml_texts = st.one_of(
    any_text,
    st.builds(services_document, st.lists(shaped, max_size=5)),
    st.builds(
        toml_document,
        st.dictionaries(
            st.sampled_from(["settings", "kv", "bogus"]),
            st.dictionaries(any_text, trees, max_size=4),
            max_size=3,
        ),
    ),
    st.sampled_from([f"[settings]\nx = {HUGE}\n", "[settings]\nx = " + "[" * 3000 + "]" * 3000]),
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lbsync-properties-") as directory:
        yield Path(directory)


@QUICK
@given(text=toml_texts)
@example(text='["kv"]\n"\\f"=""')  # found: a raw key with a control character was kept
def test_a_services_file_of_any_text_is_unusable_naming_it_or_accounts_for_every_key(
    scratch: Path, text: str
) -> None:
    path = scratch / "services.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    snapshot = read_snapshot(path)
    if not snapshot.usable:
        assert snapshot.error is not None and str(path) in snapshot.error
        return
    refused = {key for key, _ in snapshot.rejected}
    for key, _ in snapshot.raw:
        assert key.isprintable() or key in refused, key
    for _, rejection in snapshot.rejected:
        assert rejection.where.startswith(f"{path} ["), rejection


# ---- arbitrary health answers --------------------------------------------------------------


def often(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nearly always what a field takes: for parts every instance needs."""
    return weighted(valid, 6)


services = st.fixed_dictionaries(
    {
        "ID": often(st.sampled_from(["a", "b", "c:1", "d@e"])),
        "Port": often(st.integers(1, 65535) | st.sampled_from([-1, 0, 65536])),
    },
    optional={
        "Address": near(st.sampled_from(["", "10.0.0.1"]) | any_text),
        "Tags": near(st.lists(st.just("blue") | any_text, max_size=3)),
        "Meta": near(st.dictionaries(any_text, any_text, max_size=3)),
        "Weights": near(
            st.fixed_dictionaries({"Passing": st.integers(-1, 70_000), "Warning": leaves})
        ),
    },
)
nodes = st.fixed_dictionaries(
    {
        "Node": often(st.sampled_from(["node-a", "node-b"])),
        "Address": often(st.sampled_from(["10.0.0.9", "n.example.com"])),
    }
)
node_checks = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "CheckID": near(st.just("serfHealth") | any_text),
            "Status": near(st.sampled_from(["passing", "critical"]) | any_text),
            "ServiceID": near(any_text),
        },
    ),
    max_size=3,
)
answers = st.lists(
    often(
        st.fixed_dictionaries(
            {"Node": often(nodes), "Service": often(services), "Checks": near(node_checks)}
        )
    ),
    max_size=5,
)


@QUICK
@given(nodes=answers)
@example(nodes=[None, None])  # found: an item that is not an object fell to the catch-all
def test_any_health_answer_maps_to_instances_and_named_refusals(nodes: list[Any]) -> None:
    view = service_view("shop", nodes)
    assert not nodes or view.entries or view.rejected
    for key, _ in view.entries:
        assert key.startswith("services/shop/instances/")
    for _, rejection in view.rejected:
        assert rejection.where.startswith("consul service shop instance "), rejection
        # a part of the wrong shape is refused for what it is, not by the catch-all
        assert "cannot be read" not in rejection.message, rejection


# ---- whatever the catalog holds, the proxies accept the file -------------------------------

labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=63)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(lambda h: len(h) <= 253)
catalog_routes = st.fixed_dictionaries(
    {
        "hosts": st.lists(hosts, max_size=64),
        "path": st.from_regex(checks.PATH_RE, fullmatch=True),
        "balance": st.sampled_from(["roundrobin", "leastconn", "random"]),
    },
    optional={
        "sticky": st.fixed_dictionaries(
            {"cookie": st.from_regex(checks.COOKIE_NAME_RE, fullmatch=True)}
        ),
        "check": st.fixed_dictionaries(
            {
                "path": st.from_regex(checks.PATH_RE, fullmatch=True),
                "interval_ms": st.integers(100, 3_600_000),
            }
        ),
        "strip": st.just(True),  # the route's own path (`forwarding`)
        "upstream": st.sampled_from(["http", "https"]),
        "tls_verify": st.booleans(),
    },
).map(lambda route: forwarding(route)) | st.fixed_dictionaries(
    {
        "hosts": st.lists(hosts, max_size=64),
        "path": st.from_regex(checks.PATH_RE, fullmatch=True),
        "redirect": st.fixed_dictionaries(
            {
                "code": st.sampled_from([301, 302, 303, 307, 308]),
                "to": st.from_regex(checks.REDIRECT_URL_RE, fullmatch=True).filter(
                    lambda url: (
                        len(url) <= checks.MAX_REDIRECT_URL
                        and not (url.endswith("$path") and "?" in url)
                    )
                ),
            }
        ),
    }
)


def forwarding(route: dict[str, Any]) -> dict[str, Any]:
    """A route whose `strip` is its path (left out where no strip can be: `/`, a `%`), and
    `tls_verify` only beside an https upstream."""
    if route.pop("strip", None) and route["path"].rstrip("/") and "%" not in route["path"]:
        route["strip"] = route["path"]
    if route.get("upstream") != "https":
        route.pop("tls_verify", None)
    return route


catalog_instances = st.fixed_dictionaries(
    {
        # a host name must resolve when nginx loads the file (docs/operations.md): the only
        # one resolving here is localhost
        "address": st.ip_addresses().map(str) | st.just("localhost"),
        "port": st.integers(1, 65535),
        "tags": st.lists(st.sampled_from(["blue", "green", "canary", "v1.5"]), max_size=2),
        "weight": st.integers(0, 65535),
        "health": st.sampled_from(["passing", "warning", "critical", "maintenance"]),
    },
    optional={
        "meta": st.dictionaries(
            st.sampled_from(["version"]), st.from_regex(checks.META_VALUE_RE, fullmatch=True)
        )
    },
)
catalog_splits = st.fixed_dictionaries(
    {
        "groups": st.dictionaries(
            st.sampled_from(["blue", "green", "canary", "v1.5"]),
            st.integers(0, 100) | st.floats(0, 100),
        ),
        "on_empty": st.sampled_from(["redistribute", "fail"]),
    },
    optional={
        "pin": st.fixed_dictionaries(
            {},
            optional={
                "header": st.from_regex(checks.HEADER_NAME_RE, fullmatch=True),
                "cookie": st.from_regex(checks.COOKIE_NAME_RE, fullmatch=True),
            },
        ).filter(bool)
    },
)
service_names = st.from_regex(checks.NAME_RE, fullmatch=True)
instance_ids = st.from_regex(checks.INSTANCE_ID_RE, fullmatch=True)
catalogs = st.dictionaries(
    service_names,
    st.tuples(
        catalog_routes,
        st.none() | catalog_splits,
        st.dictionaries(instance_ids, catalog_instances, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


def catalog_values(catalog: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for service, (route, split, members) in catalog.items():
        values[f"services/{service}/route"] = route
        if split is not None:
            values[f"services/{service}/split"] = split
        for instance_id, data in members.items():
            values[f"services/{service}/instances/{instance_id}"] = data
    return values


@pytest.fixture(scope="module")
def targets(scratch: Path) -> tuple[TargetConfig, ...]:
    """The shipped HAProxy and nginx templates with their default variables."""
    config = scratch / "lbsync.toml"
    config.write_text(
        f'[source.file]\npath = "{scratch}/services.toml"\n\n'
        f'[[target]]\nname = "haproxy"\nkind = "haproxy"\ndest = "{scratch}/haproxy/haproxy.cfg"\n'
        f'[target.vars]\nbind = ["127.0.0.1:8080"]\n\n'
        f'[[target]]\nname = "nginx"\nkind = "nginx"\ndest = "{scratch}/nginx/nginx.conf"\n'
        f'[target.vars]\nbind = ["127.0.0.1:8081"]\n'
    )
    return load(config, environ={}).targets


VALIDATORS = {"haproxy": ("haproxy", "-c", "-q", "-f"), "nginx": ("nginx", "-t", "-q", "-c")}


LOCAL = {"address": "127.0.0.1", "port": 80, "weight": 1, "health": "passing"}
NGINX_LONG_HOST: dict[str, Any] = {
    "0": (
        {
            "hosts": ["0" * 5 + "." + "0" * 7 + "." + "0" * 12 + "." + "0" * 20],
            "path": "/",
            "balance": "roundrobin",
        },
        None,
        {},
    )
}


STICKY_LONG_NAME: dict[str, Any] = {
    "s" * 128: (
        {"hosts": [], "path": "/", "balance": "roundrobin", "sticky": {"cookie": "c"}},
        {"groups": {"blue": 50}, "on_empty": "redistribute"},
        {"b": {**LOCAL, "tags": ["blue"]}, "g": {**LOCAL, "tags": ["green"]}},
    )
}


@RENDERED
@given(catalog=catalogs)
@example(catalog=NGINX_LONG_HOST)  # found: nginx refused a host name of 47 characters
# found: a string key of an nginx map longer than map_hash_bucket_size failed the whole file
@example(catalog=STICKY_LONG_NAME)
def test_whatever_the_catalog_holds_haproxy_and_nginx_accept_the_rendered_file(
    targets: tuple[TargetConfig, ...], catalog: dict[str, Any]
) -> None:
    entries, rejected = parse_values(catalog_values(catalog), describe=describe)
    state = build(merge([Snapshot(source="test", entries=entries, rejected=rejected)]))
    checking = []
    for target in targets:
        target.dest.parent.mkdir(parents=True, exist_ok=True)
        staged = target.dest.with_name(f".staged-{target.dest.name}")
        staged.write_text(TargetRunner(target).render(state))
        argv = [*VALIDATORS[target.name], str(staged)]
        checking.append((target.name, subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)))
    for name, process in checking:  # both at once: two cores
        _, errors = process.communicate(timeout=60)
        assert process.returncode == 0, f"{name} refuses the file: {errors[-1500:]}"
