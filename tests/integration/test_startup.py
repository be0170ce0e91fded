"""Start-up: nothing is applied until every source has given a usable snapshot."""

from __future__ import annotations

from pathlib import Path

from support.ports import free_port
from support.servicesfile import instance
from support.site import Site, running_daemon

from lbsync.pipeline.report import Outcome


async def test_a_services_file_missing_at_start_holds_the_first_apply_until_it_exists(
    tmp_path: Path,
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config(reload='{ method = "none" }')
    async with running_daemon(site.config()) as daemon:
        status = await daemon.wait_for(lambda s: s.sources[0].error is not None, 10)
        assert not status.sources[0].synced and not status.ready
        assert status.cycles == 0 and not site.dest.exists()
        site.write_services({"shop": {"route": {}, "instances": {"a": instance(9000)}}})
        status = await daemon.wait_for(lambda s: s.ready, 10)
    # The first cycle already had the service: no cycle ever ran on an empty catalog.
    assert status.cycles == 1
    assert status.state is not None and status.state.service("shop") is not None
    assert status.targets[0].outcome is Outcome.WRITTEN
    assert "server a 127.0.0.1:9000" in site.dest.read_text()
