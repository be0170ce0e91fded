"""The fast lane's patch is the whole render, byte for byte, for what it takes; what it cannot
decide from the changed services alone it leaves to the whole render (pure)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync import config
from lbsync.core.state import BuildCache, DesiredState, ServiceState, build
from lbsync.haproxy import layout
from lbsync.haproxy.blocks import server_blocks, splice
from lbsync.haproxy.operations import AddServer, DelServer, NotRuntime, SetWeight, runtime_changes
from lbsync.model.catalog import MergeCache, merge
from lbsync.model.contract import parse_values
from lbsync.model.values import Snapshot
from lbsync.pipeline import fastlane
from lbsync.pipeline.render import load_template, render

Values = dict[str, object]


def catalog_values(services: int = 12, split: float = 10) -> Values:
    values: Values = {}
    for index in range(services):
        name = f"svc-{index:02d}"
        values[f"services/{name}/route"] = {"hosts": [f"{name}.example.com"]}
        values[f"services/{name}/split"] = {"groups": {"canary": split}}
        for number in range(4):
            tag = "canary" if number == 0 else "stable"
            values[f"services/{name}/instances/{name}-{number}"] = {
                "address": f"10.0.{index}.{number + 1}",
                "port": 8080,
                "tags": [tag],
            }
    return values


class World:
    """States built the way the daemon builds them (caches: unchanged services keep their
    objects), a template, and the whole render."""

    def __init__(self, template: jinja2.Template, variables: dict[str, Any]) -> None:
        self.template, self.variables = template, variables
        self.merges, self.builds = MergeCache(), BuildCache()

    def state(self, values: Values) -> DesiredState:
        entries, rejected = parse_values(values, describe=str)
        snapshot = Snapshot(source="test", entries=entries, rejected=rejected)
        return build(merge([snapshot], self.merges), cache=self.builds)

    def whole(self, state: DesiredState) -> bytes:
        return render(state, self.template, self.variables).encode()

    def alone(self, whole: DesiredState, service: ServiceState) -> bytes:
        return self.whole(replace(whole, services=(service,)))

    def patch(self, basis: DesiredState, state: DesiredState) -> fastlane.Patch | fastlane.NotFast:
        content = self.whole(basis)
        return fastlane.plan(
            basis=basis,
            state=state,
            running=layout.parse(content.decode()),
            content=content,
            blocks=server_blocks(content),
            render_alone=self.alone,
        )


def shipped(tmp_path: Path) -> World:
    document: dict[str, Any] = {
        "source": {"file": {"path": "services.toml"}},
        "target": [{"kind": "haproxy", "dest": "run/haproxy.cfg"}],
    }
    target = config.parse(document, tmp_path / "lbsync.toml").targets[0]
    return World(load_template(target.template), dict(target.vars))


def custom(tmp_path: Path, text: str) -> World:
    path = tmp_path / "custom.cfg.j2"
    path.write_text(text)
    return World(load_template(path), {})


def test_a_split_change_is_weights_only_and_the_whole_render(tmp_path: Path) -> None:
    world = shipped(tmp_path)
    values = catalog_values()
    basis = world.state(values)
    state = world.state({**values, "services/svc-03/split": {"groups": {"canary": 40}}})
    patch = world.patch(basis, state)
    assert isinstance(patch, fastlane.Patch), patch
    assert patch.weights_only and patch.operations
    assert {op.backend for op in patch.operations} == {"svc-03"}
    assert patch.content == world.whole(state)
    assert patch.layout == layout.parse(world.whole(state).decode())
    assert patch.blocks == server_blocks(patch.content)


def test_joins_and_leaves_are_patched_too_but_are_not_weights_only(tmp_path: Path) -> None:
    world = shipped(tmp_path)
    values = catalog_values()
    basis = world.state(values)
    joined = dict(values)
    joined["services/svc-05/instances/svc-05-9"] = {"address": "10.0.5.99", "port": 8080}
    del joined["services/svc-07/instances/svc-07-2"]
    state = world.state(joined)
    patch = world.patch(basis, state)
    assert isinstance(patch, fastlane.Patch), patch
    kinds = {type(op) for op in patch.operations}
    assert AddServer in kinds and DelServer in kinds and not patch.weights_only
    assert patch.content == world.whole(state)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"services/svc-02/route": {"hosts": ["other.example.com"]}}, "beyond its server lines"),
        ({"services/svc-new/route": {"hosts": ["new.example.com"]}}, "came or went"),
        ({"settings/owner": "platform"}, "settings changed"),
        # the only canary critical and its share failing: the backend gets its 503 line
        (
            {
                "services/svc-04/split": {"groups": {"canary": 10}, "on_empty": "fail"},
                "services/svc-04/instances/svc-04-0": {
                    "address": "10.0.4.1",
                    "port": 8080,
                    "tags": ["canary"],
                    "health": "critical",
                },
            },
            "beyond its server lines",
        ),
    ],
)
def test_what_the_lane_cannot_decide_waits_for_the_whole_render(
    tmp_path: Path, change: Values, reason: str
) -> None:
    world = shipped(tmp_path)
    values = catalog_values()
    patch = world.patch(world.state(values), world.state({**values, **change}))
    assert isinstance(patch, fastlane.NotFast) and reason in patch.reason, patch


def test_many_changed_services_take_the_whole_render(tmp_path: Path) -> None:
    world = shipped(tmp_path)
    values = catalog_values(services=fastlane.MAX_CHANGED_SERVICES + 2)
    basis = world.state(values)
    state = world.state(catalog_values(services=fastlane.MAX_CHANGED_SERVICES + 2, split=30))
    patch = world.patch(basis, state)
    assert isinstance(patch, fastlane.NotFast) and "more than" in patch.reason


def test_server_lines_broken_by_other_lines_are_not_a_block(tmp_path: Path) -> None:
    world = custom(
        tmp_path,
        "{% for s in services %}backend {{ s.name }}\n    balance roundrobin\n"
        "{% for v in s.servers %}    server {{ v.name }} {{ v.endpoint }} weight {{ v.weight }}\n"
        "    # {{ v.name }}\n{% endfor %}{% endfor %}",
    )
    values = catalog_values()
    patch = world.patch(
        world.state(values),
        world.state({**values, "services/svc-01/split": {"groups": {"canary": 60}}}),
    )
    assert isinstance(patch, fastlane.NotFast) and "not found as one block" in patch.reason


def test_a_template_that_reads_other_services_is_patched_as_rendered_alone(tmp_path: Path) -> None:
    """What a service's lines depend on beyond the service is not the lane's to know: the
    patch then differs from the whole render, which the whole cycle writes (as any change)."""
    world = custom(
        tmp_path,
        "{% for s in services %}backend {{ s.name }}\n    balance roundrobin\n"
        "{% for v in s.servers %}    server {{ v.name }} {{ v.endpoint }} weight "
        "{{ v.weight }} maxconn {{ services | length }}\n{% endfor %}{% endfor %}",
    )
    values = catalog_values()
    state = world.state({**values, "services/svc-01/split": {"groups": {"canary": 60}}})
    patch = world.patch(world.state(values), state)
    assert isinstance(patch, fastlane.NotFast) or patch.content != world.whole(state)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 100)), min_size=1, max_size=6))
def test_a_sequence_of_patches_stays_the_whole_render(
    tmp_path_factory: pytest.TempPathFactory, shares: list[tuple[int, int]]
) -> None:
    world = shipped(tmp_path_factory.mktemp("lane"))
    values = catalog_values()
    basis = world.state(values)
    content = world.whole(basis)
    running, blocks = layout.parse(content.decode()), server_blocks(content)
    for service, share in shares:
        values = {**values, f"services/svc-{service:02d}/split": {"groups": {"canary": share}}}
        state = world.state(values)
        patch = fastlane.plan(
            basis=basis,
            state=state,
            running=running,
            content=content,
            blocks=blocks,
            render_alone=world.alone,
        )
        if isinstance(patch, fastlane.NotFast):
            content = world.whole(state)  # as the whole cycle would
            running, blocks = layout.parse(content.decode()), server_blocks(content)
        else:
            assert all(isinstance(op, SetWeight) for op in patch.operations)
            content, running, blocks = patch.content, patch.layout, patch.blocks
        basis = state
        assert content == world.whole(state)
        assert blocks == server_blocks(content)


def test_blocks_splice_as_a_rescan_finds_them() -> None:
    text = (
        b"global\n    maxconn 10\nbackend a\n    balance roundrobin\n"
        b"    server a1 1.1.1.1:1 weight 1\n"
        b"    server a2 1.1.1.2:1 weight 1\nbackend b\n    server b1 2.2.2.1:1 weight 9\n"
        b"listen c\n    server c1 3.3.3.1:1\n    option httpchk\n    server c2 3.3.3.2:1\n"
        b"backend d\n    balance roundrobin\nbackend a\n"
    )
    blocks = server_blocks(text)
    assert list(blocks.by_name) == ["b"] and blocks.unusable == {"a", "c", "d"}
    patched, moved = splice(text, blocks, {"b": b"    server b1 2.2.2.1:1 weight 100\n"})
    assert b"weight 100\nlisten c" in patched
    assert moved == server_blocks(patched)


def routed_by_group(split: float = 10, **extra: Values) -> Values:
    """`catalog_values` with svc-03 sticky and pinned (cookie and header), its canary at
    `split` (its stable instances are the default group)."""
    values = catalog_values()
    values["services/svc-03/route"] = {
        "hosts": ["svc-03.example.com"],
        "sticky": {"cookie": "lbsync"},
    }
    values["services/svc-03/split"] = {
        "groups": {"canary": split},
        "pin": {"header": "X-Canary", "cookie": "canary"},
    }
    return {**values, **extra}


def test_a_share_change_on_a_sticky_pinned_service_sets_weights_in_its_split_and_sticky_backends(
    tmp_path: Path,
) -> None:
    world = shipped(tmp_path)
    basis = world.state(routed_by_group(split=10))
    state = world.state(routed_by_group(split=0))
    patch = world.patch(basis, state)
    assert isinstance(patch, fastlane.Patch), patch
    assert patch.weights_only
    # the stable instances (the default group) keep 256: only the canary's weight changes
    assert {op.backend for op in patch.operations} == {"svc-03", "svc-03:sticky:canary"}
    assert patch.content == world.whole(state)
    operations = layout_runtime(world.whole(basis), world.whole(state))
    assert set(operations) == set(patch.operations)


def layout_runtime(before: bytes, after: bytes) -> tuple[object, ...]:
    """What the whole render's plan sends: the runtime operations between two files."""
    return runtime_changes(layout.parse(before.decode()), layout.parse(after.decode()))


def test_a_health_flip_on_a_pinned_service_sets_the_pinned_weight_too(tmp_path: Path) -> None:
    world = shipped(tmp_path)
    values = routed_by_group()
    sick = {
        "services/svc-03/instances/svc-03-0": {
            "address": "10.0.3.1",
            "port": 8080,
            "tags": ["canary"],
            "health": "critical",
        }
    }
    patch = world.patch(world.state(values), world.state({**values, **sick}))
    assert isinstance(patch, fastlane.Patch), patch
    assert {op for op in patch.operations if isinstance(op, SetWeight)} == {
        SetWeight("svc-03", "svc-03-0", 0),
        SetWeight("svc-03:sticky:canary", "svc-03-0", 0),
        SetWeight("svc-03:pin:canary", "svc-03-0", 0),  # a pin to it falls back to the split
    }


def joining(world: World, values: Values, tag: str) -> tuple[DesiredState, DesiredState]:
    """The states before and after svc-03-9 (tagged `tag`) joins svc-03."""
    instance = {"address": "10.0.3.99", "port": 8080, "tags": [tag]}
    return world.state(values), world.state(
        {**values, "services/svc-03/instances/svc-03-9": instance}
    )


def test_a_server_joining_a_sticky_service_takes_a_reload_as_its_cookie_cannot_be_added(
    tmp_path: Path,
) -> None:
    world = shipped(tmp_path)
    before, after = joining(world, routed_by_group(), "stable")
    patch = world.patch(before, after)
    assert isinstance(patch, fastlane.NotFast) and "`cookie`" in patch.reason, patch
    with pytest.raises(NotRuntime, match="cannot be added at runtime"):
        layout_runtime(world.whole(before), world.whole(after))


def test_a_server_joining_a_pinned_service_is_added_to_its_split_and_group_backends(
    tmp_path: Path,
) -> None:
    world = shipped(tmp_path)
    values = routed_by_group()
    values["services/svc-03/route"] = {"hosts": ["svc-03.example.com"]}  # not sticky
    before, after = joining(world, values, "canary")
    patch = world.patch(before, after)
    assert isinstance(patch, fastlane.Patch), patch
    added = {(op.backend, op.server) for op in patch.operations if isinstance(op, AddServer)}
    assert added == {("svc-03", "svc-03-9"), ("svc-03:pin:canary", "svc-03-9")}
    assert patch.content == world.whole(after)


@pytest.mark.parametrize(
    ("route", "words"),
    [
        ({"upstream": "https"}, ("ssl", "verify", "required", "ca-file", "@system-ca")),
        ({"upstream": "https", "tls_verify": False}, ("ssl", "verify", "none")),
    ],
)
def test_a_server_joining_an_https_service_is_added_with_its_files_tls_words(
    tmp_path: Path, route: dict[str, object], words: tuple[str, ...]
) -> None:
    world = shipped(tmp_path)
    values = catalog_values()
    values["services/svc-02/route"] = {"hosts": ["svc-02.example.com"], **route}
    basis = world.state(values)
    joined = {**values, "services/svc-02/instances/svc-02-9": {"address": "10.0.2.99", "port": 443}}
    state = world.state(joined)
    patch = world.patch(basis, state)
    assert isinstance(patch, fastlane.Patch), patch
    (added,) = [op for op in patch.operations if isinstance(op, AddServer)]
    assert added.server == "svc-02-9" and added.arguments[-len(words) :] == words
    assert patch.content == world.whole(state)


def test_an_instance_joining_a_service_that_redirects_changes_nothing_in_the_file(
    tmp_path: Path,
) -> None:
    world = shipped(tmp_path)
    values = catalog_values()
    values["services/svc-02/route"] = {
        "hosts": ["svc-02.example.com"],
        "redirect": {"code": 301, "to": "https://example.com$path"},
    }
    basis = world.state(values)
    joined = {**values, "services/svc-02/instances/svc-02-9": {"address": "10.0.2.99", "port": 80}}
    state = world.state(joined)
    assert world.whole(basis) == world.whole(state)
    patch = world.patch(basis, state)
    assert isinstance(patch, fastlane.NotFast) and "no server line changed" in patch.reason
