"""The one endpoint rule and the one TLS rule, shared by etcd and Consul, reads and writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbsync.config import CONSUL_PORTS, ETCD_PORTS, TlsError, TlsFiles, parse_endpoint
from lbsync.kv.consul import addresses_of
from lbsync.kv.etcd.transport import check_endpoint


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("http://127.0.0.1:8500", "http://127.0.0.1:8500"),
        ("127.0.0.1:8600", "http://127.0.0.1:8600"),
        ("https://consul.example", "https://consul.example:8501"),
        ("http://[::1]:8500", "http://[::1]:8500"),
    ],
)
def test_consul_addresses_are_normalised_with_consuls_ports(text: str, address: str) -> None:
    assert str(parse_endpoint(text, ports=CONSUL_PORTS, what="Consul address")) == address
    assert [str(each) for each in addresses_of([text])] == [address]


@pytest.mark.parametrize("text", ["ftp://x:1", "http://x:99999", "http://x:1/v1", "http://"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Consul address"):
        addresses_of([text])


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("https://etcd.example:2379/", "https://etcd.example:2379"),
        ("127.0.0.1:2379", "http://127.0.0.1:2379"),
        ("http://127.0.0.1", "http://127.0.0.1:2379"),
    ],
)
def test_etcd_endpoints_follow_the_same_rule_with_etcds_port(text: str, endpoint: str) -> None:
    assert check_endpoint(text) == endpoint
    assert parse_endpoint(text, ports=ETCD_PORTS, what="etcd endpoint").url == endpoint


def test_a_key_without_a_certificate_is_refused_and_a_certificate_alone_is_accepted(
    tmp_path: Path,
) -> None:
    with pytest.raises(TlsError, match="key_file needs cert_file"):
        TlsFiles(key_file=tmp_path / "client.key")
    alone = TlsFiles(cert_file=tmp_path / "both.pem")
    assert alone.client_cert == str(tmp_path / "both.pem")
    pair = TlsFiles(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem")
    assert pair.client_cert == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert TlsFiles().context() is None and TlsFiles().client_cert is None


def test_tls_files_that_cannot_be_loaded_are_named(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"missing-ca\.pem"):
        TlsFiles(ca_file=tmp_path / "missing-ca.pem").context()
