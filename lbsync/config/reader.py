"""Typed reads from one table of the TOML document, each error naming the setting."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from lbsync.config.schema import ConfigError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_PREFIX = re.compile(r"[A-Za-z0-9_.\-/]+")

_Choice = TypeVar("_Choice", bound=StrEnum)


def parse_duration(value: object, what: str) -> float:
    """Seconds from a number or a string like `250ms`, `2s`, `1.5m`; finite (a TOML `nan` or
    `inf`, or digits past a float's range, would make a wait that never ends or compares
    false with everything)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: must be a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else math.inf
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(f"{what}: must be a duration such as 500ms or 2s, got {value!r:.80}")
    if not math.isfinite(seconds):
        raise ConfigError(f"{what}: must be a finite duration, got {value!r:.80}")
    if seconds < 0:
        raise ConfigError(f"{what}: must not be negative")
    return seconds


class Reader:
    """Typed access to one table of the document, with errors that name the setting."""

    def __init__(self, table: Mapping[str, Any], where: str, base: Path) -> None:
        self.table = table
        self.where = where
        self.base = base

    def name(self, key: str) -> str:
        """The setting's full name, as errors print it."""
        return f"{self.where}.{key}" if self.where else key

    def check_known(self, allowed: set[str]) -> None:
        """Refuse the first setting that is not in `allowed` (a misspelling, usually)."""
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise ConfigError(f"{self.name(unknown[0])}: unknown setting")

    def text(self, key: str, default: str | None = None) -> str:
        """A non-empty string without NUL (paths, names, signals and URLs are C strings to the
        system: a NUL would fail later, in whatever opens, runs or sends it)."""
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.name(key)}: must be a non-empty string, got {value!r}")
        if "\x00" in value:
            raise ConfigError(f"{self.name(key)}: must not contain a NUL character")
        return value

    def optional_text(self, key: str) -> str | None:
        """A non-empty string, or None when the setting is absent."""
        return self.text(key) if key in self.table else None

    def path(self, key: str, default: str | None = None) -> Path:
        """A path, relative ones taken from the configuration file's directory."""
        path = Path(self.text(key, default)).expanduser()
        return path if path.is_absolute() else self.base / path

    def optional_path(self, key: str) -> Path | None:
        """A path, or None when the setting is absent."""
        return self.path(key) if key in self.table else None

    def argv(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A list of non-empty strings (a command's argv, or a list of addresses)."""
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
            raise ConfigError(f"{self.name(key)}: must be a list of non-empty strings (argv)")
        if any("\x00" in item for item in value):
            raise ConfigError(f"{self.name(key)}: must not contain a NUL character")
        return tuple(value)

    def duration(self, key: str, default: float) -> float:
        """Seconds (see `parse_duration`)."""
        return parse_duration(self.table[key], self.name(key)) if key in self.table else default

    def flag(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.name(key)}: must be true or false")
        return value

    def choice(self, key: str, kind: type[_Choice], default: _Choice) -> _Choice:
        """One member of an enum, by its value."""
        value = self.table.get(key, default.value)
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise ConfigError(
                f"{self.name(key)}: must be one of {choices}, got {value!r}"
            ) from None

    def table_at(self, key: str) -> Reader:
        """A sub-table (empty when absent)."""
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.name(key)}: must be a table")
        return Reader(value, self.name(key), self.base)

    def prefix(self) -> str:
        """A store's key prefix, normalised to end in one `/`."""
        prefix = self.text("prefix", "lbsync/").strip("/")
        if not _PREFIX.fullmatch(prefix):
            raise ConfigError(f"{self.name('prefix')}: letters, digits, '_', '.', '-' and '/' only")
        return prefix + "/"

    def secret(self, key: str) -> str | None:
        """A secret given inline or, better, in a file named by `<key>_file`; None when neither
        is set. No error shows the value: a mistyped secret is still a secret."""
        if f"{key}_file" in self.table:
            if key in self.table:
                raise ConfigError(f"{self.name(key)}: set {key} or {key}_file, not both")
            return self.secret_file(f"{key}_file")
        if key not in self.table:
            return None
        value = self.table[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.name(key)}: must be a non-empty string")
        return value

    def secret_file(self, key: str) -> str:
        """The secret held in the file named by `key`, without surrounding whitespace."""
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{self.name(key)}: cannot read {path}: {error}") from error
        except UnicodeDecodeError as error:
            raise ConfigError(f"{self.name(key)}: {path} is not UTF-8 text") from error
        if not text:
            raise ConfigError(f"{self.name(key)}: {path} is empty")
        return text
