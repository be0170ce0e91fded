"""docs/migrating.md's examples run as written: its commands against a real Consul or etcd, its
configuration and templates through `lbsync render` and `lbsync check` (the real validators),
and what it says they print compared with what they print."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from support.commandline import run_main_blocking
from support.consul import ConsulAgent
from support.etcd import EtcdServer

from lbsync.kv.etcd import EtcdClient

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating.md"
EXAMPLE = re.compile(r"<!-- example: (\S+)[^>]*-->\n```[a-z]*\n(.*?)```", re.DOTALL)


def examples() -> dict[str, str]:
    """The page's example blocks (a fenced block right after `<!-- example: NAME -->`)."""
    return dict(EXAMPLE.findall(DOC.read_text()))


def commands(text: str, tool: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (key, value) of each `consul kv put` / `etcdctl put` line of a block."""
    puts = []
    for line in text.splitlines():
        words = shlex.split(line)
        assert tuple(words[: len(tool)]) == tool and len(words) == len(tool) + 2, line
        puts.append((words[-2], words[-1]))
    return puts


def at_home(text: str, home: Path, **addresses: str) -> str:
    """A configuration block with its system paths moved into the test's directory and its
    store addresses replaced by the test's servers."""
    for path in ("/etc/haproxy/", "/run/haproxy/", "/etc/lbsync/", "/etc/myapp/", "/etc/nginx/"):
        text = text.replace(path, f"{home}/")
    text = text.replace("/run/nginx.pid", f"{home}/nginx.pid")
    for written, real in addresses.items():
        text = text.replace(written, real)
    return text


def lbsync(config: Path, *args: str) -> tuple[int | None, str, str]:
    finished = run_main_blocking(
        ["-c", str(config), *args], environ=dict(os.environ), cwd=config.parent, timeout=60
    )
    return finished.status, finished.stdout, finished.stderr


def in_order(excerpt: str, text: str) -> bool:
    """Whether every line of the excerpt is a line of the text, in the same order."""
    lines = iter(text.splitlines())
    return all(any(line == wanted for line in lines) for wanted in excerpt.splitlines())


def test_the_page_has_the_examples_this_test_runs() -> None:
    assert {
        "consul-template/commands",
        "consul-template/lbsync.toml",
        "consul-template/haproxy.cfg",
        "consul-template/flags.env.j2",
        "consul-template/generic.toml",
        "consul-template/flags.env",
        "confd/commands",
        "confd/myapp-nginx.conf.j2",
        "confd/lbsync.toml",
        "confd/nginx.conf",
        "confd/instances",
        "confd/nginx.toml",
    } <= set(examples())


async def test_from_consul_template_the_shipped_template_and_a_generic_target_render_as_shown(
    agent: ConsulAgent, tmp_path: Path
) -> None:
    blocks = examples()
    for key, value in commands(blocks["consul-template/commands"], ("consul", "kv", "put")):
        await agent.kv_put(key, value)
    for key, value in {"checkout": "on", "search": "off"}.items():
        await agent.kv_put(f"lbsync/myapp/flags/{key}", value)
    await agent.kv_put("lbsync/myapp/owner", "platform")
    await agent.register("web", "web-1", 8080, address="10.0.0.5")
    await agent.register("web", "web-2", 8080, address="10.0.0.6")
    (tmp_path / "flags.env.j2").write_text(blocks["consul-template/flags.env.j2"])
    config = tmp_path / "lbsync.toml"
    written = blocks["consul-template/lbsync.toml"] + "\n" + blocks["consul-template/generic.toml"]
    config.write_text(at_home(written, tmp_path, **{"127.0.0.1:8500": agent.address}))

    status, out, errors = lbsync(config, "render")
    assert status == 0, errors
    assert in_order(blocks["consul-template/haproxy.cfg"], out), out
    status, out, errors = lbsync(config, "render", "--target", "flags")
    assert (status, out) == (0, blocks["consul-template/flags.env"]), errors
    status, _, errors = lbsync(config, "check")
    assert status == 0, errors


async def test_from_confd_a_generic_target_and_the_lbsync_way_render_as_shown(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    blocks = examples()
    async with EtcdClient([etcd.url], request_timeout=3) as client:
        for key, value in commands(blocks["confd/commands"], ("etcdctl", "put")):
            await client.put(key, value)
        for key, value in commands(blocks["confd/instances"], ("etcdctl", "put")):
            await client.put(key, value)
    (tmp_path / "myapp-nginx.conf.j2").write_text(blocks["confd/myapp-nginx.conf.j2"])
    endpoint = {"http://127.0.0.1:2379": etcd.url}

    generic = tmp_path / "generic" / "lbsync.toml"
    generic.parent.mkdir()
    generic.write_text(at_home(blocks["confd/lbsync.toml"], tmp_path, **endpoint))
    status, out, errors = lbsync(generic, "render")
    assert (status, out) == (0, blocks["confd/nginx.conf"]), errors
    status, _, errors = lbsync(generic, "check")  # nginx -t on the rendered file
    assert status == 0, errors

    shipped = tmp_path / "shipped" / "lbsync.toml"
    shipped.parent.mkdir()
    shipped.write_text(at_home(blocks["confd/nginx.toml"], shipped.parent, **endpoint))
    status, out, errors = lbsync(shipped, "render")
    assert status == 0, errors
    servers = re.findall(r"^ +server (\S+) weight=256;$", out, re.MULTILINE)
    assert servers == ["10.0.1.10:80", "10.0.1.11:80"], out
    status, _, errors = lbsync(shipped, "check")
    assert status == 0, errors
