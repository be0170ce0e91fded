"""Consul end to end: catalog health decides what a real HAProxy routes to, splits measured
through it, and an ACL refusal that keeps the last good configuration serving."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support.consul import ConsulAgent, running_agent
from support.etcd import make_tls_files
from support.processes import Backends, HAProxy
from support.site import Site, running_daemon, until_live
from support.traffic import fetch, shares, tally

HOST = "shop.example.com"
BLUE_GREEN = {"blue": ["blue-1", "blue-2"], "green": ["green-1"]}


def weight(text: str, server: str) -> int | None:
    """A server's weight in a rendered HAProxy file, None when it is not there."""
    found = re.search(rf"^    server {re.escape(server)} \S+ weight (\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def consul_toml(agent: ConsulAgent, token: str | None = None) -> str:
    line = f'token = "{token}"\n' if token else ""
    return f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "5s"\n{line}'


@dataclass
class Shop:
    site: Site
    proxy: HAProxy
    agent: ConsulAgent


async def start_shop(
    site: Site,
    proxy: HAProxy,
    backends: Callable[[list[str]], Backends],
    agent: ConsulAgent,
    token: str | None = None,
) -> Shop:
    ports = backends(["blue-1", "blue-2", "green-1"]).ports
    await agent.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
    await agent.kv_put("lbsync/services/shop/split", {"groups": {"blue": 80, "green": 20}})
    for name, port in ports.items():
        await agent.register("shop", name, port, name.split("-")[0])
    site.write_config(source=consul_toml(agent, token))
    result = site.lbsync("once")
    assert "pending" in result.stderr, result.stderr
    proxy.start()
    return Shop(site, proxy, agent)


async def test_an_80_20_split_follows_consul_health_through_haproxy(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    agent: ConsulAgent,
) -> None:
    site, proxy = haproxy_site
    await start_shop(site, proxy, backends, agent)
    measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
    assert abs(measured["blue"] - 80) <= 3 and abs(measured["green"] - 20) <= 3, measured

    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 15)
        await agent.set_check("green-1", "critical")
        await until_live(daemon, site.dest, lambda text: weight(text, "green-1") == 0)
        counts = await tally(site.port, HOST, 1000)
        assert counts["green-1"] == 0 and sum(counts.values()) == 1000, counts
        assert daemon.status.state is not None
        shop = daemon.status.state.service("shop")
        assert shop is not None
        assert any("group green has no eligible instance" in note for note in shop.notes)

        await agent.set_check("green-1", "passing")
        await until_live(daemon, site.dest, lambda text: (weight(text, "green-1") or 0) > 0)
        measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
        assert abs(measured["green"] - 20) <= 3, measured

        await agent.deregister("blue-2")
        await until_live(daemon, site.dest, lambda text: weight(text, "blue-2") is None)
        await agent.service_maintenance("blue-1", True)
        await until_live(daemon, site.dest, lambda text: weight(text, "blue-1") == 0)
        counts = await tally(site.port, HOST, 500)
    assert counts == {"green-1": 500}


async def test_a_token_that_stops_working_keeps_the_last_config_and_the_status_says_why(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    tmp_path: Path,
) -> None:
    site, proxy = haproxy_site
    with running_agent(tmp_path / "consul-acl", acl=True) as agent:
        token = await agent.create_token(
            'key_prefix "lbsync/" { policy = "read" }\n'
            'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
        )
        await start_shop(site, proxy, backends, agent, token)
        before = site.dest.read_bytes()
        worker = proxy.worker_pids()
        async with running_daemon(site.config()) as daemon:
            await daemon.wait_for(lambda status: status.ready, 15)
            await agent.delete_token(token)
            status = await daemon.wait_for(lambda s: not s.sources[0].usable, 15)
            assert status.sources[0].error is not None
            assert status.sources[0].error.startswith("Consul ACL: token not found")
            counts = await tally(site.port, HOST, 300)
        assert sum(counts.values()) == 300 and not any(k.startswith("HTTP") for k in counts)
        assert site.dest.read_bytes() == before
        assert proxy.worker_pids() == worker


async def test_services_registered_with_fabios_tags_alone_are_routed(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    agent: ConsulAgent,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "blue-2", "green-1", "api-1"]).ports
    await agent.kv_put("lbsync/services/shop/split", {"groups": {"blue": 80, "green": 20}})
    for name in ("blue-1", "blue-2", "green-1"):
        await agent.register("shop", name, ports[name], name.split("-")[0], f"urlprefix-{HOST}/")
    await agent.register("api", "api-1", ports["api-1"], "urlprefix-/api proto=http")
    await agent.register("ssh", "ssh-1", 22, "urlprefix-:2222 proto=tcp")  # not for HAProxy
    site.write_config(source=consul_toml(agent))
    result = site.lbsync("once")
    assert "urlprefix-:2222 proto=tcp" in result.stderr and "not carried out" in result.stderr
    proxy.start()
    measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
    assert abs(measured["blue"] - 80) <= 3 and abs(measured["green"] - 20) <= 3, measured
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(b"GET /api/v1 HTTP/1.1\r\nHost: any.example.org\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.rstrip().endswith(b"api-1"), answer


async def test_fabios_route_weight_lines_split_the_traffic_and_a_bad_line_is_named(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    agent: ConsulAgent,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "blue-2", "green-1"]).ports
    for name, port in ports.items():
        await agent.register("shop", name, port, name.split("-")[0], f"urlprefix-{HOST}/")
    lines = [
        f'route weight shop {HOST}/ weight 0.20 tags "green"',
        "route add shop shop.example.com/ http://10.0.0.9:8080/",  # Fabio froze on less
    ]
    await agent.kv_put("fabio/config", "\n".join(lines) + "\n")
    site.write_config(source=consul_toml(agent, None) + 'fabio_config = "fabio/config"\n')
    result = site.lbsync("once")
    assert "consul key fabio/config line 2: route add is not carried out" in result.stderr
    proxy.start()
    measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
    assert abs(measured["blue"] - 80) <= 3 and abs(measured["green"] - 20) <= 3, measured

    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 15)
        await agent.kv_put("fabio/config", f'route weight shop {HOST}/ weight 0.5 tags "green"\n')
        await until_live(daemon, site.dest, lambda text: weight(text, "green-1") == 256)
        measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
        assert abs(measured["green"] - 50) <= 3, measured


VERSIONS = {"v1": ["v1-1", "v1-2"], "v2": ["v2-1"]}
BY_VERSION = {
    "v1": {"Filter": "Service.Meta.version == v1"},
    "v2": {"Filter": 'Service.Meta.version == "v2"'},
}


async def write_entry(agent: ConsulAgent, entry: dict[str, object]) -> None:
    """`PUT /v1/config`, as `consul config write` sends it (Consul checks the chain)."""
    assert await agent.call("PUT", "/v1/config", entry) is True


async def split_by_entries(agent: ConsulAgent, service: str, weights: dict[str, float]) -> None:
    splits = [{"Weight": share, "ServiceSubset": subset} for subset, share in weights.items()]
    await write_entry(agent, {"Kind": "service-splitter", "Name": service, "Splits": splits})


async def test_a_service_splitter_with_its_resolvers_subsets_splits_the_traffic(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    agent: ConsulAgent,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["v1-1", "v1-2", "v2-1", "api-1", "api-2"]).ports
    for name in ("v1-1", "v1-2", "v2-1"):
        meta = {"version": name.split("-")[0]}
        await agent.register("shop", name, ports[name], f"urlprefix-{HOST}/", meta=meta)
    for name in ("api-1", "api-2"):
        await agent.register("api", name, ports[name], "urlprefix-/api", meta={"version": name})
    for service in ("shop", "api"):  # a splitter needs an L7 protocol (Consul refuses tcp)
        await write_entry(agent, {"Kind": "service-defaults", "Name": service, "Protocol": "http"})
    await write_entry(agent, {"Kind": "service-resolver", "Name": "shop", "Subsets": BY_VERSION})
    await split_by_entries(agent, "shop", {"v1": 80, "v2": 20})
    odd = {"a": {"Filter": "Service.Meta.version != api-2"}, "b": {"Filter": "Service.ID == b"}}
    await write_entry(agent, {"Kind": "service-resolver", "Name": "api", "Subsets": odd})
    await split_by_entries(agent, "api", {"a": 50, "b": 50})  # Consul takes any filter
    site.write_config(source=consul_toml(agent) + "config_entries = true\n")
    result = site.lbsync("once")
    assert "consul config service-resolver/api: subset a: the Filter" in result.stderr
    proxy.start()
    measured = shares(await tally(site.port, HOST, 2000), VERSIONS)
    assert abs(measured["v1"] - 80) <= 3 and abs(measured["v2"] - 20) <= 3, measured

    async with running_daemon(site.config()) as daemon:
        status = await daemon.wait_for(lambda status: status.ready, 15)
        assert status.state is not None
        refused = [str(rejection) for rejection in status.state.rejected]
        assert any(text.startswith("consul config service-resolver/api") for text in refused)
        await split_by_entries(agent, "shop", {"v1": 50, "v2": 50})
        await until_live(daemon, site.dest, lambda text: weight(text, "v2-1") == 256)
        measured = shares(await tally(site.port, HOST, 2000), VERSIONS)
        assert abs(measured["v2"] - 50) <= 3, measured

        split = {"by": "meta:version", "groups": {"v1": 90, "v2": 10}}
        await agent.kv_put("lbsync/services/shop/split", split)  # KV's split wins
        await until_live(daemon, site.dest, lambda text: weight(text, "v1-1") == 256)
        measured = shares(await tally(site.port, HOST, 2000), VERSIONS)
        assert abs(measured["v2"] - 10) <= 3, measured
        await split_by_entries(agent, "shop", {"v1": 20, "v2": 80})
        await agent.kv_delete("lbsync/services/shop/split")  # the splitter's again, as it is now
        await until_live(daemon, site.dest, lambda text: weight(text, "v1-1") == 32)
        assert weight(site.dest.read_text(), "v2-1") == 256


async def render(argv: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lbsync render` in a process of its own with exactly this environment."""
    return await asyncio.to_thread(
        subprocess.run, argv, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


async def test_consuls_own_variables_alone_reach_an_acl_protected_agent(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], tmp_path: Path
) -> None:
    site, _ = haproxy_site
    with running_agent(tmp_path / "consul-acl", acl=True) as agent:
        token = await agent.create_token(
            'key_prefix "lbsync/" { policy = "read" }\n'
            'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
        )
        await agent.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
        for name, port in backends(["blue-1", "green-1"]).ports.items():
            await agent.register("shop", name, port, name.split("-")[0])
        site.write_config(source="[source.consul]\n")  # no address, no token: Consul's own
        argv = [sys.executable, "-m", "lbsync", "-c", str(site.config_path), "render"]
        environ = {**os.environ, "CONSUL_HTTP_ADDR": agent.address, "CONSUL_HTTP_TOKEN": token}
        rendered = await render(argv, environ)
        assert rendered.returncode == 0, rendered.stderr
        assert "server blue-1 " in rendered.stdout and "server green-1 " in rendered.stdout
        environ.pop("CONSUL_HTTP_TOKEN")
        refused = await render(argv, environ)
        assert refused.returncode != 0
        assert "Consul ACL" in refused.stderr, refused.stderr


def tls_pem(directory: Path) -> Path:
    """A certificate for 127.0.0.1 and its key in one PEM, signed by a CA of the test's own:
    no system CA verifies it."""
    files = make_tls_files(directory)
    pem = directory / "backend.pem"
    pem.write_text(files.server_cert.read_text() + files.server_key.read_text())
    return pem


async def test_fabios_strip_redirect_and_https_options_are_carried_out_through_haproxy(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[..., Backends],
    agent: ConsulAgent,
    tmp_path: Path,
) -> None:
    site, proxy = haproxy_site
    pem = tls_pem(tmp_path / "tls")
    secure = ["secure-1", "secure-2", "strict-1"]
    ports = backends(["api-1", *secure], tls=dict.fromkeys(secure, pem)).ports
    await agent.register("api", "api-1", ports["api-1"], "urlprefix-/api strip=/api")
    await agent.register(
        "moved",
        "moved-1",
        ports["api-1"],
        "urlprefix-old.example.com/ redirect=301,https://new.example.com$path",
    )
    skip_verify = "urlprefix-/secure proto=https tlsskipverify=true"
    await agent.register("secure", "secure-1", ports["secure-1"], skip_verify)
    await agent.register("strict", "strict-1", ports["strict-1"], "urlprefix-/strict proto=https")
    site.write_config(source=consul_toml(agent))
    result = site.lbsync("once")
    assert "pending" in result.stderr, result.stderr
    text = site.dest.read_text()
    assert "ssl verify none" in text and "ssl verify required ca-file @system-ca" in text
    proxy.start()

    status, headers, body = await fetch(site.port, "any.example.org", "/api/v1/items?page=2")
    assert (status, body) == (200, "api-1"), (status, body)
    assert headers["x-request-target"] == "/v1/items?page=2"
    assert headers["x-got-prefix"] == "/api"
    status, headers, _ = await fetch(site.port, "any.example.org", "/api")
    assert (status, headers["x-request-target"]) == (200, "/")

    status, headers, _ = await fetch(site.port, "old.example.com", "/a/b?c=1")
    assert (status, headers["location"]) == (301, "https://new.example.com/a/b?c=1")

    status, _, body = await fetch(site.port, "any.example.org", "/secure/x")
    assert (status, body) == (200, "secure-1")
    status, _, body = await fetch(site.port, "any.example.org", "/strict/x")
    assert status == 503, body  # the certificate is not signed by any system CA

    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 15)
        workers = proxy.worker_pids()
        # a redirect needs no instance: it answers while its only one is critical
        await agent.set_check("moved-1", "critical")
        await agent.register("secure", "secure-2", ports["secure-2"], skip_verify)
        await until_live(daemon, site.dest, lambda text: weight(text, "secure-2") is not None)
        answers = [(await fetch(site.port, "any.example.org", "/secure/x"))[2] for _ in range(20)]
        assert proxy.worker_pids() == workers  # joined at runtime: `add server ... ssl`
        status, headers, _ = await fetch(site.port, "old.example.com", "/")
        assert (status, headers["location"]) == (301, "https://new.example.com/")
    assert sorted(set(answers)) == ["secure-1", "secure-2"], answers
