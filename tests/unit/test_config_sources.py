"""lbsync.toml's sources: etcd settings, secrets from files, source order, errors by name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from lbsync.config import Config, ConfigError, load

TARGET = '\n[[target]]\ndest = "run/haproxy.cfg"\n'


def load_text(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "lbsync.toml"
    path.write_text(text + TARGET)
    return load(path, environ={} if environ is None else environ)


def test_an_etcd_source_has_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[source.etcd]\nendpoints = ["http://127.0.0.1:2379"]\n')
    etcd = config.etcd_source
    assert etcd is not None
    assert (etcd.prefix, etcd.username, etcd.password) == ("lbsync/", None, None)
    assert (etcd.request_timeout, etcd.idle_timeout) == (5.0, 30.0)
    assert config.file_source is None


def test_etcd_settings_are_read_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etcd.password").write_text("s3cret\n")
    config = load_text(
        tmp_path,
        '[source.etcd]\nendpoints = ["https://10.0.0.1:2379/", "https://10.0.0.2:2379"]\n'
        'prefix = "/team/lb"\nusername = "lbsync"\npassword_file = "etcd.password"\n'
        'ca_file = "ca.pem"\ncert_file = "c.pem"\nkey_file = "k.pem"\nidle_timeout = "10s"\n',
    )
    etcd = config.etcd_source
    assert etcd is not None
    assert etcd.endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert etcd.prefix == "team/lb/"
    assert (etcd.username, etcd.password) == ("lbsync", "s3cret")
    assert etcd.tls.ca_file == tmp_path / "ca.pem"
    assert (etcd.tls.cert_file, etcd.tls.key_file) == (tmp_path / "c.pem", tmp_path / "k.pem")
    assert etcd.idle_timeout == 10.0
    assert config.source_order == ("etcd",)


def test_sources_keep_the_order_of_the_file(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[source.etcd]\nendpoints = ["http://127.0.0.1:2379"]\n\n'
        '[source.file]\npath = "services.toml"\n',
    )
    assert config.source_order == ("etcd", "file")


def test_the_etcd_password_can_come_from_the_environment(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[source.etcd]\nendpoints = ["http://127.0.0.1:2379"]\nusername = "lbsync"\n'
        'password = "from-file"\n',
        {"LBSYNC_SOURCE_ETCD_PASSWORD": "from-env"},
    )
    assert config.etcd_source is not None and config.etcd_source.password == "from-env"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[source.etcd]\n", "source.etcd.endpoints: a list of http(s)://host:port URLs"),
        ('[source.etcd]\nendpoints = ["ftp://10.0.0.1:2379"]\n', "source.etcd.endpoints"),
        (
            '[source.etcd]\nendpoints = ["http://a:1"]\nusername = "u"\n',
            "source.etcd.username: username and password go together",
        ),
        (
            '[source.etcd]\nendpoints = ["http://a:1"]\nkey_file = "k"\n',
            "source.etcd.key_file: key_file needs cert_file",
        ),
        (
            '[source.etcd]\nendpoints = ["http://a:1"]\nprefix = "a b"\n',
            "source.etcd.prefix",
        ),
        (
            '[source.etcd]\nendpoints = ["http://a:1"]\nusername = "u"\n'
            'password_file = "missing"\n',
            "source.etcd.password_file: cannot read",
        ),
        ('[source.etcd]\nendpoints = ["http://a:1"]\nendpoint = "x"\n', "source.etcd.endpoint:"),
        ("[source.zookeeper]\n", "source.zookeeper: unknown setting"),
    ],
    ids=[
        "no endpoints",
        "endpoint of another scheme",
        "username without password",
        "key without cert",
        "prefix with a space",
        "missing password file",
        "unknown setting",
        "unknown source",
    ],
)
def test_a_bad_source_setting_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"lbsync\.toml: ") as caught:
        load_text(tmp_path, text)
    assert message in str(caught.value)


def test_a_consul_source_has_defaults_and_reads_consuls_own_token_variable(
    tmp_path: Path,
) -> None:
    config = load_text(tmp_path, "[source.consul]\n", {"CONSUL_HTTP_TOKEN": "from-consul-env"})
    consul = config.consul_source
    assert consul is not None
    assert consul.addresses == ("http://127.0.0.1:8500",)
    assert (consul.prefix, consul.wait, consul.datacenter) == ("lbsync/", 30.0, None)
    assert consul.token == "from-consul-env"
    assert (consul.fabio_config, consul.config_entries) == (None, False)


def test_config_entries_are_followed_only_when_asked_for(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[source.consul]\nconfig_entries = true\n")
    assert config.consul_source is not None and config.consul_source.config_entries is True


def test_a_consul_token_file_wins_over_consuls_variable(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    config = load_text(
        tmp_path, '[source.consul]\ntoken_file = "token"\n', {"CONSUL_HTTP_TOKEN": "env"}
    )
    assert config.consul_source is not None and config.consul_source.token == "from-file"


def test_addresses_without_a_scheme_or_port_are_plain_http_with_the_stores_port(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path,
        '[source.etcd]\nendpoints = ["10.0.0.1:2379", "etcd.example"]\n\n'
        '[source.consul]\naddresses = ["127.0.0.1", "https://consul.example"]\n'
        'cert_file = "both.pem"\n',
    )
    assert config.etcd_source is not None and config.consul_source is not None
    assert config.etcd_source.endpoints == ("http://10.0.0.1:2379", "http://etcd.example:2379")
    assert config.consul_source.addresses == (
        "http://127.0.0.1:8500",
        "https://consul.example:8501",
    )
    assert config.consul_source.tls.cert_file == tmp_path / "both.pem"  # key in the same PEM


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[source.consul]\naddresses = ["ftp://127.0.0.1:8500"]\n', "source.consul.addresses"),
        ('[source.consul]\nwait = "11m"\n', "source.consul.wait: between 0 and 10 minutes"),
        (
            '[source.consul]\nkey_file = "k.pem"\n',
            "source.consul.key_file: key_file needs cert_file",
        ),
        ('[source.consul]\ntokne = "x"\n', "source.consul.tokne: unknown setting"),
        (
            '[source.consul]\nconfig_entries = "yes"\n',
            "source.consul.config_entries: must be true or false",
        ),
    ],
    ids=[
        "address of another scheme",
        "wait too long",
        "key without cert",
        "misspelt setting",
        "config entries not a boolean",
    ],
)
def test_a_bad_consul_setting_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert message in str(caught.value)


def test_an_empty_api_listen_turns_the_api_off(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[source.file]\npath = "s.toml"\n\n[api]\nlisten = ""\n')
    assert config.api.listen == ""
    with pytest.raises(ConfigError, match=r"api\.listen: a host:port string"):
        load_text(tmp_path, '[source.file]\npath = "s.toml"\n\n[api]\nlisten = 9180\n')


def test_consuls_own_variables_fill_what_the_table_leaves_unset(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client-key.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "consul-token").write_text("from-a-file\n")
    environ = {
        "CONSUL_HTTP_ADDR": "consul.internal:8501",
        "CONSUL_HTTP_SSL": "true",
        "CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "consul-token"),
        "CONSUL_CACERT": str(tmp_path / "ca.pem"),
        "CONSUL_CLIENT_CERT": str(tmp_path / "client.pem"),
        "CONSUL_CLIENT_KEY": str(tmp_path / "client-key.pem"),
    }
    consul = load_text(tmp_path, "[source.consul]\n", environ).consul_source
    assert consul is not None
    assert consul.addresses == ("https://consul.internal:8501",)
    assert consul.token == "from-a-file"
    assert consul.tls.ca_file == tmp_path / "ca.pem"
    assert consul.tls.client_cert == (
        str(tmp_path / "client.pem"),
        str(tmp_path / "client-key.pem"),
    )
    table = '[source.consul]\naddress = "http://10.0.0.9:8500"\ntoken = "from-the-file"\n'
    consul = load_text(tmp_path, table, environ).consul_source
    assert consul is not None
    assert consul.addresses == ("http://10.0.0.9:8500",)  # lbsync.toml wins
    assert consul.token == "from-the-file"


def test_address_and_addresses_together_are_refused(tmp_path: Path) -> None:
    table = '[source.consul]\naddress = "a:8500"\naddresses = ["b:8500"]\n'
    with pytest.raises(ConfigError, match=r"source\.consul\.address: give address or addresses"):
        load_text(tmp_path, table)
