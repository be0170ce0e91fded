"""Group membership: which split groups an instance answers to. One rule for the split math,
`lbsync split` (which groups a change may name) and the rollout's gates.

With `by = "tag"` an instance answers to each of its tags; with `by = "meta:<key>"` to the
value of that metadata key, if it has one. Where several groups of a split match, the first in
the split's key order wins (`first_group`).
"""

from __future__ import annotations

from collections.abc import Iterable

from lbsync.model.values import Split

BY_TAG = "tag"
META_PREFIX = "meta:"
DEFAULT_GROUP = ""
# the default group where a name is needed (a sticky cookie's value, a backend's name): no
# group name starts with `_` (`model.checks.GROUP_RE`), so it is never a named group's
DEFAULT_GROUP_KEY = "_default"


def labels(by: str, tags: Iterable[str], meta: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The group names an instance with these tags and metadata answers to under `by`."""
    if by == BY_TAG:
        return frozenset(tags)
    key = by.removeprefix(META_PREFIX)
    return frozenset(value for name, value in meta if name == key)


def belongs(by: str, group: str, *, tags: Iterable[str], meta: Iterable[tuple[str, str]]) -> bool:
    """Whether an instance with these tags and metadata is in `group` under `by`."""
    return group in labels(by, tags, meta)


def first_group(split: Split, tags: Iterable[str], meta: Iterable[tuple[str, str]]) -> str:
    """The first group of the split (in key order) that the instance belongs to, else the
    default group."""
    answers = labels(split.by, tags, meta)
    return next((name for name, _ in split.groups if name in answers), DEFAULT_GROUP)
