"""Who the status API answers: `[api]` token and open rules, loopback names, Host headers,
bearer tokens and the events limit, as pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from lbsync.config import Config, ConfigError, is_loopback, load
from lbsync.daemon.api.guard import bearer_matches, digest, host_name, names_loopback
from lbsync.daemon.api.server import event_limit
from lbsync.daemon.status import MAX_EVENTS

BASE = '[source.file]\npath = "services.toml"\n\n[[target]]\ndest = "run/haproxy.cfg"\n\n'
TOKEN = "4f1c2a-api-token-9b7e"


def load_api(tmp_path: Path, api: str, environ: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "lbsync.toml"
    path.write_text(BASE + "[api]\n" + api)
    return load(path, environ={} if environ is None else environ)


def refusal(tmp_path: Path, api: str, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_api(tmp_path, api, environ)
    return str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("localhost.example.com", False),
        ("lbsync.internal", False),
    ],
)
def test_loopback_is_localhost_or_a_loopback_address_and_no_other_name(
    host: str, loopback: bool
) -> None:
    assert is_loopback(host) is loopback


def test_a_token_file_is_read_stripped_and_kept_out_of_the_repr(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text(f"  {TOKEN}\n")
    config = load_api(tmp_path, 'token_file = "api-token"\n')
    assert config.api.token == TOKEN and config.api.listen == "127.0.0.1:9180"
    assert TOKEN not in repr(config)


def test_the_token_file_and_open_can_come_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text(TOKEN)
    environ = {
        "LBSYNC_API_LISTEN": "0.0.0.0:9180",
        "LBSYNC_API_TOKEN_FILE": str(tmp_path / "api-token"),
    }
    assert load_api(tmp_path, "", environ).api.token == TOKEN
    opened = load_api(tmp_path, "", {"LBSYNC_API_LISTEN": "[::]:9180", "LBSYNC_API_OPEN": "true"})
    assert (opened.api.open, opened.api.token) == (True, None)


@pytest.mark.parametrize("listen", ["0.0.0.0:9180", "[::]:9180", "10.0.0.5:9180", "lbsync:9180"])
def test_an_api_beyond_loopback_without_a_token_is_refused_naming_the_token_file(
    tmp_path: Path, listen: str
) -> None:
    message = refusal(tmp_path, f'listen = "{listen}"\n')
    assert f"api.token_file: required when api.listen ({listen}) is not a loopback address" in (
        message
    )
    assert "or set api.open = true" in message


@pytest.mark.parametrize(
    "api",
    [
        'listen = "0.0.0.0:9180"\nopen = true\n',
        'listen = "127.0.0.1:9180"\n',
        'listen = "[::1]:0"\n',
        'listen = "localhost:9180"\n',
        'listen = ""\n',
    ],
    ids=["open on purpose", "loopback", "IPv6 loopback", "localhost", "no API"],
)
def test_an_api_without_a_token_is_accepted_on_loopback_or_when_open(
    tmp_path: Path, api: str
) -> None:
    assert load_api(tmp_path, api).api.token is None


@pytest.mark.parametrize(
    ("api", "content", "message"),
    [
        (
            f'token = "{TOKEN}"\n',
            None,
            "api.token: put the token in a file named by api.token_file",
        ),
        ('token_file = "t"\n', "", "api.token_file: {t} is empty"),
        (
            'token_file = "t"\n',
            f"{TOKEN} second-word",
            "api.token_file: the token must be one word",
        ),
        ('token_file = "t"\n', f"{TOKEN}\u00e9", "api.token_file: the token must be one word"),
        ('token_file = "missing"\n', None, "api.token_file: cannot read"),
        ('open = "yes"\n', None, "api.open: must be true or false"),
        ('listne = "x"\n', None, "api.listne: unknown setting"),
    ],
    ids=["inline", "empty file", "two words", "not ASCII", "missing file", "open", "misspelt"],
)
def test_a_bad_api_setting_is_named_and_never_shows_the_token(
    tmp_path: Path, api: str, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "t").write_text(content)
    refused = refusal(tmp_path, api)
    assert message.format(t=tmp_path / "t") in refused
    assert TOKEN not in refused


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("localhost:9180", "localhost"),
        ("127.0.0.1:41231", "127.0.0.1"),
        ("[::1]:9180", "::1"),
        ("[::1]", "::1"),
        ("evil.example:9180", "evil.example"),
        ("evil.example", "evil.example"),
    ],
)
def test_the_host_of_a_host_header_is_read_without_its_port(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("header", "answered"),
    [
        ("localhost:9180", True),
        ("127.0.0.1", True),
        ("[::1]:9180", True),
        (None, True),
        ("rebound.example:9180", False),
        ("localhost.rebound.example", False),
        ("127.0.0.1.nip.example", False),
        ("10.0.0.5:9180", False),
        ("", False),
    ],
)
def test_only_a_loopback_host_is_answered_without_a_token(
    header: str | None, answered: bool
) -> None:
    assert names_loopback(header) is answered


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer   {TOKEN} ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer", False),
        ("Bearer ", False),
        ("", False),
        (None, False),
        ("Bearer \u00e9t\u00e9", False),
    ],
)
def test_a_bearer_token_matches_only_exactly(header: str | None, matches: bool) -> None:
    assert bearer_matches(header, digest(TOKEN)) is matches


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("0", 0),
        ("7", 7),
        ("007", 7),
        (str(MAX_EVENTS * 10), MAX_EVENTS),
        ("99999999999999999999999", MAX_EVENTS),
        ("\u00b2", None),
        ("\u0663", None),
        ("-1", None),
        ("+1", None),
        ("1.5", None),
        (" 1", None),
        ("", None),
    ],
    ids=lambda value: repr(value) if isinstance(value, str) else str(value),
)
def test_the_events_limit_is_ascii_digits_only(text: str, limit: int | None) -> None:
    assert event_limit(text) == limit
