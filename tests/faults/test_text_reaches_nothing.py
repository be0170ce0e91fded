"""Text from a store can neither add a directive to a rendered file, nor a command to HAProxy's
runtime API, nor a line or an escape sequence to a terminal; names that nginx cannot tell apart
are refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.ports import free_port
from support.servicesfile import instance
from support.site import Site

from lbsync.cli.status import format_status
from lbsync.core.state import build
from lbsync.haproxy.operations import AddServer
from lbsync.haproxy.runtime import UnsafeCommand, command, commands
from lbsync.model.catalog import merge
from lbsync.model.contract import parse_values
from lbsync.model.values import Rejection, Snapshot
from lbsync.pipeline.render import KvView, RenderError, load_template, render


def test_a_refusal_escapes_what_could_start_a_line_or_drive_a_terminal() -> None:
    rejection = Rejection(where="etcd key lbsync/a\nbind :1", message="x\x1b[2J\r\u2028y")
    assert "\n" not in str(rejection) and "\x1b" not in str(rejection)
    assert rejection.where == "etcd key lbsync/a\\nbind :1"
    assert rejection.message == "x\\x1b[2J\\r\\u2028y"
    assert len(Rejection(where="w", message="m" * 10_000).message) <= 500


def test_a_refusal_printed_into_a_comment_stays_in_the_comment(tmp_path: Path) -> None:
    values: dict[str, Any] = {"services/shop/split": {"groups": {"x\nserver evil 1.2.3.4:80": 1}}}
    entries, rejected = parse_values(values, describe=lambda key: f"key {key}")
    assert rejected and not entries
    template = tmp_path / "t.j2"
    template.write_text("{% for r in rejected %}# refused: {{ r }}\n{% endfor %}")
    state = build(merge([Snapshot(source="t", rejected=rejected)]))
    text = render(state, load_template(template), {})
    assert text.count("\n") == 1 and text.startswith("# refused: ")
    assert "server evil" in text  # named, escaped, on the comment's one line


def test_a_raw_value_with_a_line_break_is_a_render_error_unless_asked_for_as_multiline() -> None:
    kv = KvView({"app/one": "plain", "app/pem": "-----BEGIN-----\nabc\n-----END-----\n"})
    assert kv.get("app/one") == "plain"
    with pytest.raises(RenderError, match="app/pem"):
        kv.get("app/pem")
    assert kv.multiline("app/pem") == "-----BEGIN-----\nabc\n-----END-----\n"


@pytest.mark.parametrize("word", ["a;b", "a\nb", "a\rb", "a\x00b", "", " "])
def test_the_runtime_api_never_gets_a_command_that_could_carry_another(word: str) -> None:
    with pytest.raises(UnsafeCommand):
        command("set server", word, "weight", "1")
    with pytest.raises(UnsafeCommand):
        commands(AddServer("shop", "s1", ("10.0.0.1:80", word), weight=1, checked=False))


def test_the_status_in_a_terminal_escapes_what_the_daemon_was_sent() -> None:
    document: dict[str, Any] = {
        "now": 10.0,
        "ready": True,
        "not_ready": None,
        "cycles": 1,
        "sources": [
            {
                "name": "etcd",
                "synced": True,
                "usable": False,
                "changed_at": 9.0,
                "error": "\x1b]0;x\x07",
            }
        ],
        "services": [],
        "targets": [],
        "rejected": [{"where": "etcd key a\nFAKE LINE", "message": "\x1b[31mred"}],
    }
    text = format_status(document, "http://127.0.0.1:9180")
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("FAKE LINE") for line in text.splitlines())
    assert "a\\nFAKE LINE" in text


def test_services_whose_names_differ_only_in_case_are_refused_and_nginx_accepts_the_rest(
    tmp_path: Path,
) -> None:
    site = Site(root=tmp_path, kind="nginx", port=free_port())
    site.write_config()
    services = {
        name: {"route": {"path": path}, "instances": {"i1": instance(9000 + n, "blue")}}
        for n, (name, path) in enumerate([("Web", "/a"), ("web", "/b"), ("api", "/c")])
    }
    site.write_services(services)
    result = site.lbsync("render")
    assert result.returncode == 0, result.stderr
    assert "services/web: differs from service Web only in case" in result.stderr
    assert "upstream lbsync_Web" in result.stdout and "lbsync_web " not in result.stdout
    assert "upstream lbsync_api" in result.stdout
    rendered = tmp_path / "run" / "rendered.conf"
    rendered.write_text(result.stdout)
    check = subprocess.run(["nginx", "-t", "-c", str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
