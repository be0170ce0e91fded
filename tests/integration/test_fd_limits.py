"""File-descriptor limits, as in a container whose hard `nofile` limit is 4096: HAProxy runs
under `prlimit`, which sets the limit of the one process it starts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from support.ports import free_port
from support.processes import HAProxy, master_cli
from support.servicesfile import instance
from support.site import Site

NOFILE_4096 = ("prlimit", "--nofile=4096:4096")


def shop() -> dict[str, dict[str, object]]:
    """One checked service of three instances, as in the demo (nothing need answer)."""
    return {
        "shop": {
            "route": {"hosts": ["shop.localhost"], "check": {"path": "/health"}},
            "instances": {name: instance(free_port()) for name in ("a", "b", "c")},
        }
    }


def show_info(site: Site) -> dict[str, str]:
    """The current worker's `show info` fields."""
    text = master_cli(site.master_socket, "@1 show info")
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_haproxy_starts_on_the_default_render_under_a_hard_limit_of_4096(
    haproxy_site: tuple[Site, HAProxy],
) -> None:
    site, proxy = haproxy_site
    site.write_services(shop())
    rendered = site.lbsync("render")
    assert rendered.returncode == 0, rendered.stderr
    assert "maxconn" not in rendered.stdout
    site.dest.write_text(rendered.stdout)
    proxy.prefix = NOFILE_4096
    proxy.start()  # waits for the first worker and the listener
    info = show_info(site)
    # derived from the limit it found: two descriptors a connection, all within 4096
    assert int(info["Maxsock"]) <= 4096
    assert 1900 < int(info["Maxconn"]) < 2048


def haproxys_own_count(site: Site) -> int:
    """The file descriptors HAProxy itself asks for under the limit (it then refuses to start),
    started as the site's master-CLI reload expects."""
    argv = ["haproxy", "-W", "-S", str(site.master_socket), "-f", str(site.dest)]
    started = subprocess.run([*NOFILE_4096, *argv], capture_output=True, text=True, timeout=30)
    assert started.returncode != 0, "HAProxy started"
    found = re.search(r"Cannot raise FD limit to (\d+), limit is 4096", started.stderr)
    assert found is not None, started.stderr
    return int(found.group(1))


def test_check_says_that_maxconn_4096_cannot_fit_in_4096_and_counts_as_haproxy_does(
    tmp_path: Path,
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    site.write_services(shop())
    site.config_path.write_text(site.config_path.read_text() + "maxconn = 4096\n")
    checked = site.lbsync("check", under=NOFILE_4096)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    found = re.search(
        r"^haproxy: maxconn 4096 \(vars\.maxconn\) needs (\d+) file descriptors, "
        r"but the hard nofile limit here is 4096: HAProxy would refuse to start$",
        checked.stdout,
        re.MULTILINE,
    )
    assert found is not None, checked.stdout
    assert "lower vars.maxconn to " in checked.stdout
    assert "--ulimit nofile=" in checked.stdout and "leave vars.maxconn unset" in checked.stdout
    site.dest.write_text(site.lbsync("render").stdout)
    assert int(found.group(1)) == haproxys_own_count(site)


@pytest.mark.parametrize("maxconn", [None, 1000])
def test_check_says_nothing_of_file_descriptors_when_maxconn_is_unset_or_fits(
    tmp_path: Path, maxconn: int | None
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    site.write_services(shop())
    if maxconn is not None:
        site.config_path.write_text(site.config_path.read_text() + f"maxconn = {maxconn}\n")
    checked = site.lbsync("check", under=NOFILE_4096)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "haproxy: valid" in checked.stdout
    assert "file descriptors" not in checked.stdout
