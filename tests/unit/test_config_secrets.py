"""Secret settings: taken as text from the environment, and never shown by an error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from lbsync.config import CONSUL_PORTS, Config, ConfigError, load, parse_endpoint
from lbsync.kv.consul import addresses_of
from lbsync.kv.etcd.transport import check_endpoint

TARGET = '\n[[target]]\ndest = "run/haproxy.cfg"\n'
ETCD = '[source.etcd]\nendpoints = ["http://127.0.0.1:2379"]\nusername = "lbsync"\n'
SECRET = "hunter2-s3cret"
DIGITS = "918273645546"  # a secret that TOML reads as a number


def load_text(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "lbsync.toml"
    path.write_text(text + TARGET)
    return load(path, environ={} if environ is None else environ)


def refusal(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, environ)
    return str(caught.value)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("LBSYNC_SOURCE_ETCD_PASSWORD", "123456"),
        ("LBSYNC_SOURCE_ETCD_PASSWORD", "true"),
        ("LBSYNC_SOURCE_ETCD_PASSWORD", '"quoted"'),
        ("LBSYNC_SOURCE_CONSUL_TOKEN", "0x1F"),
        ("LBSYNC_SOURCE_CONSUL_TOKEN", "[1, 2]"),
    ],
)
def test_a_secret_from_the_environment_is_its_exact_text_even_when_it_reads_as_toml(
    tmp_path: Path, variable: str, text: str
) -> None:
    config = load_text(tmp_path, ETCD + 'password = "x"\n\n[source.consul]\n', {variable: text})
    assert config.etcd_source is not None and config.consul_source is not None
    taken = config.etcd_source.password if "ETCD" in variable else config.consul_source.token
    assert taken == text


def test_other_environment_values_are_still_read_as_toml(tmp_path: Path) -> None:
    config = load_text(tmp_path, ETCD + 'password = "x"\n', {"LBSYNC_APPLY_MIN_WAIT": "0.5"})
    assert config.min_wait == 0.5


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (ETCD + f"password = {DIGITS}\n", "source.etcd.password"),
        (ETCD + f'password = ["{SECRET}"]\n', "source.etcd.password"),
        (ETCD + f'password = {{ value = "{SECRET}" }}\n', "source.etcd.password"),
        (ETCD + 'password = ""\n', "source.etcd.password"),
        (f'[source.consul]\ntoken = ["{SECRET}"]\n', "source.consul.token"),
        (f"[source.consul]\ntoken = {DIGITS}\n", "source.consul.token"),
    ],
    ids=["number", "list", "table", "empty", "consul list", "consul number"],
)
def test_an_error_about_a_secret_names_it_without_its_value(
    tmp_path: Path, text: str, named: str
) -> None:
    message = refusal(tmp_path, text)
    assert f"{named}: must be a non-empty string" in message
    assert SECRET not in message and DIGITS not in message


def test_a_secret_given_inline_and_in_a_file_is_refused_without_either(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(SECRET)
    message = refusal(tmp_path, ETCD + f'password = "{SECRET}x"\npassword_file = "password"\n')
    assert "source.etcd.password: set password or password_file, not both" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b" \n\t\n", "is empty"), (SECRET.encode() + b"\xff\xfe", "is not UTF-8 text")],
)
def test_a_secret_file_that_holds_no_usable_secret_is_named(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "token").write_bytes(content)
    message = refusal(tmp_path, '[source.consul]\ntoken_file = "token"\n')
    assert f"source.consul.token_file: {tmp_path / 'token'} {problem}" in message
    assert SECRET not in message


def test_a_repr_of_the_configuration_holds_no_secret(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET + "-consul")
    config = load_text(
        tmp_path, ETCD + f'password = "{SECRET}"\n\n[source.consul]\ntoken_file = "token"\n'
    )
    assert config.consul_source is not None and config.consul_source.token == SECRET + "-consul"
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        (f"http://lbsync:{SECRET}@10.0.0.1:2379", "http://10.0.0.1:2379"),
        (f"lbsync:{SECRET}@10.0.0.1", "10.0.0.1"),
        (f"https://lbsync:{SECRET}/x@etcd.example:2379/", "https://etcd.example:2379/"),
        (f"http://{SECRET}@[::1]:2379", "http://[::1]:2379"),
    ],
    ids=["user and password", "no scheme", "a slash in the password", "token as the user"],
)
def test_an_etcd_endpoint_with_credentials_is_refused_shown_without_them(
    tmp_path: Path, address: str, shown: str
) -> None:
    message = refusal(tmp_path, f'[source.etcd]\nendpoints = ["{address}"]\n')
    assert f"source.etcd.endpoints: {shown!r}" in message
    assert "set source.etcd.username and source.etcd.password_file" in message
    assert SECRET not in message and "lbsync:" not in message


def test_a_consul_address_with_a_token_in_it_is_refused_with_where_the_token_goes(
    tmp_path: Path,
) -> None:
    message = refusal(tmp_path, f'[source.consul]\naddresses = ["https://{SECRET}@consul:8501"]\n')
    assert "source.consul.addresses: 'https://consul:8501'" in message
    assert "put the ACL token in the file named by source.consul.token_file" in message
    assert SECRET not in message


def test_the_clients_refuse_credentials_in_an_address_without_showing_them() -> None:
    address = f"http://u:{SECRET}@127.0.0.1:8500"
    for check in (
        lambda: parse_endpoint(address, ports=CONSUL_PORTS, what="Consul address"),
        lambda: addresses_of([address]),
        lambda: check_endpoint(address),
    ):
        with pytest.raises(ValueError, match="must not carry credentials") as caught:
            check()
        assert SECRET not in str(caught.value) and "'http://127.0.0.1:8500'" in str(caught.value)
