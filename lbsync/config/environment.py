"""`LBSYNC_*` environment variables laid over the parsed document, and Consul's own token.

A variable names a setting by its path in upper case joined by `_`: `LBSYNC_APPLY_MIN_WAIT`,
`LBSYNC_SOURCE_FILE_PATH`, and for targets by their name: `LBSYNC_TARGET_<NAME>_DEST`,
`LBSYNC_TARGET_<NAME>_VARS_MAXCONN`. Values are read as TOML values
(`LBSYNC_APPLY_MIN_WAIT=0.5`, `..._VARS_BIND='["127.0.0.1:80"]'`), else as strings. Secrets
(`SECRETS`) are taken as the exact text: a password `123456` read as TOML would become a
number, and the error about it would have to show it.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from typing import Any, Final

from lbsync.config.schema import TargetKind
from lbsync.config.targets import DEFAULT_VARS, target_name

ENV_PREFIX: Final = "LBSYNC_"
CONFIG_VARIABLE: Final = "LBSYNC_CONFIG"
CONSUL_TOKEN_VARIABLE: Final = "CONSUL_HTTP_TOKEN"  # noqa: S105 (a name, not a secret)
CONSUL_TLS_VARIABLES: Final = {
    "CONSUL_CACERT": "ca_file",
    "CONSUL_CLIENT_CERT": "cert_file",
    "CONSUL_CLIENT_KEY": "key_file",
}

KNOWN_PATHS: Final = (
    ("source", "file", "path"),
    ("source", "etcd", "endpoints"),
    ("source", "etcd", "prefix"),
    ("source", "etcd", "username"),
    ("source", "etcd", "password"),
    ("source", "etcd", "password_file"),
    ("source", "consul", "addresses"),
    ("source", "consul", "prefix"),
    ("source", "consul", "token"),
    ("source", "consul", "token_file"),
    ("source", "consul", "datacenter"),
    ("health",),
    ("apply", "min_wait"),
    ("apply", "max_wait"),
    ("apply", "fast_lane"),
    ("rollout", "drive"),
    ("rollout", "lease_ttl"),
    ("api", "listen"),
    ("api", "token_file"),
    ("api", "open"),
    ("analysis", "prometheus"),
    ("analysis", "timeout"),
    ("analysis", "window"),
)
SECRETS: Final = frozenset({("source", "etcd", "password"), ("source", "consul", "token")})


def _env_value(text: str) -> Any:
    """The variable's text as a TOML value, else as a string. tomllib raises more than its
    decode error: a plain ValueError for an integer of thousands of digits and RecursionError
    for arrays nested a thousand deep; those texts are strings too, for the setting to refuse
    by name."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError
        return text


def _set_path(document: dict[str, Any], path: list[str], value: Any) -> None:
    table = document
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            return
    table[path[-1]] = value


def _paths(document: Mapping[str, Any]) -> dict[str, list[str]]:
    """Variable name (without the prefix) -> the setting's path, for every known setting and
    every setting the document has."""
    paths = {"_".join(path).upper(): list(path) for path in KNOWN_PATHS}
    for section, table in document.items():
        if isinstance(table, dict):
            for key in table:
                paths.setdefault(f"{section}_{key}".upper(), [section, key])
    targets = document.get("target", [])
    for index, target in enumerate(targets if isinstance(targets, list) else []):
        if not isinstance(target, dict):
            continue
        name = target_name(target, index)
        stem = f"TARGET_{name.upper().replace('-', '_')}"
        for key in (*target, "dest", "template", "validate", "mode"):
            paths.setdefault(f"{stem}_{key.upper()}", ["target", name, key])
        kind = target.get("kind", TargetKind.HAPROXY.value)
        known_vars = set(DEFAULT_VARS[TargetKind(kind)]) if kind in set(TargetKind) else set()
        own_vars = target.get("vars")
        for key in known_vars | set(own_vars if isinstance(own_vars, dict) else ()):
            paths.setdefault(f"{stem}_VARS_{key.upper()}", ["target", name, "vars", key])
    return paths


def apply_environment(document: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay `LBSYNC_*` variables on the parsed document (a new dict is returned)."""
    result = copy.deepcopy(document)
    paths = _paths(document)
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_VARIABLE:
            continue
        path = paths.get(variable.removeprefix(ENV_PREFIX))
        if path is None:
            continue
        value = text if tuple(path) in SECRETS else _env_value(text)
        if path[0] == "target":
            for index, target in enumerate(result["target"]):
                if isinstance(target, dict) and target_name(target, index) == path[1]:
                    _set_path(target, path[2:], value)
        else:
            _set_path(result, path, value)
    consul = (
        result.get("source", {}).get("consul") if isinstance(result.get("source"), dict) else None
    )
    if isinstance(consul, dict):
        consul.update(consul_conventions(consul, environ))
    return result


def consul_conventions(consul: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The `[source.consul]` settings Consul's own variables give, as every Consul tool reads
    them, for the settings the table (or `LBSYNC_*`) leaves unset: `CONSUL_HTTP_ADDR` (with
    `CONSUL_HTTP_SSL=true`, https when it names no scheme), `CONSUL_HTTP_TOKEN`,
    `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`."""
    found: dict[str, Any] = {}
    address = environ.get("CONSUL_HTTP_ADDR", "").strip()
    if address and not {"addresses", "address"} & set(consul):
        secure = environ.get("CONSUL_HTTP_SSL", "").strip().lower() in ("1", "true", "yes")
        if secure and "://" not in address:
            address = f"https://{address}"
        found["addresses"] = [address]
    if not {"token", "token_file"} & set(consul):
        if token := environ.get(CONSUL_TOKEN_VARIABLE):
            found["token"] = token
        elif token_file := environ.get("CONSUL_HTTP_TOKEN_FILE"):
            found["token_file"] = token_file
    for variable, setting in CONSUL_TLS_VARIABLES.items():
        if setting not in consul and (value := environ.get(variable)):
            found[setting] = value
    return found
