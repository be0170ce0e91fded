"""The one rule for a store's address: `[http(s)://]host[:port]`, nothing after the port.

etcd endpoints and Consul addresses follow it alike, as `etcdctl --endpoints` and Consul's
own tools read them: without a scheme the address is plain http, and the port defaults by
store and scheme (etcd 2379; Consul 8500 for http, 8501 for https); IPv6 hosts go in
brackets. The text kept in
the configuration is the normalised `scheme://host:port`, and the clients parse it again with
the same function, so what was checked is what is used.

Credentials never ride in an address (`http://user:secret@host`): an address is printed in
logs, the status API and errors, so one with userinfo is refused, and the refusal shows it with
the userinfo cut out. Any `@` counts, since none can be valid and a secret may hold a `/`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

ETCD_PORTS: Final = {"http": 2379, "https": 2379}
CONSUL_PORTS: Final = {"http": 8500, "https": 8501}
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Endpoint:
    """One store address."""

    scheme: str
    host: str
    port: int

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        """`scheme://host:port`."""
        return f"{self.scheme}://{self.url_host}:{self.port}"

    def __str__(self) -> str:
        return self.url


class CredentialsInAddress(ValueError):
    """An address with `user:password@`; `shown` is the address without them."""

    def __init__(self, what: str, shown: str) -> None:
        super().__init__(f"{what} {shown!r} (credentials removed): must not carry credentials")
        self.shown = shown


def without_userinfo(text: str) -> str:
    """`text` with everything between the scheme and the last `@` removed."""
    if "@" not in text:
        return text
    scheme = _SCHEME.match(text.strip())
    return (scheme.group(0) if scheme else "") + text.rpartition("@")[2].strip()


def parse_endpoint(text: str, *, ports: Mapping[str, int], what: str) -> Endpoint:
    """The endpoint in `text`; ValueError naming `what` and the text when it breaks the rule
    (CredentialsInAddress, without the text's userinfo, when it has some)."""
    if "@" in text:
        raise CredentialsInAddress(what, without_userinfo(text))
    expected = f"{what} {text!r}: expected http(s)://host:port"
    stripped = text.strip()
    parts = urllib.parse.urlsplit(stripped if "://" in stripped else f"http://{stripped}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{expected} ({error})") from error
    if parts.scheme not in ports or not parts.hostname:
        raise ValueError(expected)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{expected}, with nothing after the port")
    return Endpoint(parts.scheme, parts.hostname, port or ports[parts.scheme])


def normalise(text: str, *, ports: Mapping[str, int], what: str) -> str:
    """The endpoint's normalised text (`scheme://host:port`)."""
    return parse_endpoint(text, ports=ports, what=what).url
