"""The daemon's collector: what a whole cycle left alive is frozen, and garbage cycles are
still collected once in a while."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from lbsync.daemon.collector import MIDDLE_THRESHOLD, YOUNG_THRESHOLD, Collector, tune


class Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def cycle_of_garbage() -> weakref.ref[Node]:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_what_is_alive_after_a_whole_cycle_is_frozen() -> None:
    before = gc.get_freeze_count()
    kept = [Node() for _ in range(100)]
    Collector(full_every=3600).after_whole_cycle()
    assert gc.get_freeze_count() >= before + len(kept)


def test_garbage_of_young_generations_is_collected_before_the_freeze() -> None:
    dead = cycle_of_garbage()
    Collector(full_every=3600).after_whole_cycle()
    assert dead() is None


def test_frozen_garbage_is_collected_by_the_next_full_collection() -> None:
    collector = Collector(full_every=3600)
    gc.collect(1)
    dead = cycle_of_garbage()
    gc.freeze()  # a cycle that became garbage only after it was frozen
    collector.after_whole_cycle()
    assert dead() is not None  # frozen: not walked
    Collector(full_every=0).after_whole_cycle()
    assert dead() is None


def test_tune_collects_the_youngest_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, MIDDLE_THRESHOLD, 10)
    finally:
        gc.set_threshold(*before)
