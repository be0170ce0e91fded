"""The real `lbsync run` with an etcd password, a Consul ACL token and an API token: none of
them appears in its logs (at debug), its API's answers, its error texts, `lbsync status` and
`lbsync once`, or the rendered file, also once the Consul token is deleted and when the etcd
password is wrong."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from support.api import bearer
from support.consul import ConsulAgent, consul_binary, running_agent
from support.etcd import EtcdServer
from support.ports import free_port
from support.servicesfile import instance
from support.site import Site
from support.waiting import async_wait_until

from lbsync.kv.etcd import EtcdClient

USER = "lbsync"
ETCD_PASSWORD = "4815162342108015"  # digits only: TOML would read it as a number
WRONG_PASSWORD = "2718281828459045"
API_TOKEN = "api-9f8e7d6c5b4a-token"


@pytest.fixture
def acl_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A Consul dev agent with default-deny ACLs."""
    if consul_binary() is None:
        pytest.fail("consul is not installed: run scripts/install-system.sh --with-test-servers")
    with running_agent(tmp_path / "consul", acl=True) as agent:
        yield agent


@pytest.fixture
def etcd_with_auth(tmp_path: Path) -> Iterator[EtcdServer]:
    """etcd with auth on: user `lbsync`, read-write on `lbsync/` only, by ETCD_PASSWORD."""
    server = EtcdServer(root=tmp_path / "etcd")
    server.start()
    server.enable_auth(USER, ETCD_PASSWORD, "lbsync/")
    yield server
    server.stop()


@dataclass
class Seen:
    """Every text lbsync showed, by where it was shown."""

    texts: dict[str, str]

    def add(self, where: str, text: str) -> None:
        self.texts[where] = text

    def holding(self, secret: str) -> list[str]:
        return [where for where, text in self.texts.items() if secret in text]


async def lbsync(site: Site, *args: str, environ: dict[str, str]) -> tuple[int, str]:
    """One lbsync command: exit status and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "lbsync", "-c", str(site.config_path), *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=environ,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def fetch(url: str, token: str | None = API_TOKEN) -> tuple[int, str]:
    headers = bearer(token) if token else None
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status, await reply.text()


async def test_no_secret_appears_in_logs_answers_errors_or_the_rendered_file(
    tmp_path: Path, etcd_with_auth: EtcdServer, acl_agent: ConsulAgent
) -> None:
    async with EtcdClient([etcd_with_auth.url], username=USER, password=ETCD_PASSWORD) as etcd:
        await etcd.put("lbsync/services/shop/route", json.dumps({"hosts": ["shop.example"]}))
        await etcd.put("lbsync/services/shop/instances/a", json.dumps(instance(9001)))
    await acl_agent.kv_put("lbsync/services/api/route", {"hosts": ["api.example"]})
    await acl_agent.register("api", "api-1", 9002)
    consul_token = await acl_agent.create_token(
        'key_prefix "lbsync/" { policy = "read" }\n'
        'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
    )
    secrets = [ETCD_PASSWORD, WRONG_PASSWORD, consul_token, API_TOKEN]
    (tmp_path / "consul-token").write_text(consul_token + "\n")
    (tmp_path / "api-token").write_text(API_TOKEN + "\n")
    site = Site(root=tmp_path / "site", kind="haproxy", port=free_port())
    url = f"http://127.0.0.1:{free_port()}"
    site.write_config(
        source=(
            f'[source.etcd]\nendpoints = ["{etcd_with_auth.url}"]\nusername = "{USER}"\n\n'
            f'[source.consul]\naddresses = ["{acl_agent.address}"]\nwait = "2s"\n'
            f'token_file = "{tmp_path / "consul-token"}"\n'
        ),
        reload='{ method = "none" }',
        api=f'listen = "{url.removeprefix("http://")}"\ntoken_file = "{tmp_path / "api-token"}"',
    )
    environ = {**os.environ, "LBSYNC_SOURCE_ETCD_PASSWORD": ETCD_PASSWORD}
    seen = Seen({})
    log = tmp_path / "daemon.log"
    with log.open("wb") as output:
        daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "lbsync", "-c", str(site.config_path)),
            *("--log-level", "debug", "run"),
            stderr=output,
            env=environ,
        )
    try:

        async def ready() -> bool:
            try:
                return (await fetch(f"{url}/readyz", None))[0] == 200
            except aiohttp.ClientError:
                return False

        await async_wait_until(ready, 30, "the daemon ready")
        for path in ("/v1/status", "/v1/services/shop", "/v1/services/api", "/v1/events"):
            status, text = await fetch(f"{url}{path}")
            assert status == 200, (path, text)
            seen.add(path, text)
        assert {s["name"] for s in json.loads(seen.texts["/v1/status"])["services"]} == {
            "shop",
            "api",
        }  # both stores were read with their credentials
        for path in ("/metrics", "/", "/healthz", "/readyz"):
            seen.add(path, (await fetch(f"{url}{path}"))[1])
        seen.add("401 answer", (await fetch(f"{url}/v1/status", None))[1])
        code, output_text = await lbsync(site, "status", environ=environ)
        assert code == 0 and "SERVICE api" in output_text, output_text
        seen.add("lbsync status", output_text)

        await acl_agent.delete_token(consul_token)

        async def consul_refused() -> bool:
            document = json.loads((await fetch(f"{url}/v1/status"))[1])
            return any("token not found" in (s["error"] or "") for s in document["sources"])

        await async_wait_until(consul_refused, 15, "the deleted Consul token reported")
        seen.add("/v1/status, Consul refused", (await fetch(f"{url}/v1/status"))[1])
        wrong = {**environ, "LBSYNC_SOURCE_ETCD_PASSWORD": WRONG_PASSWORD}
        code, output_text = await lbsync(site, "once", environ=wrong)
        assert code == 1 and "authentication failed" in output_text, output_text
        seen.add("lbsync once, wrong password", output_text)
        code, output_text = await lbsync(site, "check", environ=wrong)
        assert code == 1 and "authentication failed" in output_text, output_text
        seen.add("lbsync check, wrong password", output_text)
        daemon.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await daemon.wait() == 0
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    seen.add("daemon log", log.read_text())
    seen.add("rendered file", site.dest.read_text())
    assert f"logged in to etcd as {USER}" in seen.texts["daemon log"]  # debug lines are there
    assert "Consul ACL: token not found" in seen.texts["daemon log"]
    assert "backend shop" in seen.texts["rendered file"]
    assert "backend api" in seen.texts["rendered file"]
    for secret in secrets:
        assert seen.holding(secret) == [], secret
