"""What reaches a route's instances through a real nginx: a stripped prefix, an https upstream
verified or not, and a redirect that answers instead of any instance."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.etcd import make_tls_files
from support.processes import Backends, Nginx
from support.servicesfile import instance
from support.site import Site
from support.traffic import fetch


def certificate(directory: Path, name: str) -> Path:
    """A PEM (certificate for the DNS name `name`, and its key) signed by the test CA that
    `make_tls_files` made in `directory`."""
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    (directory / f"{name}.ext").write_text(
        f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n"
    )
    for argv in (
        (
            "req",
            "-new",
            *key,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        ),
        (
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
            *("-days", "2", "-CAcreateserial", "-out", f"{name}.crt", "-extfile", f"{name}.ext"),
        ),
    ):
        subprocess.run(
            ["openssl", *argv], cwd=directory, check=True, capture_output=True, timeout=30
        )
    pem = directory / f"{name}.pem"
    pem.write_text(
        (directory / f"{name}.crt").read_text() + (directory / f"{name}.key").read_text()
    )
    return pem


async def test_strip_https_and_redirect_routes_are_served_by_a_real_nginx(
    nginx_site: tuple[Site, Nginx], backends: Callable[..., Backends], tmp_path: Path
) -> None:
    site, proxy = nginx_site
    tls = make_tls_files(tmp_path / "tls")
    pem = certificate(tmp_path / "tls", "trusted.example.com")
    secure = ["trusted-1", "named-1", "unverified-1"]
    ports = backends(["api-1", *secure], tls=dict.fromkeys(secure, pem)).ports
    https = {"upstream": "https"}
    site.write_services(
        {
            "api": {
                "route": {"path": "/api/v1", "strip": "/api"},
                "instances": {"api-1": instance(ports["api-1"])},
            },
            "web": {
                "route": {"path": "/web", "strip": "/web"},
                "instances": {"web-1": instance(ports["api-1"])},
            },
            "trusted": {
                "route": {"hosts": ["trusted.example.com"], **https},
                "instances": {"trusted-1": instance(ports["trusted-1"])},
            },
            # the same certificate, for a name it does not hold
            "named": {
                "route": {"hosts": ["wrong.example.com"], **https},
                "instances": {"named-1": instance(ports["named-1"])},
            },
            "unverified": {
                "route": {"hosts": ["wrong.example.org"], **https, "tls_verify": False},
                "instances": {"unverified-1": instance(ports["unverified-1"])},
            },
            "moved": {  # no instance at all: the redirect needs none
                "route": {
                    "hosts": ["old.example.com"],
                    "redirect": {"code": 307, "to": "https://new.example.com/$path"},
                }
            },
        }
    )
    with site.config_path.open("a") as config:  # the test CA, as the target's trust store
        config.write(f'upstream_ca_file = "{tls.ca}"\n')
    result = site.lbsync("once")
    assert result.returncode == 1 and "pending" in result.stderr, result.stderr  # no nginx yet
    check = await asyncio.create_subprocess_exec(
        "nginx", "-t", "-q", "-c", str(site.dest), stderr=asyncio.subprocess.PIPE
    )
    _, errors = await asyncio.wait_for(check.communicate(), 30)
    assert check.returncode == 0, errors
    proxy.start()

    status, headers, body = await fetch(site.port, "any.example.org", "/api/v1/items?page=2")
    assert (status, body) == (200, "api-1")
    assert (headers["x-request-target"], headers["x-got-prefix"]) == ("/v1/items?page=2", "/api")
    for target, forwarded in [("/web", "/"), ("/web/", "/"), ("/web/a.b", "/a.b")]:
        status, headers, _ = await fetch(site.port, "any.example.org", target)
        assert (status, headers["x-request-target"]) == (200, forwarded), target

    assert (await fetch(site.port, "trusted.example.com", "/x"))[::2] == (200, "trusted-1")
    assert (await fetch(site.port, "wrong.example.org", "/x"))[::2] == (200, "unverified-1")
    status, _, _ = await fetch(site.port, "wrong.example.com", "/x")
    assert status == 502  # the certificate does not name wrong.example.com

    status, headers, _ = await fetch(site.port, "old.example.com", "/a/b?c=1")
    assert (status, headers["location"]) == (307, "https://new.example.com/a/b?c=1")
