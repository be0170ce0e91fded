"""File-descriptor limits, as in a container whose hard `nofile` limit is 4096: HAProxy runs
under `prlimit`, which sets the limit of the one process it starts."""

from __future__ import annotations

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
