"""The container's entrypoint, run outside a container (no container engine runs here), with
the environment the Dockerfile gives the image."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from support.ports import free_port
from support.servicesfile import instance
from support.site import Site
from support.waiting import wait_until

from lbsync.config import is_loopback, load, parse_listen

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "5ca1ab1e-container-api-token"


def image_environment() -> dict[str, str]:
    """The variables the Dockerfile's ENV lines set."""
    found: dict[str, str] = {}
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")  # continued lines joined
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                name, _, value = word.partition("=")
                found[name] = value
    return found


def environment_for(site: Site, **extra: str) -> dict[str, str]:
    """This machine's environment with the image's laid over it, the site's configuration and
    `extra`; lbsync on PATH."""
    environment = {**os.environ, **image_environment(), "LBSYNC_CONFIG": str(site.config_path)}
    environment["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**environment, **extra}


def entrypoint(site: Site, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    environment = environment_for(site, **extra)
    return subprocess.run(
        ["sh", str(ROOT / "image" / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_the_entrypoint_passes_commands_through_with_the_configured_file(tmp_path: Path) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    site.write_services({"shop": {"route": {}, "instances": {"a": instance(9000)}}})
    result = entrypoint(site, "check")
    assert result.returncode == 0, result.stderr
    assert "haproxy: valid" in result.stdout


def test_run_writes_a_first_configuration_then_runs_the_daemon_until_sigterm(
    tmp_path: Path,
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config(extra='reload = { method = "none" }')
    text = site.config_path.read_text()
    site.config_path.write_text(
        text.replace(text[text.index("reload = {") :].split("\n")[0] + "\n", "", 1)
    )
    site.write_services({"shop": {"route": {}, "instances": {"a": instance(9000)}}})
    environment = environment_for(site)
    log = tmp_path / "entrypoint.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["sh", str(ROOT / "image" / "entrypoint.sh")], env=environment, stderr=output
        )
    try:
        wait_until(lambda: "lbsync started" in log.read_text(), 30, "the daemon running")
        assert site.dest.exists()  # written by the first cycle, before the daemon started
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "server a 127.0.0.1:9000" in site.dest.read_text()


def unreloaded_site(tmp_path: Path) -> Site:
    """A site whose target is written and never reloaded (no HAProxy runs beside it)."""
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config(reload='{ method = "none" }')
    site.write_services({"shop": {"route": {}, "instances": {"a": instance(9000)}}})
    return site


def test_the_images_environment_keeps_the_api_on_loopback(tmp_path: Path) -> None:
    site = unreloaded_site(tmp_path)
    site.config_path.write_text(site.config_path.read_text().replace('listen = "127.0.0.1:0"', ""))
    config = load(site.config_path, environ=image_environment())
    where = parse_listen(config.api.listen)
    assert where is not None and is_loopback(where[0]) and config.api.token is None


def test_run_stops_at_once_on_an_api_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    site = unreloaded_site(tmp_path)
    result = entrypoint(site, LBSYNC_API_LISTEN=f"0.0.0.0:{free_port()}")
    assert result.returncode == 2, result.stderr
    assert "api.token_file: required when api.listen (0.0.0.0:" in result.stderr
    assert "retries" not in result.stderr and "lbsync started" not in result.stderr
    assert not site.dest.exists()


def answer(url: str, token: str | None = None) -> int:
    """The status of one GET (with the bearer token when given)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # not listening yet


def test_run_serves_the_api_to_the_holder_of_the_token_file_in_the_environment(
    tmp_path: Path,
) -> None:
    site = unreloaded_site(tmp_path)
    token_file = tmp_path / "api-token"
    token_file.write_text(API_TOKEN + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    environment = environment_for(
        site, LBSYNC_API_LISTEN=url.removeprefix("http://"), LBSYNC_API_TOKEN_FILE=str(token_file)
    )
    log = tmp_path / "entrypoint.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["sh", str(ROOT / "image" / "entrypoint.sh")], env=environment, stderr=output
        )
    try:
        wait_until(lambda: answer(f"{url}/healthz") == 200, 30, "the API answering")
        assert answer(f"{url}/v1/status") == 401
        assert answer(f"{url}/v1/status", "not-" + API_TOKEN) == 401
        wait_until(lambda: answer(f"{url}/readyz") == 200, 30, "the daemon ready")
        assert answer(f"{url}/v1/status", API_TOKEN) == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert API_TOKEN not in log.read_text()
