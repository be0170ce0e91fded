"""Writing services files (TOML in the KV contract's shapes) from plain dicts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def toml_value(value: Any) -> str:
    """A TOML literal for JSON-like data (inline tables for dicts)."""
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def services_toml(
    services: dict[str, dict[str, Any]], settings: dict[str, Any] | None = None
) -> str:
    """`{name: {"route": {...}, "split": {...}, "instances": {id: {...}}}}` as a services file."""
    lines: list[str] = []
    for name, parts in services.items():
        for part, value in parts.items():
            if part == "instances":
                for instance_id, data in value.items():
                    lines.append(f'[services.{name}.instances."{instance_id}"]')
                    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items()]
            else:
                lines.append(f"[services.{name}.{part}]")
                lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()]
    if settings:
        lines.append("[settings]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace a file in one step, as editors and config management do."""
    staging = path.with_name(f".{path.name}.test-tmp")
    staging.write_text(text)
    os.replace(staging, path)


def instance(port: int, *tags: str, **fields: Any) -> dict[str, Any]:
    """One loopback instance entry."""
    return {"address": "127.0.0.1", "port": port, "tags": list(tags), **fields}
