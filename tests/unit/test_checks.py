"""The charset checks: what may end up inside a configuration file, and in which form."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync.model import checks
from lbsync.model.checks import CheckError
from lbsync.model.values import Instance


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        pytest.param("10.0.0.5", "10.0.0.5", id="IPv4"),
        pytest.param("2001:DB8:0:0::1", "2001:db8::1", id="IPv6 compressed and lower-cased"),
        pytest.param("::1", "::1", id="IPv6 loopback"),
        pytest.param("Backend-1.Example.COM", "backend-1.example.com", id="host name lower-cased"),
        pytest.param("localhost", "localhost", id="single label"),
        pytest.param("fe80::1%eth0", "fe80::1%eth0", id="IPv6 with a plain zone"),
    ],
)
def test_an_address_is_accepted_in_canonical_form(given: str, canonical: str) -> None:
    assert checks.address(given) == canonical


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("", id="empty"),
        pytest.param("10.0.0.5 backup", id="space"),
        pytest.param("10.0.0.5\n", id="trailing newline"),
        pytest.param("a#b", id="hash"),
        pytest.param("a;b", id="semicolon"),
        pytest.param("a{b}", id="braces"),
        pytest.param("'a'", id="quotes"),
        pytest.param("-a.example.com", id="label starting with a dash"),
        pytest.param("a..example.com", id="empty label"),
        pytest.param("example.com.", id="trailing dot"),
        pytest.param("a" * 64 + ".com", id="label over 63 characters"),
        pytest.param("fe80::1%eth0 backup", id="IPv6 zone with space"),
        pytest.param("fe80::1%eth0;\n#{}", id="IPv6 zone with a directive"),
        pytest.param("fe80::1%", id="empty IPv6 zone"),
    ],
)
def test_an_address_that_could_inject_is_refused(given: str) -> None:
    with pytest.raises(CheckError, match="address"):
        checks.address(given)


def test_a_host_name_longer_than_253_characters_is_refused() -> None:
    long_name = ".".join(["a" * 50] * 6)
    assert len(long_name) > 253
    with pytest.raises(CheckError, match="DNS host name"):
        checks.hostname(long_name)


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        pytest.param(checks.name, "shop.v2_x-1", "shop/x", id="service name"),
        pytest.param(checks.instance_id, "node1:web@dc1-3", "a b", id="instance id"),
        pytest.param(checks.group, "canary", "can ary", id="group"),
        pytest.param(checks.path, "/api/v1.2/%7Euser", "/a;b", id="path"),
        pytest.param(checks.tag, "version=1.4", 'a"b', id="tag"),
        pytest.param(checks.meta_key, "build_id-2", "a.b", id="meta key"),
        pytest.param(checks.meta_value, "1.4.2+build.7", "a\tb", id="meta value"),
        pytest.param(checks.meta_value, "https://ci.example/run/42", "a;b", id="meta value ;"),
        pytest.param(checks.meta_value, "team=platform", "{a}", id="meta value braces"),
        pytest.param(checks.meta_value, "v1", 'say "x"', id="meta value quotes"),
        pytest.param(checks.meta_value, "x", "a # b", id="meta value comment"),
        pytest.param(checks.setting_name, "limits/rps", "a\nb", id="setting name"),
        pytest.param(checks.header_name, "X-Canary", "X_Canary", id="header name _"),
        pytest.param(checks.header_name, "x-lb-2", "X-Can ary", id="header name space"),
        pytest.param(checks.header_name, "Canary", "X-Canary:", id="header name colon"),
        pytest.param(checks.header_name, "A", "-canary", id="header name leading -"),
        pytest.param(checks.cookie_name, "lbsync.shop", "a=b", id="cookie name ="),
        pytest.param(checks.cookie_name, "_sticky-1", "a;b", id="cookie name ;"),
        pytest.param(checks.cookie_name, "canary", "can$ary", id="cookie name $"),
        pytest.param(checks.cookie_name, "c", "can#ary", id="cookie name #"),
        pytest.param(checks.cookie_name, "c2", "'canary'", id="cookie name quotes"),
        pytest.param(checks.cookie_name, "C_2", ".canary", id="cookie name leading ."),
    ],
)
def test_each_check_accepts_its_shape_and_refuses_others(
    check: Callable[[object], str], good: str, bad: str
) -> None:
    assert check(good) == good
    with pytest.raises(CheckError):
        check(bad)
    with pytest.raises(CheckError, match="must be"):
        check(42)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        pytest.param(1, 1, id="low end"),
        pytest.param(65535, 65535, id="high end"),
        pytest.param(443.0, 443, id="integral float"),
        pytest.param(0, None, id="zero"),
        pytest.param(65536, None, id="over"),
        pytest.param(True, None, id="boolean"),
        pytest.param(80.5, None, id="fraction"),
        pytest.param(float("nan"), None, id="NaN"),
        pytest.param("80", None, id="string"),
    ],
)
def test_a_port_is_an_integer_from_1_to_65535(value: object, accepted: int | None) -> None:
    if accepted is None:
        with pytest.raises(CheckError, match="port"):
            checks.port(value)
    else:
        assert checks.port(value) == accepted


@pytest.mark.parametrize(
    "value", [-0.1, 100.1, float("inf"), float("nan"), "5", None, False], ids=repr
)
def test_a_share_is_a_finite_number_from_0_to_100(value: object) -> None:
    with pytest.raises(CheckError, match=r"groups\.blue"):
        checks.share(value, "groups.blue")


def test_a_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(CheckError) as caught:
        checks.name("x" * 500)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        pytest.param("10.0.0.5", "10.0.0.5:8080", id="IPv4"),
        pytest.param("2001:db8::1", "[2001:db8::1]:8080", id="IPv6 in brackets"),
        pytest.param("backend.local", "backend.local:8080", id="host name"),
    ],
)
def test_an_instance_endpoint_brackets_ipv6(address: str, endpoint: str) -> None:
    instance = Instance(service="s", id="i", address=address, port=8080)
    assert instance.endpoint == endpoint


def slow_address(text: str) -> str:
    """What `checks.address` gives without its dotted-quad shortcut."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return checks.hostname(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 300), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_a_dotted_quad_is_what_ipaddress_makes_of_it(octets: list[int], padded: list[bool]) -> None:
    text = ".".join(
        f"0{octet}" if pad else str(octet) for octet, pad in zip(octets, padded, strict=True)
    )
    try:
        expected = slow_address(text)
    except CheckError:
        expected = "refused"
    try:
        got = checks.address(text)
    except CheckError:
        got = "refused"
    assert got == expected
