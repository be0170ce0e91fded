"""The KV contract: turns `(relative key, JSON value)` pairs into entries, or refuses them.

Keys are relative to the source's prefix (default `lbsync/`):

    services/<svc>/route            -> Route
    services/<svc>/split            -> Split
    services/<svc>/instances/<id>   -> Instance
    services/<svc>/rollout          -> raw only (a rollout's state, for status)
    services/<svc>/split-history    -> raw only (`lbsync split history`)
    services/<svc>/rollout-driver   -> raw only (the daemon driving the rollout)
    settings/<key>                  -> Setting
    anything else outside services/ -> raw only (readable by templates through `kv`)

Each refusal names its key, and one bad key never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from lbsync.model import checks
from lbsync.model.checks import ContractError
from lbsync.model.jsonvalues import (
    MAX_VALUE_BYTES,
    canonical_json,
    check_bounds,
    decode_json,
    json_or_str,
)
from lbsync.model.keys import is_contract_key

__all__ = [
    "ContractError",
    "canonical_json",
    "decode_json",
    "parse_entry",
    "parse_raw",
    "parse_values",
    "parse_values_and_texts",
]
from lbsync.model.values import (
    Balance,
    Entry,
    Health,
    HealthCheck,
    Instance,
    OnEmpty,
    Pin,
    Redirect,
    Rejection,
    Route,
    Setting,
    Split,
    Sticky,
    Upstream,
)

MAX_GROUPS = 32
MAX_HOSTS = 64
MAX_TAGS = 64
MAX_META = 64
MIN_CHECK_INTERVAL_MS = 100
MAX_CHECK_INTERVAL_MS = 3_600_000
ROUTE_FIELDS = frozenset(
    ("hosts", "path", "balance", "check", "sticky", "strip", "redirect", "upstream", "tls_verify")
)
REDIRECT_FIELDS = frozenset(("code", "to"))
# the redirect codes both HAProxy's `http-request redirect` and nginx's `return` answer with
REDIRECT_CODES = (301, 302, 303, 307, 308)
CHECK_FIELDS = frozenset(("path", "interval_ms"))
STICKY_FIELDS = frozenset(("cookie",))
SPLIT_FIELDS = frozenset(("by", "groups", "on_empty", "pin"))
PIN_FIELDS = frozenset(("header", "cookie"))
INSTANCE_FIELDS = frozenset(
    ("address", "port", "tags", "meta", "weight", "health", "datacenter", "failover")
)
MAX_FAILOVER_TIER = 16  # a tier per datacenter: more than any federation has


def _object(value: object, what: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{what} must be a JSON object, got {type(value).__name__}")
    if not allowed.issuperset(value):
        unknown = sorted(map(str, set(value) - allowed))
        raise ContractError(f"{what} has unknown field(s): {', '.join(unknown)}")
    return value


def _list(value: object, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise ContractError(f"{what} must be a list, got {type(value).__name__}")
    if len(value) > limit:
        raise ContractError(f"{what} has more than {limit} items")
    return value


_Choice = TypeVar("_Choice", Balance, OnEmpty, Health, Upstream)


def _enum(kind: type[_Choice], value: object, what: str) -> _Choice:
    try:
        if isinstance(value, str):
            return kind(value)
    except ValueError:
        pass
    choices = ", ".join(member.value for member in kind)
    raise ContractError(f"{what} must be one of {choices}, got {value!r}")


def parse_route(service: str, value: object) -> Route:
    """A route: hosts, path prefix, balance algorithm, an optional active check and an optional
    sticky cookie; what reaches the instances (`strip`, `upstream`, `tls_verify`), or a
    `redirect` that answers instead of them."""
    data = _object(value, "route", ROUTE_FIELDS)
    hosts = tuple(
        sorted(
            {
                checks.hostname(host, f"hosts[{index}]")
                for index, host in enumerate(_list(data.get("hosts", []), "hosts", MAX_HOSTS))
            }
        )
    )
    path = checks.path(data.get("path", "/"), "path").rstrip("/") or "/"  # /api/ is /api
    balance = _enum(Balance, data.get("balance", Balance.ROUNDROBIN.value), "balance")
    check = None
    if data.get("check") is not None:
        check_data = _object(data["check"], "check", CHECK_FIELDS)
        check = HealthCheck(
            path=checks.path(check_data.get("path", "/"), "check.path"),
            interval_ms=checks.integer(
                check_data.get("interval_ms", 2000),
                "check.interval_ms",
                low=MIN_CHECK_INTERVAL_MS,
                high=MAX_CHECK_INTERVAL_MS,
            ),
        )
    sticky = None
    if data.get("sticky") is not None:
        sticky_data = _object(data["sticky"], "sticky", STICKY_FIELDS)
        if "cookie" not in sticky_data:
            raise ContractError('sticky needs a cookie name: {"cookie": "NAME"}')
        sticky = Sticky(cookie=checks.cookie_name(sticky_data["cookie"], "sticky.cookie"))
    strip = None if data.get("strip") is None else _strip(data["strip"], path)
    upstream = _enum(Upstream, data.get("upstream", Upstream.HTTP.value), "upstream")
    tls_verify = _tls_verify(data.get("tls_verify"), upstream)
    redirect = None
    if data.get("redirect") is not None:
        redirect = _redirect(data["redirect"])
        beside = [name for name in ("strip", "check", "sticky") if data.get(name) is not None]
        beside += ["upstream"] if upstream is not Upstream.HTTP else []
        beside += ["tls_verify"] if data.get("tls_verify") is not None else []
        if beside:
            raise ContractError(
                f"redirect answers every request itself, so {beside[0]} has nothing to act on: "
                "a route either redirects or forwards"
            )
    return Route(
        service=service,
        hosts=hosts,
        path=path,
        balance=balance,
        check=check,
        sticky=sticky,
        strip=strip,
        redirect=redirect,
        upstream=upstream,
        tls_verify=tls_verify,
    )


def _strip(value: object, path: str) -> str:
    """The path prefix removed before a request is forwarded: whole segments at the start of
    the route's path (`/api` of `/api` or `/api/v1`), never `/`, and without `%` (nginx
    matches decoded paths, HAProxy raw ones: an escape would strip in one and not the other)."""
    strip = checks.path(value, "strip").rstrip("/")
    if not strip:
        raise ContractError("strip must be a path prefix other than '/'")
    if "%" in strip:
        raise ContractError(f"strip must not hold '%' escapes, got {strip!r}")
    if path != strip and not path.startswith(strip + "/"):
        raise ContractError(
            f"strip {strip!r} must be the route's path {path!r} or whole segments at its start"
        )
    return strip


def _tls_verify(value: object, upstream: Upstream) -> bool:
    """Whether an https upstream's certificate is verified (default yes); only for https."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ContractError(f"tls_verify must be true or false, got {value!r}")
    if upstream is not Upstream.HTTPS:
        raise ContractError('tls_verify applies to "upstream": "https" only')
    return value


def _redirect(value: object) -> Redirect:
    """`{"code": 301, "to": URL}`; a `/` before a final `$path` is dropped (as Fabio does),
    and `$path` brings the request's query along, so the URL may not have one of its own."""
    data = _object(value, "redirect", REDIRECT_FIELDS)
    if "code" not in data or "to" not in data:
        raise ContractError('redirect needs a code and a URL: {"code": 301, "to": "https://..."}')
    code = data["code"]
    if type(code) is not int or code not in REDIRECT_CODES:
        codes = ", ".join(map(str, REDIRECT_CODES))
        raise ContractError(f"redirect.code must be one of {codes}, got {code!r}")
    to = checks.redirect_url(data["to"], "redirect.to")
    redirect = Redirect(
        code=code, to=to.removesuffix("/$path") + "$path" if to.endswith("/$path") else to
    )
    if redirect.keeps_path and "?" in redirect.base:
        raise ContractError(
            "redirect.to with $path must not hold a query: the request's own query follows $path"
        )
    return redirect


def _pin(value: object) -> Pin:
    """A split's pinning: a header name, a cookie name, or both."""
    data = _object(value, "pin", PIN_FIELDS)
    header = data.get("header")
    cookie = data.get("cookie")
    if header is None and cookie is None:
        raise ContractError("pin needs a header or a cookie name (or both)")
    return Pin(
        header=None if header is None else checks.header_name(header, "pin.header"),
        cookie=None if cookie is None else checks.cookie_name(cookie, "pin.cookie"),
    )


def parse_split(service: str, value: object) -> Split:
    """A split: `by` (tag or meta:<key>), named group shares summing to at most 100, on_empty,
    and an optional pin (the header or cookie whose value names a group)."""
    data = _object(value, "split", SPLIT_FIELDS)
    by = data.get("by", "tag")
    if by != "tag" and not (isinstance(by, str) and by.startswith("meta:")):
        raise ContractError(f"by must be 'tag' or 'meta:<key>', got {by!r}")
    if by != "tag":
        checks.meta_key(by.removeprefix("meta:"), "by's meta key")
    groups_data = data.get("groups", {})
    if not isinstance(groups_data, dict):
        raise ContractError(f"groups must be a JSON object, got {type(groups_data).__name__}")
    if len(groups_data) > MAX_GROUPS:
        raise ContractError(f"groups has more than {MAX_GROUPS} entries")
    groups = tuple(
        (checks.group(name, "group name"), checks.share(share, f"groups.{name}"))
        for name, share in groups_data.items()
    )
    total = sum(share for _, share in groups)
    if total > 100.0 + 1e-9:
        raise ContractError(f"group shares sum to {total:g}, more than 100")
    on_empty = _enum(OnEmpty, data.get("on_empty", OnEmpty.REDISTRIBUTE.value), "on_empty")
    pin = None if data.get("pin") is None else _pin(data["pin"])
    return Split(service=service, by=by, groups=groups, on_empty=on_empty, pin=pin)


def parse_instance(service: str, instance_id: str, value: object) -> Instance:
    """An instance: address, port, tags, meta, relative weight, health, and where it runs:
    its datacenter (shown) and failover tier (0 serves; a higher tier is a backup that serves
    only while no lower tier has an eligible instance)."""
    data = _object(value, "instance", INSTANCE_FIELDS)
    if "address" not in data or "port" not in data:
        raise ContractError("instance needs both address and port")
    meta_data = data.get("meta", {})
    if not isinstance(meta_data, dict):
        raise ContractError(f"meta must be a JSON object, got {type(meta_data).__name__}")
    if len(meta_data) > MAX_META:
        raise ContractError(f"meta has more than {MAX_META} entries")
    meta = tuple(sorted(_checked_meta(meta_data)))
    tags = tuple(sorted(_checked_tags(_list(data.get("tags", []), "tags", MAX_TAGS))))
    return Instance(  # by position: a whole read makes one for every instance
        service,
        instance_id,
        checks.address(data["address"]),
        checks.port(data["port"]),
        tags,
        meta,
        checks.integer(data.get("weight", 1), "weight", low=0, high=checks.MAX_INSTANCE_WEIGHT),
        _enum(Health, data.get("health", Health.PASSING.value), "health"),
        checks.name(data["datacenter"], "datacenter") if "datacenter" in data else "",
        checks.integer(data.get("failover", 0), "failover", low=0, high=MAX_FAILOVER_TIER)
        if "failover" in data
        else 0,
    )


def _checked_tags(tags: list[Any]) -> set[str]:
    """The distinct tags, each checked (`checks.tag`); refusals name the tag's index. The
    plain test first: most tags of a whole read are fine, and naming costs."""
    for tag in tags:
        if type(tag) is not str or not checks.TAG_RE.fullmatch(tag):
            return {checks.tag(tag, f"tags[{index}]") for index, tag in enumerate(tags)}
    return set(tags)


def _checked_meta(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The (key, value) pairs of metadata, each checked; refusals name the key."""
    pairs = list(meta.items())
    for key, value in pairs:
        if not (
            type(value) is str
            and checks.META_KEY_RE.fullmatch(key)
            and checks.META_VALUE_RE.fullmatch(value)
        ):
            return [
                (checks.meta_key(name), checks.meta_value(text, f"meta.{name}"))
                for name, text in pairs
            ]
    return pairs


def _settled_text(value: object) -> None:
    """Every string of a setting (keys too) is free text (`checks.free_text`); iterative, like
    the bounds check it follows."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            checks.free_text(current, "a string of the setting")
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def parse_entry(key: str, value: object, *, checked: bool = False) -> Entry | None:
    """The entry a relative key holds, None for a raw-only key; ContractError when invalid.
    `checked`: the value came from `decode_json`, which bounded it already."""
    parts = key.split("/")
    if parts[0] == "settings":
        if len(parts) < 2 or not all(parts[1:]):
            raise ContractError("a setting needs a name: settings/<name>")
        name = checks.setting_name("/".join(parts[1:]))
        if not checked:
            check_bounds(value)
        _settled_text(value)
        return Setting(key=name, json_text=canonical_json(value))
    if parts[0] != "services":
        return None
    if not checked:
        check_bounds(value)
    service = checks.name(parts[1], "service name") if len(parts) > 1 else ""
    match parts[2:]:
        case ["route"]:
            return parse_route(service, value)
        case ["split"]:
            return parse_split(service, value)
        case ["instances", instance]:
            return parse_instance(service, checks.instance_id(instance), value)
        case ["rollout"] | ["split-history"] | ["rollout-driver"]:
            return None  # written by `lbsync rollout` / `lbsync split`: status, not routing
        case _:
            raise ContractError(
                "unknown key: expected services/<service>/route|split|instances/<id>"
            )


Parsed = tuple[tuple[tuple[str, Entry], ...], tuple[tuple[str, Rejection], ...]]


def parse_one(
    key: str,
    value: object,
    *,
    decoded: bool,
    describe: Callable[[str], str],
    checked: bool = False,
) -> Entry | Rejection | None:
    """One key's entry (`value` JSON text unless `decoded`, then bounded already if `checked`),
    None for a raw-only key, or the refusal naming the key. Nothing else leaves it: a value
    that breaks anything the checks did not foresee is refused too, since one key must never
    stop a source."""
    try:
        if decoded:
            return parse_entry(key, value, checked=checked)
        return parse_entry(key, decode_json(str(value)), checked=True)
    except ContractError as error:
        return Rejection(where=describe(key), message=str(error))
    except Exception as error:  # the bulkhead: refused and named, never raised
        return Rejection(where=describe(key), message=f"cannot be read: {error!r:.200}")


def _split(parsed: Iterable[tuple[str, Entry | Rejection | None]]) -> Parsed:
    ordered = sorted(parsed, key=lambda pair: pair[0])
    entries = tuple(
        (key, r) for key, r in ordered if r is not None and not isinstance(r, Rejection)
    )
    rejected = tuple((key, r) for key, r in ordered if isinstance(r, Rejection))
    return entries, rejected


def parse_values(values: Mapping[str, object], *, describe: Callable[[str], str]) -> Parsed:
    """Parse decoded values by relative key; `describe` names a key in refusals."""
    return _split(
        (key, parse_one(key, value, decoded=True, describe=describe))
        for key, value in values.items()
    )


def parse_values_and_texts(
    values: Mapping[str, object], *, describe: Callable[[str], str]
) -> tuple[Parsed, dict[str, str]]:
    """`parse_values`, with each value's text as the `kv` view shows it: its canonical JSON,
    or `str(value)` when it has none (too large, not JSON, not finite). Each value is bounded
    once for both, which a whole read of a large file feels."""
    parsed: list[tuple[str, Entry | Rejection | None]] = []
    texts: dict[str, str] = {}
    for key, value in values.items():
        try:
            check_bounds(value)
        except ContractError as error:
            parsed.append((key, Rejection(where=describe(key), message=str(error))))
            texts[key] = str(value)
            continue
        parsed.append((key, parse_one(key, value, decoded=True, describe=describe, checked=True)))
        texts[key] = json_or_str(value, checked=True)  # a TOML `inf`: refused by its field
    return _split(parsed), texts


def decode_raw(
    items: Iterable[tuple[str, bytes]], *, describe: Callable[[str], str]
) -> tuple[dict[str, str], tuple[tuple[str, Rejection], ...]]:
    """A store's keys (relative) and byte values as the text every later step reads, or refused
    by name: a key with a control character or that is not UTF-8 (etcd keys are any bytes), a
    value that is not UTF-8 or larger than `MAX_VALUE_BYTES`. Templates only ever see text."""
    raw: dict[str, str] = {}
    refused: list[tuple[str, Rejection]] = []
    for key, value in items:
        problem = None
        if not key.isprintable():
            problem = "the key holds a control character or bytes that are not UTF-8"
        elif len(value) > MAX_VALUE_BYTES:
            problem = f"a value of {len(value):,} bytes, more than {MAX_VALUE_BYTES:,}"
        else:
            try:
                raw[key] = value.decode("utf-8")
            except UnicodeDecodeError as error:
                problem = f"not UTF-8 text: {error}"
        if problem is not None:
            refused.append((key, Rejection(where=describe(key), message=problem)))
    return raw, tuple(refused)


def parse_raw(raw: Mapping[str, str], *, describe: Callable[[str], str]) -> Parsed:
    """Decode and parse raw JSON texts by relative key (the KV stores' path)."""
    return _split(
        (key, parse_one(key, text, decoded=False, describe=describe))
        for key, text in raw.items()
        if is_contract_key(key)
    )
