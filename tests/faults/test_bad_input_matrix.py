"""Bad input at every entry point: refused by name, everything else applied, nothing stopped.

Source cases (the services file, etcd keys and values, Consul KV and registrations) run in one
long-lived world per source (tests/support/worlds.py): a daemon, a real HAProxy and an nginx
target. Each case writes its bad keys beside a good change (green's share of the shop) and
shows that every bad key is refused naming the source and the key (or, for a document that
cannot be read at all, that the source reports itself unusable naming the file, and its last
good state stays), that the good change is live in both files and in HAProxy, that both files
pass `haproxy -c` and `nginx -t`, that no bad text reached them, that HAProxy never failed a
reload and that the daemon still runs; then it removes its keys.

Command-line cases (`split set`, `register`, `rollout`, `status --api`, `render --target`,
lbsync.toml, `LBSYNC_*` variables) run the command line's `main()`, each in a process of its
own forked from one that imported lbsync once (tests/support/commandline.py: start-up is most
of a command's time here), a few at a time, each with its own store prefix and directory
against a real etcd: the exit status the README gives, a message naming the
argument, file or setting, no traceback, and nothing written to the store or the destination.
An argument or variable cannot carry a NUL byte (the kernel's argv and environment are C
strings), so NUL cases are in the sources and the config file only.

`pytest tests/faults/test_bad_input_matrix.py` prints the module's wall time at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from support.commandline import run_main
from support.consul import ConsulAgent, running_agent
from support.etcd import EtcdServer
from support.ports import free_port
from support.servicesfile import services_toml, toml_value, write_atomically
from support.worlds import (
    BASE_SHARE,
    HOST,
    Bulk,
    ConsulBad,
    ConsulInput,
    ConsulRefuses,
    EtcdBad,
    EtcdInput,
    FileInput,
    StoreRefuses,
    World,
    green_weight,
    instance,
    rejections,
    start_world,
    unexpected,
    unmatched,
)

from lbsync.daemon.status import Status

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUGE = "7" * 5000  # Python refuses to convert 4,300 digits
CHARS = ("\n", "#", ";", '"', "{}", "\\")  # what could end, comment out or open a directive
CONTROL = ("\n", "\r", "\x00", "\x1b", "\x7f", "\u2028")  # what settings (free text) refuse
ETCD_PROGRESS = ("--experimental-watch-progress-notify-interval", "1s")


# 64 hosts of 253 characters, the most and the longest a route may hold
LONGEST_HOSTS = [f"{n:02d}" + ("." + "h" * 61) * 4 + ".hh" for n in range(64)]


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def escaped(text: str) -> str:
    """As a refusal shows untrusted text (`model.text.shown`): non-printables escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@dataclass(frozen=True)
class SourceCase:
    """Bad input for one source, and the refusals it must produce (where, reason): `where`
    is how the refusal starts, with `<file>` for the services file's path and `<name>` for
    the source's name; or, for a document that cannot be read, the source's error."""

    bad: Any
    refused: tuple[tuple[str, str], ...] = ()
    unusable: str | None = None


def case(name: str, bad: Any, *refused: tuple[str, str], unusable: str | None = None) -> Any:
    return pytest.param(SourceCase(bad, tuple(refused), unusable), id=name)


PIN_FIELDS = ("header", "cookie")


def sticky_route(n: int, char: str) -> dict[str, Any]:
    """A route of its own whose sticky cookie name holds `char`."""
    return {"path": f"/sticky{n}", "sticky": {"cookie": f"lb{char}evil"}}


def pin_split(field: str, char: str) -> dict[str, Any]:
    """A split whose pin header or cookie name holds `char`."""
    return {"groups": {"blue": 10}, "pin": {field: f"X{char}evil"}}


def routing_names(keyed: Any) -> list[Any]:
    """Store cases (`keyed(what, reason, [(key, value)])`) for sticky cookie and pin names
    with each of `CHARS`, each on a service of its own."""
    return [
        keyed(
            "sticky cookie names",
            "sticky.cookie must be a cookie name",
            [(f"services/sticky-{n}/route", js(sticky_route(n, c))) for n, c in enumerate(CHARS)],
        ),
        *(
            keyed(
                f"pin {field} names",
                f"pin.{field} must be a {field} name",
                [(f"services/pin-{n}/split", js(pin_split(field, c))) for n, c in enumerate(CHARS)],
            )
            for field in PIN_FIELDS
        ),
    ]


# ---- the services file ---------------------------------------------------------------------


def header(*parts: str) -> str:
    return "[" + ".".join(json.dumps(part) for part in parts) + "]\n"


def body(values: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in values.items())


def table(*parts: str, **values: Any) -> str:
    return header(*parts) + body(values)


def file_instance(instance_id: str, **fields: Any) -> str:
    return table("services", "shop", "instances", instance_id, **{**instance(9, "blue"), **fields})


def at_file(*parts: str) -> str:
    return f"<file> [{escaped('.'.join(parts))}]"


def file_charsets() -> list[Any]:
    """Each character of `CHARS` in each field that reaches a file (settings: `CONTROL`)."""
    fields: dict[str, tuple[str, list[tuple[str, str]]]] = {
        "addresses": (
            "address must be an IP address",
            [
                (file_instance(f"addr-{n}", address=f"127.0.0.1{c}evil"), f"addr-{n}")
                for n, c in enumerate(CHARS)
            ],
        ),
        "tags": (
            "tags[0] must be printable",
            [
                (file_instance(f"tag-{n}", tags=[f"blue{c}evil"]), f"tag-{n}")
                for n, c in enumerate(CHARS)
            ],
        ),
        "meta values": (
            "meta.version must be",
            [
                (file_instance(f"meta-{n}", meta={"version": f"1{c}evil"}), f"meta-{n}")
                for n, c in enumerate(CHARS)
            ],
        ),
        "instance ids": (
            "instance id must be",
            [(file_instance(f"id{c}evil"), f"id{c}evil") for c in CHARS],
        ),
    }
    cases = [
        case(
            f"{what} with {', '.join(map(repr, CHARS))}",
            "".join(text for text, _ in keys),
            *((at_file("services", "shop", "instances", key), reason) for _, key in keys),
        )
        for what, (reason, keys) in fields.items()
    ]
    routes: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
        "hosts": (
            "hosts[0] must be a DNS host name",
            [(f"host-{n}", {"hosts": [f"shop{c}evil.example.com"]}) for n, c in enumerate(CHARS)],
        ),
        "paths": (
            "path must be a URL path",
            [(f"path-{n}", {"path": f"/a{c}evil"}) for n, c in enumerate(CHARS)],
        ),
        "service names": (
            "service name must be",
            [(f"svc{c}evil", {"path": f"/svc{n}"}) for n, c in enumerate(CHARS)],
        ),
        "sticky cookie names": (
            "sticky.cookie must be a cookie name",
            [(f"sticky-{n}", sticky_route(n, c)) for n, c in enumerate(CHARS)],
        ),
    }
    cases += [
        case(
            f"{what} with {', '.join(map(repr, CHARS))}",
            "".join(table("services", name, "route", **value) for name, value in keys),
            *((at_file("services", name, "route"), reason) for name, _ in keys),
        )
        for what, (reason, keys) in routes.items()
    ]
    cases.append(
        case(
            f"group names with {', '.join(map(repr, CHARS))}",
            "".join(
                table("services", f"grp-{n}", "split", groups={f"g{c}evil": 10})
                for n, c in enumerate(CHARS)
            ),
            *((at_file("services", f"grp-{n}", "split"), "group name must be") for n in range(6)),
        )
    )
    cases += [
        case(
            f"pin {field} names with {', '.join(map(repr, CHARS))}",
            "".join(
                table("services", f"pin-{n}", "split", **pin_split(field, c))
                for n, c in enumerate(CHARS)
            ),
            *(
                (at_file("services", f"pin-{n}", "split"), f"pin.{field} must be a {field} name")
                for n in range(len(CHARS))
            ),
        )
        for field in PIN_FIELDS
    ]
    cases.append(
        case(
            "setting strings with control characters",
            "[settings]\n"
            + "".join(f"s{n} = {json.dumps(f'x{c}evil')}\n" for n, c in enumerate(CONTROL)),
            *((at_file("settings", f"s{n}"), "control character") for n in range(len(CONTROL))),
        )
    )
    return cases


FILE_DOCUMENTS = [
    case(
        "malformed TOML", '[services.shop.instances.broken\naddress = "1', unusable="not valid TOML"
    ),
    case("bytes that are not UTF-8", b'[settings]\nx = "\xff\xfe"\n', unusable="not valid TOML"),
    case("a NUL byte", b'[settings]\nx = "a\x00b"\n', unusable="not valid TOML"),
    case(
        "an integer of 5,000 digits",
        file_instance("huge").replace('"port" = 9\n', f'"port" = 9\nweight = {HUGE}\n'),
        unusable="not valid TOML",
    ),
    case("arrays nested 1,000 deep", f"[settings]\nstack = {deep(1000)}\n", unusable="too deeply"),
    case("a duplicate instance id", file_instance("green-1"), unusable="twice"),
]

FILE_ENTRIES = [
    case(
        "arrays nested 40 deep",
        f"[settings]\ndeep = {deep(40)}\n",
        (at_file("settings", "deep"), "nested more than 32 levels"),
    ),
    case(
        "a value of 10 MB",
        '[settings]\nbig = "' + "a" * 10_000_000 + '"\n',
        (at_file("settings", "big"), "more than 1,048,576 characters"),
    ),
    case(
        "10,000 keys",
        "[settings]\n" + "".join(f"k{n:05d} = {n}\n" for n in range(10_000)) + 'line = "a\\nb"\n',
        (at_file("settings", "line"), "control character"),
    ),
    case(
        "wrong types",
        file_instance("type-weight", weight="1")
        + file_instance("type-port", port=True)
        + table("services", "type-hosts", "route", hosts="a.example.com")
        + table("services", "type-share", "split", groups={"blue": "10"})
        + table("services", "type-split", split="blue")
        + table("services", "type-instances", instances=5),
        (at_file("services", "shop", "instances", "type-weight"), "weight must be an integer"),
        (at_file("services", "shop", "instances", "type-port"), "port must be an integer"),
        (at_file("services", "type-hosts", "route"), "hosts must be a list"),
        (at_file("services", "type-share", "split"), "groups.blue must be a number"),
        (at_file("services", "type-split", "split"), "split must be a JSON object"),
        (at_file("services", "type-instances", "instances"), "must be a table of instances"),
    ),
    case(
        "weights, ports, shares and intervals out of range",
        file_instance("range-weight", weight=70_000)
        + file_instance("range-negative", weight=-1)
        + file_instance("range-port", port=65_536)
        + table("services", "range-share", "split", groups={"blue": 150})
        + table("services", "range-below", "split", groups={"blue": -5})
        + table("services", "range-sum", "split", groups={"blue": 80, "green": 50})
        + table("services", "range-groups", "split", groups={f"g{n}": 1 for n in range(33)})
        + table("services", "range-hosts", "route", hosts=[f"h{n}.example.com" for n in range(65)])
        + table("services", "range-check", "route", check={"interval_ms": 50}),
        (at_file("services", "shop", "instances", "range-weight"), "between 0 and 65535"),
        (at_file("services", "shop", "instances", "range-negative"), "between 0 and 65535"),
        (at_file("services", "shop", "instances", "range-port"), "between 1 and 65535"),
        (at_file("services", "range-share", "split"), "between 0 and 100, got 150"),
        (at_file("services", "range-below", "split"), "between 0 and 100, got -5"),
        (at_file("services", "range-sum", "split"), "sum to 130"),
        (at_file("services", "range-groups", "split"), "more than 32"),
        (at_file("services", "range-hosts", "route"), "more than 64"),
        (at_file("services", "range-check", "route"), "check.interval_ms must be between 100"),
    ),
    case(
        "numbers that are not finite",
        file_instance("inf").replace('"port" = 9\n', '"port" = 9\nweight = inf\n')
        + file_instance("nan").replace('"port" = 9\n', '"port" = 9\nweight = nan\n')
        + "[services.share-inf.split]\ngroups = { blue = inf }\n"
        + "[settings]\nnan = nan\n",
        (at_file("services", "shop", "instances", "inf"), "must be an integer, got inf"),
        (at_file("services", "shop", "instances", "nan"), "must be an integer, got nan"),
        (at_file("services", "share-inf", "split"), "between 0 and 100, got inf"),
        (at_file("settings", "nan"), "not a JSON value"),
    ),
    case(
        "unknown sections, fields and keys",
        table("bogus", x=1)
        + file_instance("unknown-field", colour="red")
        + table("services", "shop", "colour", x=1),
        (at_file("bogus"), "unknown section"),
        (at_file("services", "shop", "instances", "unknown-field"), "unknown field(s): colour"),
        (at_file("services", "shop", "colour"), "unknown key"),
    ),
    case(
        "hosts past the contract's bounds beside hosts at them",
        table("services", "edge-many", "route", hosts=[f"h{n}.example.com" for n in range(64)])
        + table("services", "edge-long", "route", path="/long", hosts=LONGEST_HOSTS)
        + table("services", "edge-over", "route", hosts=[f"h{n}.example.org" for n in range(65)])
        + table("services", "edge-longer", "route", hosts=["a" * 64 + ".example.com"]),
        (at_file("services", "edge-over", "route"), "more than 64"),
        (at_file("services", "edge-longer", "route"), "must be a DNS host name"),
    ),
    case(
        "a TOML date",
        "[settings]\nwhen = 1979-05-27T07:32:00Z\n",
        (at_file("settings", "when"), "not a JSON value"),
    ),
    case(
        "names that differ only in case",
        table("services", "Web", "route", path="/web")
        + table("services", "web", "route", path="/web2"),
        ("<name> services/web", "differs from service Web only in case"),
    ),
    case(
        "raw keys with control characters",
        table("kv", **{"app/\x1b[31mred": "x", "app/a\nb": "y"}),
        (at_file("app", "\x1b[31mred"), "control character"),
        (at_file("app", "a\nb"), "control character"),
    ),
    *file_charsets(),
]


# ---- etcd ----------------------------------------------------------------------------------


def at_etcd(key: str) -> str:
    return f"etcd key lbsync/{escaped(key)}"


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def etcd_instance(**fields: Any) -> bytes:
    return js({**instance(9, "blue"), **fields})


def in_key(reason: str, key: str) -> str:
    """A key with a control character is refused as a key, before its value is read."""
    return "control character" if not key.isprintable() else reason


def etcd_charsets() -> list[Any]:
    def instances(what: str, stem: str, reason: str, make: Any) -> Any:
        keys = [(f"services/shop/instances/{stem}-{n}", make(c)) for n, c in enumerate(CHARS)]
        return keyed(what, reason, keys)

    def keyed(what: str, reason: str, keys: list[tuple[str, bytes]]) -> Any:
        return case(
            f"{what} with {', '.join(map(repr, CHARS))}",
            EtcdBad(keys=tuple((key.encode(), value) for key, value in keys)),
            *((at_etcd(key), in_key(reason, key)) for key, _ in keys),
        )

    return [
        instances(
            "addresses",
            "addr",
            "address must be an IP address",
            lambda c: etcd_instance(address=f"127.0.0.1{c}evil"),
        ),
        instances(
            "tags", "tag", "tags[0] must be printable", lambda c: etcd_instance(tags=[f"b{c}evil"])
        ),
        instances(
            "meta values",
            "meta",
            "meta.version must be",
            lambda c: etcd_instance(meta={"version": f"1{c}evil"}),
        ),
        keyed(
            "instance ids",
            "instance id must be",
            [(f"services/shop/instances/id{c}evil", etcd_instance()) for c in CHARS],
        ),
        keyed(
            "hosts",
            "hosts[0] must be a DNS host name",
            [
                (f"services/host-{n}/route", js({"hosts": [f"shop{c}evil.example.com"]}))
                for n, c in enumerate(CHARS)
            ],
        ),
        keyed(
            "paths",
            "path must be a URL path",
            [(f"services/path-{n}/route", js({"path": f"/a{c}evil"})) for n, c in enumerate(CHARS)],
        ),
        keyed(
            "service names",
            "service name must be",
            [(f"services/svc{c}evil/route", js({"path": f"/s{n}"})) for n, c in enumerate(CHARS)],
        ),
        keyed(
            "group names",
            "group name must be",
            [
                (f"services/grp-{n}/split", js({"groups": {f"g{c}evil": 10}}))
                for n, c in enumerate(CHARS)
            ],
        ),
        *routing_names(keyed),
        case(
            "setting strings with control characters",
            EtcdBad(
                keys=tuple(
                    (f"settings/s{n}".encode(), js(f"x{c}evil")) for n, c in enumerate(CONTROL)
                )
            ),
            *((at_etcd(f"settings/s{n}"), "control character") for n in range(len(CONTROL))),
        ),
    ]


ETCD_CASES = [
    case(
        "malformed JSON",
        EtcdBad(keys=((b"services/shop/instances/broken", b'{"address": "127.0.0.1", "port": '),)),
        (at_etcd("services/shop/instances/broken"), "not valid JSON"),
    ),
    case(
        "wrong types",
        EtcdBad(
            keys=(
                (b"services/shop/instances/type-weight", etcd_instance(weight=True)),
                (b"services/shop/instances/type-port", etcd_instance(port="80")),
                (b"services/type-share/split", js({"groups": {"blue": "10"}})),
                (b"services/type-route/route", js(["shop.example.com"])),
                (b"services/type-hosts/route", js({"hosts": {"a": 1}})),
            )
        ),
        (at_etcd("services/shop/instances/type-weight"), "weight must be an integer, got True"),
        (at_etcd("services/shop/instances/type-port"), "port must be an integer, got '80'"),
        (at_etcd("services/type-share/split"), "groups.blue must be a number"),
        (at_etcd("services/type-route/route"), "route must be a JSON object, got list"),
        (at_etcd("services/type-hosts/route"), "hosts must be a list"),
    ),
    case(
        "an integer of 5,000 digits",
        EtcdBad(
            keys=(
                (
                    b"services/shop/instances/huge",
                    b'{"address": "127.0.0.1", "port": ' + HUGE.encode() + b"}",
                ),
            )
        ),
        (at_etcd("services/shop/instances/huge"), "digits"),
    ),
    case(
        "arrays nested 1,000 deep",
        EtcdBad(keys=((b"settings/stack", deep(1000).encode()),)),
        (at_etcd("settings/stack"), "nested more than 32 levels"),
    ),
    case(
        "arrays nested 40 deep",
        EtcdBad(keys=((b"settings/deep", deep(40).encode()),)),
        (at_etcd("settings/deep"), "nested more than 32 levels"),
    ),
    case(
        "a value of 1.4 MiB, the most etcd takes",
        EtcdBad(
            keys=((b"settings/big", js("a" * 1_400_000)),),
            refused_by_store=StoreRefuses(
                b"settings/bigger", b"a" * (1600 << 10), "request is too large"
            ),
        ),
        (at_etcd("settings/big"), "more than 1,048,576"),
    ),
    case(
        "10,000 keys",
        EtcdBad(keys=((b"settings/line", js("a\nb")),), bulk=Bulk(b"app/k", 10_000, b"x")),
        (at_etcd("settings/line"), "control character"),
    ),
    case(
        "keys and values that are not UTF-8",
        EtcdBad(keys=((b"settings/binary", b'"\xff\xfe"'), (b"app/\xff\xfe", b"x"))),
        (at_etcd("settings/binary"), "not UTF-8"),
        (at_etcd("app/\udcff\udcfe"), "not UTF-8"),
    ),
    case(
        "NUL and control characters in keys and values",
        EtcdBad(
            keys=(
                (b"app/a\x00b", b"x"),
                (b"app/\x1b[31mred", b"x"),
                (b"settings/nul", b'"a\x00b"'),
                (b"settings/escape", b'"\\u001b[2J"'),
            )
        ),
        (at_etcd("app/a\x00b"), "control character"),
        (at_etcd("app/\x1b[31mred"), "control character"),
        (at_etcd("settings/nul"), "not valid JSON"),
        (at_etcd("settings/escape"), "control character"),
    ),
    case(
        "names given twice in one object",
        EtcdBad(
            keys=(
                (b"services/dup/split", b'{"groups": {"blue": 90, "blue": 10}}'),
                (
                    b"services/shop/instances/dup",
                    b'{"address": "127.0.0.1", "port": 9, "port": 10}',
                ),
            )
        ),
        (at_etcd("services/dup/split"), "'blue' appears twice"),
        (at_etcd("services/shop/instances/dup"), "'port' appears twice"),
    ),
    case(
        "names that differ only in case",
        EtcdBad(
            keys=(
                (b"services/Web/route", js({"path": "/web"})),
                (b"services/web/route", js({"path": "/web2"})),
            )
        ),
        ("<name> services/web", "differs from service Web only in case"),
    ),
    case(
        "unknown keys",
        EtcdBad(keys=((b"services/shop/colour", js({"x": 1})), (b"settings/", js(1)))),
        (at_etcd("services/shop/colour"), "unknown key"),
        (at_etcd("settings/"), "a setting needs a name"),
    ),
    case(
        "weights, ports, shares and intervals out of range",
        EtcdBad(
            keys=(
                (b"services/shop/instances/range-weight", etcd_instance(weight=-1)),
                (b"services/shop/instances/range-port", etcd_instance(port=70_000)),
                (b"services/range-share/split", js({"groups": {"blue": 101}})),
                (b"services/range-sum/split", js({"groups": {"blue": 80, "green": 50}})),
                (b"services/range-check/route", js({"check": {"interval_ms": 50}})),
            )
        ),
        (at_etcd("services/shop/instances/range-weight"), "between 0 and 65535, got -1"),
        (at_etcd("services/shop/instances/range-port"), "between 1 and 65535, got 70000"),
        (at_etcd("services/range-share/split"), "between 0 and 100, got 101"),
        (at_etcd("services/range-sum/split"), "sum to 130"),
        (at_etcd("services/range-check/route"), "check.interval_ms must be between 100"),
    ),
    case(
        "numbers that are not finite",
        EtcdBad(
            keys=(
                (b"settings/nan", b"NaN"),
                (
                    b"services/shop/instances/inf",
                    b'{"address": "127.0.0.1", "port": 9, "weight": 1e400}',
                ),
            )
        ),
        (at_etcd("settings/nan"), "not a JSON number"),
        (at_etcd("services/shop/instances/inf"), "too large"),
    ),
    *etcd_charsets(),
]


# ---- Consul --------------------------------------------------------------------------------


def at_kv(key: str) -> str:
    return f"consul key lbsync/{escaped(key)}"


def at_instance(instance_id: str, service: str = "odd") -> str:
    return f"consul service {service} instance {instance_id}"


def registration(instance_id: str, **fields: Any) -> dict[str, Any]:
    """An instance of `odd` (routed by KV at /odd), with `fields` over the defaults."""
    return {"Name": "odd", "ID": instance_id, "Port": 9, "Address": "127.0.0.1", **fields}


def kv_charsets() -> list[Any]:
    def keyed(what: str, reason: str, keys: list[tuple[str, bytes]]) -> Any:
        return case(
            f"{what} in KV with {', '.join(map(repr, CHARS))}",
            ConsulBad(kv=tuple(keys)),
            *((at_kv(key), reason) for key, _ in keys),
        )

    return [
        keyed(
            "hosts",
            "hosts[0] must be a DNS host name",
            [
                (f"services/host-{n}/route", js({"hosts": [f"shop{c}evil.example.com"]}))
                for n, c in enumerate(CHARS)
            ],
        ),
        keyed(
            "paths",
            "path must be a URL path",
            [(f"services/path-{n}/route", js({"path": f"/a{c}evil"})) for n, c in enumerate(CHARS)],
        ),
        keyed(
            "group names",
            "group name must be",
            [
                (f"services/grp-{n}/split", js({"groups": {f"g{c}evil": 10}}))
                for n, c in enumerate(CHARS)
            ],
        ),
        *routing_names(keyed),
        case(
            f"service names in KV with {', '.join(map(repr, CHARS))}",
            ConsulBad(
                kv=tuple((f"services/svc{c}evil/route", js({"path": "/s"})) for c in CHARS[1:]),
                refused_by_store=(  # Consul takes no key with a control character
                    ConsulRefuses("/v1/kv/lbsync/services/svc%0Aevil/route", b"{}", "400"),
                ),
            ),
            *((at_kv(f"services/svc{c}evil/route"), "service name must be") for c in CHARS[1:]),
        ),
        case(
            "setting strings in KV with control characters",
            ConsulBad(kv=tuple((f"settings/s{n}", js(f"x{c}evil")) for n, c in enumerate(CONTROL))),
            *((at_kv(f"settings/s{n}"), "control character") for n in range(len(CONTROL))),
        ),
    ]


TAG_SHAPE = "printable characters without spaces or quotes"
REGISTERED = (*CHARS, "\x00", "\x1b")  # Consul takes these in names, addresses, tags and meta


def registration_charsets() -> list[Any]:
    shown = ", ".join(map(repr, REGISTERED))
    addresses = [
        registration(f"addr-{n}", Address=f"127.0.0.1{c}evil") for n, c in enumerate(REGISTERED)
    ]
    tags = [f"blue{c}evil" for c in REGISTERED]
    meta = {f"m{n}": f"1{c}evil" for n, c in enumerate(REGISTERED)}
    ids = [f"id{c}evil" for c in REGISTERED]
    names = [f"svc{c}evil" for c in REGISTERED]
    return [
        case(
            f"registered addresses with {shown}",
            ConsulBad(registrations=tuple(addresses)),
            *(
                (at_instance(f"addr-{n}"), "address must be an IP address")
                for n in range(len(REGISTERED))
            ),
        ),
        case(
            f"registered tags with {shown}",
            ConsulBad(registrations=(registration("tags-1", Tags=tags),)),
            *(
                (at_instance("tags-1"), f"tag left out: tag must be {TAG_SHAPE}, got {t!r}")
                for t in tags
            ),
        ),
        case(
            f"registered meta values with {shown}",
            ConsulBad(registrations=(registration("meta-1", Meta=meta),)),
            *((at_instance("meta-1"), f"meta left out: meta.{key} must be") for key in meta),
        ),
        case(
            f"registered instance ids with {shown}",
            ConsulBad(
                registrations=tuple(registration(i) for i in ids if i.isprintable()),
                external=tuple(
                    {"Service": "odd", "ID": i, "Port": 9} for i in ids if not i.isprintable()
                ),
            ),
            *((at_instance(repr(i)), "instance id must be") for i in ids),
        ),
        case(
            f"registered service names with {shown}",
            ConsulBad(
                registrations=tuple(
                    {"Name": name, "ID": f"svc-{n}", "Port": 9, "Tags": [f"lbsync.route=/s{n}"]}
                    for n, name in enumerate(names)
                )
            ),
            *((f"consul service {escaped(name)}", "not exposed") for name in names),
        ),
    ]


CONSUL_CASES = [
    case(
        "malformed JSON",
        ConsulBad(kv=(("services/broken/route", b'{"hosts": ['),)),
        (at_kv("services/broken/route"), "not valid JSON"),
    ),
    case(
        "an integer of 5,000 digits",
        ConsulBad(kv=(("services/huge/split", b'{"groups": {"blue": ' + HUGE.encode() + b"}}"),)),
        (at_kv("services/huge/split"), "digits"),
    ),
    case(
        "arrays nested 1,000 deep",
        ConsulBad(kv=(("settings/stack", deep(1000).encode()),)),
        (at_kv("settings/stack"), "nested more than 32 levels"),
    ),
    case(
        "arrays nested 40 deep",
        ConsulBad(kv=(("settings/deep", deep(40).encode()),)),
        (at_kv("settings/deep"), "nested more than 32 levels"),
    ),
    case(
        "a value of 512 KiB, the most Consul takes",
        ConsulBad(
            kv=(("settings/big", js("a" * (512 * 1024 - 8) + "\n")),),
            refused_by_store=(
                ConsulRefuses("/v1/kv/lbsync/settings/bigger", b"a" * (512 * 1024 + 1), "413"),
            ),
        ),
        (at_kv("settings/big"), "control character"),
    ),
    case(
        "10,000 keys",
        ConsulBad(kv=(("settings/line", js("a\nb")),), bulk=Bulk(b"app/k", 10_000, b"x")),
        (at_kv("settings/line"), "control character"),
    ),
    case(
        "values that are not UTF-8, keys with control characters",
        ConsulBad(
            kv=(("settings/binary", b'"\xff\xfe"'),),
            refused_by_store=(ConsulRefuses("/v1/kv/lbsync/app/%1B[31mred", b"x", "400"),),
        ),
        (at_kv("settings/binary"), "not UTF-8"),
    ),
    case(
        "names given twice in one object",
        ConsulBad(kv=(("services/dup/split", b'{"groups": {"blue": 90, "blue": 10}}'),)),
        (at_kv("services/dup/split"), "'blue' appears twice"),
    ),
    case(
        "wrong types and shares out of range",
        ConsulBad(
            kv=(
                ("services/type-share/split", js({"groups": {"blue": "10"}})),
                ("services/type-route/route", js("shop.example.com")),
                ("services/range-share/split", js({"groups": {"blue": 101}})),
            )
        ),
        (at_kv("services/type-share/split"), "groups.blue must be a number"),
        (at_kv("services/type-route/route"), "route must be a JSON object, got str"),
        (at_kv("services/range-share/split"), "between 0 and 100, got 101"),
    ),
    case(
        "routes whose names differ only in case",
        ConsulBad(
            kv=(
                ("services/Web/route", js({"path": "/web"})),
                ("services/web/route", js({"path": "/web2"})),
            )
        ),
        ("<name> services/web", "differs from service Web only in case"),
    ),
    *kv_charsets(),
    *registration_charsets(),
    case(
        "registered ports out of range, weights Consul refuses",
        ConsulBad(
            registrations=(
                registration("port-high", Port=70_000),
                registration("port-low", Port=-1),
            ),
            refused_by_store=(
                ConsulRefuses(
                    "/v1/agent/service/register",
                    registration("weight-high", Weights={"Passing": 70_000, "Warning": 1}),
                    "Invalid Weights",
                ),
            ),
        ),
        (at_instance("port-high"), "port must be between 1 and 65535, got 70000"),
        (at_instance("port-low"), "port must be between 1 and 65535, got -1"),
    ),
    case(
        "a registered address of 512 KiB",
        ConsulBad(registrations=(registration("long-address", Address="a" * 512 * 1024),)),
        (at_instance("long-address"), "address must be an IP address or a DNS host name"),
    ),
    case(
        "registered services whose names differ only in case",
        ConsulBad(
            registrations=(
                {"Name": "Web", "ID": "web-upper", "Port": 9, "Tags": ["lbsync.route=/web"]},
                {"Name": "web", "ID": "web-lower", "Port": 9, "Tags": ["lbsync.route=/web2"]},
            )
        ),
        ("<name> services/web", "differs from service Web only in case"),
    ),
]


# ---- the worlds ----------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def timing(request: pytest.FixtureRequest) -> Iterator[None]:
    """The module's wall time, printed when it ends."""
    started = time.monotonic()
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{Path(__file__).name}: {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(root=tmp_path_factory.mktemp("etcd"), extra_args=ETCD_PROGRESS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    with running_agent(tmp_path_factory.mktemp("consul")) as running:
        yield running


def shop_ports() -> dict[str, int]:
    return {"blue-1": free_port(), "green-1": free_port()}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def file_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("file-world")
    ports = shop_ports()
    services = root / "services.toml"
    source = FileInput(services, ports)
    write_atomically(services, source.base(BASE_SHARE))
    world = await start_world(root, f'[source.file]\npath = "{services}"\n', source, ports)
    yield world
    await world.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def etcd_world(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("etcd-world")
    ports = shop_ports()
    source = EtcdInput(etcd)
    await source.seed(
        "lbsync/services/shop/",
        {
            "route": {"hosts": [HOST]},
            "split": {"by": "tag", "groups": {"blue": 50, "green": 50}},
            **{f"instances/{n}": instance(p, n.split("-")[0]) for n, p in ports.items()},
        },
    )
    world = await start_world(root, f'[source.etcd]\nendpoints = ["{etcd.url}"]\n', source, ports)
    yield world
    await world.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def consul_world(
    tmp_path_factory: pytest.TempPathFactory, agent: ConsulAgent
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("consul-world")
    ports = shop_ports()
    await agent.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
    await agent.kv_put("lbsync/services/shop/split", {"groups": {"blue": 50, "green": 50}})
    await agent.kv_put("lbsync/services/odd/route", {"path": "/odd"})
    for name, port in ports.items():
        await agent.register("shop", name, port, name.split("-")[0])
    source = ConsulInput(agent)
    config = f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "5s"\n'
    world = await start_world(root, config, source, ports)
    yield world
    await world.close()


# ---- one source case -----------------------------------------------------------------------


async def validate(dest: Path, *argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, str(dest), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 0, f"{argv[0]} refuses {dest}: {output.decode()[-2000:]}"


async def assert_served_safely(world: World, failed: int) -> None:
    """Both files valid for their proxies, no bad text in them, no failed reload, the daemon
    running."""
    await asyncio.gather(
        validate(world.haproxy_dest, "haproxy", "-c", "-q", "-f"),
        validate(world.nginx_dest, "nginx", "-t", "-q", "-c"),
    )
    for dest in (world.haproxy_dest, world.nginx_dest):
        assert "evil" not in dest.read_text(), f"bad text reached {dest}"
    assert world.proxy.failed_reloads() == failed
    assert not world.task.done(), world.describe()


async def run_source_case(world: World, source_case: SourceCase) -> None:
    failed = world.proxy.failed_reloads()
    share = world.next_share()
    weight = green_weight(share)
    named = world.input.named
    refused = tuple(
        (where.replace("<file>", named).replace("<name>", world.source_name), reason)
        for where, reason in source_case.refused
    )
    await world.input.write(source_case.bad, share)
    try:
        if source_case.unusable is not None:
            reason = source_case.unusable

            def reported(status: Status) -> bool:
                source = status.sources[0]
                error = source.error or ""
                return not source.usable and named in error and reason in error

            status = await world.until(reported, f"the source unusable ({reason}), naming {named}")
            assert world.live(status, green_weight(BASE_SHARE)), "the last good state was lost"
            assert world.proxy.weights("shop") == {"blue-1": 256, "green-1": 256}
        else:
            status = await world.until(
                lambda s: world.live(s, weight) and not unmatched(s, refused),
                f"green at weight {weight} and the refusals {refused}",
            )
            assert not unexpected(status, refused), unexpected(status, refused)
            assert world.proxy.weights("shop") == {"blue-1": 256, "green-1": weight}
        await assert_served_safely(world, failed)
    finally:
        await world.input.clean(source_case.bad)
        await world.until(
            lambda s: (
                world.live(s, 256)
                and not rejections(s)
                and all(source.usable for source in s.sources)
            ),
            "the base state again",
        )


@pytest.mark.parametrize("source_case", FILE_DOCUMENTS)
async def test_a_services_file_that_cannot_be_read_is_named_and_its_last_good_state_serves(
    file_world: World, source_case: SourceCase
) -> None:
    await run_source_case(file_world, source_case)


@pytest.mark.parametrize("source_case", FILE_ENTRIES)
async def test_each_bad_entry_of_the_services_file_is_refused_by_name_and_the_rest_applies(
    file_world: World, source_case: SourceCase
) -> None:
    await run_source_case(file_world, source_case)


@pytest.mark.parametrize("source_case", ETCD_CASES)
async def test_each_bad_etcd_key_or_value_is_refused_by_name_and_the_rest_applies(
    etcd_world: World, source_case: SourceCase
) -> None:
    await run_source_case(etcd_world, source_case)


@pytest.mark.parametrize("source_case", CONSUL_CASES)
async def test_each_bad_consul_value_or_registration_is_refused_by_name_and_the_rest_applies(
    consul_world: World, source_case: SourceCase
) -> None:
    await run_source_case(consul_world, source_case)


# ---- the command line, lbsync.toml and LBSYNC_* variables -------------------------------


@dataclass(frozen=True)
class CommandCase:
    """One run of `lbsync -c <dir>/lbsync.toml ARGS` (without `-c` when `config_flag` is
    False): its exit status and what its message names. `config` replaces the default
    lbsync.toml (`<dir>`, `<etcd>`, `<prefix>` filled in); `environ` adds variables."""

    args: tuple[str, ...]
    names: str
    status: int = 2
    config: str | bytes | None = None
    environ: dict[str, str] = field(default_factory=dict)
    config_flag: bool = True


def command(name: str, *args: str, names: str, **fields: Any) -> Any:
    return pytest.param(CommandCase(args=args, names=names, **fields), id=name)


STORE_CONFIG = (
    '[source.etcd]\nendpoints = ["<etcd>"]\nprefix = "<prefix>"\n\n[api]\nlisten = ""\n\n'
    '[[target]]\nname = "haproxy"\nkind = "haproxy"\ndest = "<dir>/run/haproxy.cfg"\n'
)
FILE_CONFIG = (
    '[source.file]\npath = "<dir>/services.toml"\n\n[api]\nlisten = ""\n\n'
    '[[target]]\nname = "haproxy"\nkind = "haproxy"\ndest = "<dir>/run/haproxy.cfg"\n'
)
SHOP = {
    "services/shop/route": {"hosts": [HOST]},
    "services/shop/split": {"by": "tag", "groups": {"blue": 100, "green": 0}},
    "services/shop/instances/blue-1": instance(9101, "blue"),
    "services/shop/instances/green-1": instance(9102, "green"),
}


def config_case(name: str, text: str | bytes, names: str) -> Any:
    """`lbsync once` on a bad lbsync.toml: exit 2, the file and the setting named."""
    return command(name, "once", names=names, config=text)


def variable_case(name: str, variable: str, value: str, names: str, **fields: Any) -> Any:
    """`lbsync once` with one bad `LBSYNC_*` variable over a good lbsync.toml."""
    return command(
        name, "once", names=names, config=FILE_CONFIG, environ={variable: value}, **fields
    )


def argument(name: str, args: str | tuple[str, ...], names: str, status: int = 2) -> Any:
    """A command line (a string is split on spaces) over the store's shop."""
    words = tuple(args.split(" ")) if isinstance(args, str) else args
    return command(name, *words, names=names, status=status)


SET = "split set shop"
REGISTER = "register shop r1 --address 10.0.0.1 --port 80"
ROLLOUT = "rollout shop --to green --interval 1s"
STATUS = ("status", "--api")

ARGUMENT_CASES = [
    argument(
        "split: a share above 100", f"{SET} blue=150", "groups.blue must be between 0 and 100"
    ),
    argument("split: a share of 5,000 digits", f"{SET} blue={HUGE}", "groups.blue must be between"),
    argument("split: shares summing past 100", f"{SET} blue=90 green=30", "sum to 120"),
    argument("split: an unknown group", f"{SET} purple=10", "unknown group(s) purple"),
    argument("split: a group differing only in case", f"{SET} Blue=10", "unknown group(s) Blue"),
    argument("split: a group given twice", f"{SET} blue=60 blue=40", "'blue' given twice"),
    argument("split: a malformed assignment", f"{SET} blue:10", "'blue:10': expected GROUP=SHARE"),
    argument("split: a share that is not a number", f"{SET} blue=ten", "'blue=ten': expected"),
    argument("split: an unknown service", "split set nosuch blue=10", "service 'nosuch' does not"),
    argument(
        "split: a service name with an escape",
        ("split", "set", "sh\x1bop", "blue=10"),
        "service 'sh\\x1bop' does not exist",
    ),
    argument(
        "register: an address with a newline",
        (*REGISTER.split(" ")[:3], "--address", "10.0.0.1\nserver evil", "--port", "80"),
        "address must be an IP address",
    ),
    argument(
        "register: an instance id with braces",
        "register shop r{1} --address 10.0.0.1 --port 80",
        "instance id must be",
    ),
    argument(
        "register: a service name with a semicolon",
        "register sh;op r1 --address 10.0.0.1 --port 80",
        "service name must be",
    ),
    argument(
        "register: a weight out of range",
        f"{REGISTER} --weight 70000",
        "weight must be between 0 and 65535",
    ),
    argument(
        "register: a port of 5,000 digits",
        f"register shop r1 --address 10.0.0.1 --port {HUGE}",
        "argument --port",
    ),
    argument("register: a tag with a quote", f'{REGISTER} --tag a"b', "tags[0] must be"),
    argument(
        "register: a meta value with a semicolon", f"{REGISTER} --meta v=1;2", "meta.v must be"
    ),
    argument(
        "register: a meta argument without a value",
        f"{REGISTER} --meta novalue",
        "--meta 'novalue': expected KEY=VALUE",
    ),
    argument(
        "register: a TTL below the minimum", f"{REGISTER} --ttl 1", "--ttl must be at least 2"
    ),
    argument("rollout: an unknown group", "rollout shop --to purple", "unknown group purple"),
    argument("rollout: steps out of range", f"{ROLLOUT} --steps 5,150", "--steps: rising shares"),
    argument(
        "rollout: an interval of 5,000 digits",
        f"rollout shop --to green --interval {HUGE}",
        "--interval: must be",
    ),
    argument(
        "rollout: pause points that are not numbers",
        f"{ROLLOUT} --pause-at abc",
        "--pause-at: numbers",
    ),
    argument(
        "rollout: an error rate that is not a number",
        f"{ROLLOUT} --max-error-rate nan",
        "--max-error-rate: must be",
    ),
    argument(
        "rollout: a negative count of healthy instances",
        f"{ROLLOUT} --min-healthy -1",
        "--min-healthy: must be",
    ),
    argument(
        "status: an address that is not a URL",
        (*STATUS, "nonsense"),
        "--api: expected http(s)://host:port",
    ),
    argument(
        "status: an address with a newline",
        (*STATUS, "http://127.0.0.1:1/\nx"),
        "--api: expected http",
    ),
    argument(
        "status: nothing listening",
        (*STATUS, "http://127.0.0.1:<closed>"),
        "http://127.0.0.1:<closed>/v1/status",
        status=1,
    ),
    argument(
        "status: a server that is not lbsync",
        (*STATUS, "<other>/other"),
        "<other>/other/v1/status: not an lbsync status",
        status=1,
    ),
    argument(
        "status: an answer nested 1,000 deep",
        (*STATUS, "<other>/deep"),
        "<other>/deep/v1/status",
        status=1,
    ),
    argument(
        "render: an unknown target", "render --target nope", "--target: no target named 'nope'"
    ),
    argument(
        "render: a target name with a newline",
        ("render", "--target", "ha\nproxy"),
        "--target: no target named 'ha\\nproxy'",
    ),
]

CONFIG_CASES = [
    config_case("malformed TOML", FILE_CONFIG + "[apply\n", "not valid TOML"),
    config_case(
        "bytes that are not UTF-8", FILE_CONFIG.encode() + b'vars = "\xff"\n', "not valid TOML"
    ),
    config_case(
        "an integer of 5,000 digits",
        FILE_CONFIG + f"[apply]\nmin_wait = {HUGE}\n",
        "not valid TOML",
    ),
    config_case(
        "arrays nested 1,000 deep",
        FILE_CONFIG + f"[apply]\nmin_wait = {deep(1000)}\n",
        "not valid TOML",
    ),
    config_case(
        "a duration of the wrong type",
        FILE_CONFIG + "[apply]\nmin_wait = true\n",
        "apply.min_wait: must be a duration",
    ),
    config_case(
        "a duration that is not finite",
        FILE_CONFIG + "[apply]\nmin_wait = nan\n",
        "apply.min_wait: must be",
    ),
    config_case(
        "a duration of 400 digits",
        FILE_CONFIG + f"[apply]\nmin_wait = {HUGE[:400]}\n",
        "apply.min_wait: must be",
    ),
    config_case(
        "a misspelt setting",
        FILE_CONFIG + '[apply]\nmin_wiat = "1s"\n',
        "apply.min_wiat: unknown setting",
    ),
    config_case(
        "a target name with a newline",
        FILE_CONFIG.replace('name = "haproxy"', 'name = "ha\\nproxy"'),
        "target[0].name",
    ),
    config_case(
        "a destination with a NUL",
        FILE_CONFIG.replace("run/haproxy.cfg", "run/ha\\u0000proxy.cfg"),
        "target[0].dest",
    ),
    config_case(
        "a reload signal that does not exist",
        FILE_CONFIG
        + 'reload = { method = "signal", pidfile = "<dir>/run/pid", signal = "HUP;KILL" }\n',
        "target[0].reload.signal",
    ),
    config_case(
        "two targets with one name",
        FILE_CONFIG
        + '\n[[target]]\nname = "haproxy"\nkind = "nginx"\ndest = "<dir>/run/nginx.conf"\n',
        "two targets have the same name",
    ),
    config_case(
        "an API address with a semicolon",
        FILE_CONFIG.replace('listen = ""', 'listen = "127.0.0.1:9180;x"'),
        "api.listen",
    ),
    config_case(
        "an etcd endpoint with a path",
        '[source.etcd]\nendpoints = ["http://127.0.0.1:2379/x"]\n' + FILE_CONFIG,
        "source.etcd.endpoints",
    ),
    config_case("a file mode that is not octal", FILE_CONFIG + 'mode = "0999"\n', "target[0].mode"),
]

VARIABLE_CASES = [
    variable_case("an integer of 5,000 digits", "LBSYNC_APPLY_MIN_WAIT", HUGE, "apply.min_wait"),
    variable_case(
        "arrays nested 1,000 deep", "LBSYNC_APPLY_MIN_WAIT", deep(1000), "apply.min_wait"
    ),
    variable_case(
        "a duration that is not finite", "LBSYNC_APPLY_MAX_WAIT", "inf", "apply.max_wait"
    ),
    variable_case("an API port out of range", "LBSYNC_API_LISTEN", "127.0.0.1:99999", "api.listen"),
    variable_case("an unknown health mode", "LBSYNC_HEALTH", "bogus", "health: must be one of"),
    variable_case(
        "an empty services file path", "LBSYNC_SOURCE_FILE_PATH", '""', "source.file.path"
    ),
    variable_case("an empty destination", "LBSYNC_TARGET_HAPROXY_DEST", '""', "target[0].dest"),
    variable_case("an unknown log level", "LBSYNC_LOG_LEVEL", "loud", "LBSYNC_LOG_LEVEL"),
    variable_case("an unknown log format", "LBSYNC_LOG_FORMAT", "xml", "LBSYNC_LOG_FORMAT"),
    variable_case(
        "a configuration file that does not exist",
        "LBSYNC_CONFIG",
        "<dir>/missing.toml",
        "<dir>/missing.toml: cannot read",
        config_flag=False,
    ),
    variable_case(
        "template variables HAProxy refuses",
        "LBSYNC_TARGET_HAPROXY_VARS_BIND",
        '["127.0.0.1:1',
        "target=haproxy outcome=invalid",
        status=1,
    ),
]

COMMAND_CASES = ARGUMENT_CASES + CONFIG_CASES + VARIABLE_CASES


COMMAND_TIMEOUT = 30.0
PARALLEL = 3  # commands at a time (two shared cores)


@dataclass(frozen=True)
class Ran:
    """One command's run: exit status (None: killed at the timeout), output, the store's keys
    under the case's prefix before and after, and whether the destination was written."""

    status: int | None
    stdout: str
    stderr: str
    store_before: list[tuple[str, int]]
    store_after: list[tuple[str, int]]
    wrote: bool
    values: dict[str, str]


def filled(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


async def answering_server() -> tuple[web.AppRunner, str]:
    """An HTTP server that is not lbsync: `/other/v1/status` answers JSON of another shape,
    `/deep/v1/status` JSON nested 1,000 deep."""

    async def other(_: web.Request) -> web.Response:
        return web.json_response({"ready": True, "version": "not lbsync"})

    async def nested(_: web.Request) -> web.Response:
        return web.Response(text=deep(1000), content_type="application/json")

    app = web.Application()
    app.router.add_get("/other/v1/status", other)
    app.router.add_get("/deep/v1/status", nested)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def write_config(path: Path, config: str | bytes, values: dict[str, str]) -> None:
    if isinstance(config, bytes):  # bytes that are not UTF-8 stay as they are
        text = config.decode("utf-8", "surrogateescape")
        path.write_bytes(filled(text, values).encode("utf-8", "surrogateescape"))
    else:
        path.write_text(filled(config, values))


async def run_command(command_case: CommandCase, values: dict[str, str], store: EtcdInput) -> Ran:
    """Seed the case's prefix, run the real command line, read the prefix back."""
    directory = Path(values["<dir>"])
    (directory / "run").mkdir(parents=True)
    prefix = values["<prefix>"]
    await store.seed(prefix, SHOP)
    write_atomically(directory / "services.toml", services_toml(shop_services()))
    config_path = directory / "lbsync.toml"
    write_config(config_path, command_case.config or STORE_CONFIG, values)
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LBSYNC_") and key != "CONSUL_HTTP_TOKEN"
    }
    environ.update({key: filled(value, values) for key, value in command_case.environ.items()})
    before = await store.keys(prefix.encode())
    flag = ["-c", str(config_path)] if command_case.config_flag else []
    finished = await run_main(
        [*flag, *(filled(arg, values) for arg in command_case.args)],
        environ=environ,
        cwd=directory,
        timeout=COMMAND_TIMEOUT,
    )
    return Ran(
        status=finished.status,
        stdout=finished.stdout,
        stderr=finished.stderr,
        store_before=before,
        store_after=await store.keys(prefix.encode()),
        wrote=(directory / "run" / "haproxy.cfg").exists(),
        values=values,
    )


def shop_services() -> dict[str, dict[str, Any]]:
    return {
        "shop": {
            "route": {"hosts": [HOST]},
            "instances": {"blue-1": instance(9101, "blue"), "green-1": instance(9102, "green")},
        }
    }


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def commands(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer
) -> AsyncIterator[dict[str, Ran]]:
    """Every selected command case, run `PARALLEL` at a time, by test node id."""
    wanted: dict[str, CommandCase] = {}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if isinstance(params.get("command_case"), CommandCase):
            wanted[item.nodeid] = params["command_case"]
    root = tmp_path_factory.mktemp("commands")
    store = EtcdInput(etcd)
    server, other = await answering_server()
    slots = asyncio.Semaphore(PARALLEL)

    async def one(n: int, command_case: CommandCase) -> Ran:
        values = {
            "<dir>": str(root / f"case-{n}"),
            "<etcd>": etcd.url,
            "<prefix>": f"cli-{n}/",
            "<closed>": str(free_port()),
            "<other>": other,
        }
        async with slots:
            return await run_command(command_case, values, store)

    try:
        ran = await asyncio.gather(*(one(n, c) for n, c in enumerate(wanted.values())))
    finally:
        await server.cleanup()
    yield dict(zip(wanted, ran, strict=True))


def assert_refused(request: pytest.FixtureRequest, commands: dict[str, Ran], c: CommandCase) -> Ran:
    """The exit status the README gives, the message naming what was wrong, no traceback,
    nothing written to the store or the destination."""
    ran = commands[request.node.nodeid]
    output = (ran.stdout + ran.stderr)[-3000:]
    assert "Traceback" not in ran.stderr, output
    assert ran.status == c.status, f"exit status {ran.status}, not {c.status}: {output}"
    assert filled(c.names, ran.values) in ran.stderr, output
    assert ran.store_after == ran.store_before, "the command wrote to the store"
    assert not ran.wrote, "the command wrote the destination"
    return ran


@pytest.mark.parametrize("command_case", ARGUMENT_CASES)
async def test_a_bad_argument_exits_with_a_message_naming_it_and_writes_nothing(
    request: pytest.FixtureRequest, commands: dict[str, Ran], command_case: CommandCase
) -> None:
    assert_refused(request, commands, command_case)


@pytest.mark.parametrize("command_case", CONFIG_CASES)
async def test_a_bad_configuration_file_exits_naming_the_file_and_the_setting(
    request: pytest.FixtureRequest, commands: dict[str, Ran], command_case: CommandCase
) -> None:
    ran = assert_refused(request, commands, command_case)
    assert f"{ran.values['<dir>']}/lbsync.toml" in ran.stderr


@pytest.mark.parametrize("command_case", VARIABLE_CASES)
async def test_a_bad_environment_variable_exits_naming_the_setting_and_writes_nothing(
    request: pytest.FixtureRequest, commands: dict[str, Ran], command_case: CommandCase
) -> None:
    assert_refused(request, commands, command_case)
