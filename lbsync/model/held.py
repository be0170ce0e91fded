"""The keys a KV source holds, kept by part so that a change rebuilds only the parts it touched.

A store's watch reports single keys; the snapshot after it must equal one made from every key
(`decode_raw` then `parse_one` per key, grouped by `parts_of`), but cost only what changed: a
part is rebuilt from its own keys when one of them changed, and every other part stays the
same object, which the merge and the desired state then reuse by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lbsync.model.contract import decode_raw, parse_one
from lbsync.model.keys import is_contract_key
from lbsync.model.values import Entry, Part, Rejection, part_of


@dataclass(frozen=True)
class _Read:
    """What one key's value gives: its text (None when refused) and its entry or refusal."""

    value: bytes
    text: str | None
    result: Entry | Rejection | None


class HeldKeys:
    """A source's keys (relative to its prefix) and the parts they make."""

    def __init__(self, describe: Callable[[str], str]) -> None:
        self._describe = describe
        self._keys: dict[str, dict[str, _Read]] = {}  # part -> key -> what it gives
        self._parts: dict[str, Part] = {}
        self._dirty: set[str] = set()

    def replace(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Hold exactly these keys (a whole read of the prefix): keys whose value is the same
        as before are not read again, and only the parts that gained, lost or changed a key
        are rebuilt by the next `parts` (a source that reads its whole prefix on every change,
        Consul's KV, gets one new part for one changed key)."""
        before = self._keys
        self._keys = {}
        dirty = self._dirty
        for key, value in items:
            part = part_of(key)
            known = before.get(part, {}).get(key)
            keys = self._keys.setdefault(part, {})
            if known is not None and known.value == value:
                keys[key] = known
            else:
                keys[key] = self._read(key, value)
                dirty.add(part)
        for part, keys in before.items():  # every key kept came from here: same count, same keys
            if len(self._keys.get(part, {})) != len(keys):
                dirty.add(part)

    def put(self, key: str, value: bytes) -> None:
        """A key written."""
        part = part_of(key)
        keys = self._keys.setdefault(part, {})
        known = keys.get(key)
        if known is not None and known.value == value:
            return
        keys[key] = self._read(key, value)
        self._dirty.add(part)

    def delete(self, key: str) -> None:
        """A key deleted."""
        part = part_of(key)
        keys = self._keys.get(part)
        if keys is None or keys.pop(key, None) is None:
            return
        if not keys:
            del self._keys[part]
        self._dirty.add(part)

    def parts(self) -> dict[str, Part]:
        """The parts now: the ones touched since the last call rebuilt, the others the same
        objects as before. The dict is new when anything changed, so a caller may keep it."""
        if not self._dirty:
            return self._parts
        parts = dict(self._parts)
        for name in self._dirty:
            keys = self._keys.get(name)
            if keys is None:
                parts.pop(name, None)
                continue
            built = _part(keys)
            if parts.get(name) != built:
                parts[name] = built
        self._dirty = set()
        self._parts = parts
        return parts

    def _read(self, key: str, value: bytes) -> _Read:
        raw, refused = decode_raw([(key, value)], describe=self._describe)
        if refused:
            return _Read(value, None, refused[0][1])
        text = raw[key]
        if not is_contract_key(key):
            return _Read(value, text, None)
        return _Read(value, text, parse_one(key, text, decoded=False, describe=self._describe))


def _part(keys: dict[str, _Read]) -> Part:
    entries: list[tuple[str, Entry]] = []
    rejected: list[tuple[str, Rejection]] = []
    raw: list[tuple[str, str]] = []
    for key in sorted(keys):
        read = keys[key]
        if read.text is not None:
            raw.append((key, read.text))
        if isinstance(read.result, Rejection):
            rejected.append((key, read.result))
        elif read.result is not None:
            entries.append((key, read.result))
    return Part(entries=tuple(entries), rejected=tuple(rejected), raw=tuple(raw))
