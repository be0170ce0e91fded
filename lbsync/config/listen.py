"""`[api] listen`: where the status API listens, checked when the configuration is read."""

from __future__ import annotations

import ipaddress

from lbsync.config.schema import ConfigError


def parse_listen(text: str) -> tuple[str, int] | None:
    """`host:port` (IPv6 in brackets) from `[api] listen`; None when empty (API disabled).

    The host is required: listening on every interface must be written out (`0.0.0.0:9180`).
    """
    if not text:
        return None
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"api.listen: expected host:port (e.g. 127.0.0.1:9180, [::1]:9180) or '' to "
            f"disable the API, got {text!r}"
        )
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether `host` (IPv6 without brackets) is this machine's loopback: `localhost`,
    127.0.0.0/8 or ::1 (also as ::ffff:127.x.y.z). Other names are not resolved: what a name
    points at can change after it was checked."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
