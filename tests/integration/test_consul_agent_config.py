"""The test agent's extra configuration: a bench raises Consul's per-client connection limit in
its own agent, while every other agent keeps Consul's defaults."""

from __future__ import annotations

from pathlib import Path

from support.consul import ConsulAgent


async def test_extra_hcl_reaches_the_agent_and_the_default_stays_consuls(tmp_path: Path) -> None:
    raised = ConsulAgent(
        root=tmp_path / "raised", hcl=("limits { http_max_conns_per_client = 321 }",)
    )
    plain = ConsulAgent(root=tmp_path / "plain")
    try:
        await raised.start_async()
        await plain.start_async()
        raised_self = await raised.call("GET", "/v1/agent/self")
        plain_self = await plain.call("GET", "/v1/agent/self")
    finally:
        raised.stop()
        plain.stop()
    assert raised_self["DebugConfig"]["HTTPMaxConnsPerClient"] == 321
    assert plain_self["DebugConfig"]["HTTPMaxConnsPerClient"] == 200
