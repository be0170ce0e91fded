"""The command line against real validators: render, check, once, and configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.ports import free_port
from support.servicesfile import instance
from support.site import Site


def many_services(count: int) -> dict[str, dict[str, Any]]:
    """`count` services with varied routes, splits, health checks and balance algorithms."""
    services: dict[str, dict[str, Any]] = {}
    for n in range(count):
        route: dict[str, Any] = {
            "path": f"/s{n}/" if n % 3 else "/",
            "hosts": [f"s{n}.example.com"],
        }
        if n % 4 == 1:
            route["check"] = {"path": "/health", "interval_ms": 500}
        if n % 5 == 2:
            route["balance"] = "leastconn"
        if n % 7 == 3:
            route["hosts"] = []
            route["path"] = f"/any{n}"
        services[f"svc-{n}"] = {
            "route": route,
            "split": {
                "groups": {"canary": 5},
                "on_empty": "fail" if n % 6 == 0 else "redistribute",
            },
            "instances": {
                f"i-{n}-{m}": instance(20000 + m, "canary" if m == 0 else "stable")
                for m in range((n + 1) % 4)
            },
        }
    return services


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
@pytest.mark.parametrize("count", [0, 1, 200])
def test_rendered_output_passes_the_real_validator(tmp_path: Path, kind: str, count: int) -> None:
    site = Site(root=tmp_path, kind=kind, port=free_port())
    site.write_config()
    site.write_services(many_services(count))
    result = site.lbsync("render")
    assert result.returncode == 0, result.stderr
    for n in range(count):  # every service is routed (those without instances answer 503)
        assert f"svc-{n}" in result.stdout
    rendered = tmp_path / "run" / "rendered.conf"
    rendered.write_text(result.stdout)
    argv = ["haproxy", "-c", "-f"] if kind == "haproxy" else ["nginx", "-t", "-c"]
    check = subprocess.run([*argv, str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not site.dest.exists()  # render has no side effects


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_check_validates_config_templates_and_output(tmp_path: Path, kind: str) -> None:
    site = Site(root=tmp_path, kind=kind, port=free_port())
    site.write_config()
    site.write_services(many_services(3))
    result = site.lbsync("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{kind}: valid" in result.stdout
    assert not site.dest.exists()


def test_check_fails_on_a_refused_entry_and_names_it(tmp_path: Path) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    services = many_services(1)
    services["svc-0"]["instances"]["i-0-0"] = {"address": "10.0.0.1\nbind :1", "port": 80}
    site.write_services(services)
    result = site.lbsync("check")
    assert result.returncode == 1
    assert "services.svc-0.instances.i-0-0" in result.stdout
    assert "address" in result.stdout


def test_a_configuration_error_exits_2_naming_the_setting(tmp_path: Path) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config(extra='reload_typo = "x"')
    result = site.lbsync("once")
    assert result.returncode == 2
    assert "target[0].reload_typo: unknown setting" in result.stderr
    assert str(site.config_path) in result.stderr


def test_once_exits_0_when_written_and_1_when_the_services_file_is_broken(
    tmp_path: Path,
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config(reload='{ method = "none" }')
    site.write_services(many_services(2))
    first = site.lbsync("once")
    assert first.returncode == 0, first.stderr
    assert site.dest.exists()
    site.services.write_text("[services.shop\n")
    broken = site.lbsync("once")
    assert broken.returncode == 1
    assert "not valid TOML" in broken.stderr and str(site.services) in broken.stderr


def test_a_generic_target_renders_raw_keys_and_runs_its_reload_command(tmp_path: Path) -> None:
    template = tmp_path / "flags.j2"
    template.write_text(
        "{% for name in kv.ls('flags') %}{{ name }}={{ kv.get('flags/' ~ name) }}\n{% endfor %}"
        "owner={{ settings.owner }}\n"
    )
    marker = tmp_path / "reloaded"
    dest = tmp_path / "flags.env"
    (tmp_path / "lbsync.toml").write_text(
        '[source.file]\npath = "services.toml"\n\n'
        f'[[target]]\nkind = "generic"\ntemplate = "{template}"\ndest = "{dest}"\n'
        f'reload = {{ method = "command", argv = ["touch", "{marker}"] }}\n'
    )
    (tmp_path / "services.toml").write_text(
        '[settings]\nowner = "platform"\n\n[kv.flags]\ncheckout = "on"\nsearch = "off"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "lbsync", "-c", str(tmp_path / "lbsync.toml"), "once"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == "checkout=on\nsearch=off\nowner=platform\n"
    assert marker.exists()


@pytest.mark.parametrize(
    "where",
    [
        ["-c", "{config}", "render"],
        ["render", "-c", "{config}"],
        ["--log-level", "error", "render", "--config", "{config}", "--log-format", "json"],
    ],
    ids=["before the command", "after the command", "long forms around the command"],
)
def test_the_configuration_option_means_the_same_before_or_after_the_command(
    tmp_path: Path, where: list[str]
) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    site.write_services(many_services(1))
    argv = [part.replace("{config}", str(site.config_path)) for part in where]
    elsewhere = tmp_path / "elsewhere"  # no lbsync.toml here: only the option can name it
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "lbsync", *argv],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "backend svc-0" in result.stdout


def test_the_option_after_the_command_wins_over_the_one_before(tmp_path: Path) -> None:
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    site.write_services(many_services(1))
    missing = tmp_path / "missing.toml"
    after = subprocess.run(
        [sys.executable, "-m", "lbsync", "-c", str(missing), "render", "-c", str(site.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert after.returncode == 0, after.stderr
    before = subprocess.run(
        [sys.executable, "-m", "lbsync", "-c", str(site.config_path), "render", "-c", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert before.returncode == 2 and "missing.toml: cannot read" in before.stderr
