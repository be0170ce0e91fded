"""Type and charset checks for every value that can end up inside a configuration file.

A value from a KV store or a services file is only ever accepted when it matches one of these
narrow shapes, so it can never inject a directive (whitespace, `#`, quotes, braces, `;` are all
outside every allowed charset).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Final

NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
INSTANCE_ID_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,255}")
GROUP_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LABEL_RE: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
PATH_RE: Final = re.compile(r"/[A-Za-z0-9._~%/:@+-]{0,255}")
TAG_RE: Final = re.compile(r"[!$%&*+,\-./0-9:<=>?@A-Z\[\]^_a-z|~]{1,256}")
SCOPE_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# a dotted quad as `ipaddress` writes it (no leading zeros): taken as it is, without parsing
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
META_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_META_VALUE: Final = 512
# the tag charset without `$`: no space, quote, `#`, `;`, brace, backslash or `$` (nginx's
# variables), so a value printed by any template cannot end, comment out or open a directive
META_VALUE_RE: Final = re.compile(r"[!%&*+,\-./0-9:<=>?@A-Z\[\]^_a-z|~]{0,512}")
SETTING_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}(/[A-Za-z0-9_.-]{1,128}){0,15}")
MAX_INSTANCE_WEIGHT: Final = 65535
# The RFC 7230 token characters that no configuration syntax treats specially: a token may hold
# `#`, `$`, `'`, `|` or a backtick, which HAProxy or nginx read as a comment, a variable or a
# quote. Header names keep to letters, digits and `-` (nginx drops a header with `_` or `.` by
# default: `underscores_in_headers`, `ignore_invalid_headers`); cookie names add `_` and `.`.
HEADER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
COOKIE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# A redirect's target, printed bare into an HAProxy or nginx directive: an http(s) URL of RFC
# 3986 characters without `#`, `$`, `'`, `(`, `)`, `*`, `;` or brackets outside an IPv6 host,
# every `%` starting an escape; `$path` may end it (the request's path and query).
MAX_REDIRECT_URL: Final = 1024
REDIRECT_URL_RE: Final = re.compile(
    r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?:[/?](?:[A-Za-z0-9._~:/?@!&+,=-]|%[0-9A-Fa-f]{2})*)?(?:\$path)?"
)


class ContractError(ValueError):
    """A key or value that breaks the KV contract."""


class CheckError(ContractError):
    """A value does not have the shape its field requires."""


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CheckError(f"{what} must be a string, got {_describe(value)}")
    return value


def _fullmatch(pattern: re.Pattern[str], value: object, what: str, *, shape: str) -> str:
    text = _require_str(value, what)
    if not pattern.fullmatch(text):
        raise CheckError(f"{what} must be {shape}, got {_describe(text)}")
    return text


def name(value: object, what: str = "name") -> str:
    """A service name: letters, digits, `.`, `_`, `-`, starting with a letter or digit."""
    return _fullmatch(NAME_RE, value, what, shape="letters, digits, '.', '_' or '-' (max 128)")


def instance_id(value: object, what: str = "instance id") -> str:
    """An instance id: letters, digits and `_ . : @ -` (Consul and Nomad ids fit)."""
    return _fullmatch(
        INSTANCE_ID_RE, value, what, shape="letters, digits, '_', '.', ':', '@' or '-'"
    )


def group(value: object, what: str = "group") -> str:
    """A split group name."""
    return _fullmatch(GROUP_RE, value, what, shape="letters, digits, '.', '_' or '-' (max 64)")


def header_name(value: object, what: str = "header") -> str:
    """An HTTP header name a proxy matches requests on: letters, digits and `-`."""
    return _fullmatch(
        HEADER_NAME_RE,
        value,
        what,
        shape="a header name of letters, digits and '-' (max 64), starting with a letter or digit",
    )


def cookie_name(value: object, what: str = "cookie") -> str:
    """A cookie name a proxy reads or sets: letters, digits, `_`, `.` and `-`."""
    return _fullmatch(
        COOKIE_NAME_RE,
        value,
        what,
        shape="a cookie name of letters, digits, '_', '.' or '-' (max 64), not starting with "
        "'.' or '-'",
    )


def hostname(value: object, what: str = "host") -> str:
    """A DNS host name (RFC 1123), returned in lower case."""
    text = _require_str(value, what)
    labels = text.split(".")
    if len(text) > 253 or not all(LABEL_RE.fullmatch(label) for label in labels):
        raise CheckError(f"{what} must be a DNS host name, got {_describe(text)}")
    return text.lower()


def address(value: object, what: str = "address") -> str:
    """An IPv4 or IPv6 address, or a DNS host name."""
    text = _require_str(value, what)
    if IPV4_RE.fullmatch(text):
        return text  # what `str(ipaddress.ip_address(text))` gives
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        scope = getattr(parsed, "scope_id", None)
        if scope is not None and not SCOPE_RE.fullmatch(scope):
            raise CheckError(f"{what} has an invalid IPv6 zone, got {_describe(text)}")
        return str(parsed)
    try:
        return hostname(text, what)
    except CheckError:
        raise CheckError(
            f"{what} must be an IP address or a DNS host name, got {_describe(text)}"
        ) from None


def integer(value: object, what: str, *, low: int, high: int) -> int:
    """A JSON integer within [low, high]; booleans and fractions are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckError(f"{what} must be an integer, got {_describe(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise CheckError(f"{what} must be an integer, got {_describe(value)}")
        value = int(value)
    if not low <= value <= high:
        raise CheckError(f"{what} must be between {low} and {high}, got {value}")
    return value


def port(value: object, what: str = "port") -> int:
    """A TCP port, 1-65535."""
    return integer(value, what, low=1, high=65535)


def share(value: object, what: str) -> float:
    """A traffic share in percent: a finite number from 0 to 100."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckError(f"{what} must be a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 100.0:
        raise CheckError(f"{what} must be between 0 and 100, got {_describe(value)}")
    return number


def path(value: object, what: str = "path") -> str:
    """A URL path prefix: starts with `/`, URL-safe characters only."""
    return _fullmatch(
        PATH_RE, value, what, shape="a URL path starting with '/' (no spaces or quotes)"
    )


def redirect_url(value: object, what: str = "redirect URL") -> str:
    """Where a redirect sends a request: an absolute http(s) URL (`REDIRECT_URL_RE`), at most
    `MAX_REDIRECT_URL` characters."""
    text = _require_str(value, what)
    if len(text) > MAX_REDIRECT_URL:
        raise CheckError(f"{what} is longer than {MAX_REDIRECT_URL} characters")
    return _fullmatch(
        REDIRECT_URL_RE,
        text,
        what,
        shape="an http:// or https:// URL without spaces, quotes, '#', '$' (but a final "
        "'$path'), parentheses, '*' or ';', every '%' followed by two hex digits",
    )


def tag(value: object, what: str = "tag") -> str:
    """A tag: printable ASCII without spaces, quotes, `#`, `;`, braces or backslashes."""
    return _fullmatch(TAG_RE, value, what, shape="printable characters without spaces or quotes")


def meta_key(value: object, what: str = "meta key") -> str:
    """A metadata key (Consul's own rule)."""
    return _fullmatch(META_KEY_RE, value, what, shape="letters, digits, '_' or '-'")


def meta_value(value: object, what: str = "meta value") -> str:
    """A metadata value: up to 512 printable ASCII characters without spaces, quotes, `#`, `;`,
    braces, backslashes or `$` (version numbers, commit ids, URLs fit)."""
    return _fullmatch(
        META_VALUE_RE,
        value,
        what,
        shape=f"at most {MAX_META_VALUE} printable characters without spaces, quotes, "
        "'#', ';', braces, backslashes or '$'",
    )


def setting_name(value: object, what: str = "setting name") -> str:
    """A setting's name under `settings/`: letters, digits, `_`, `.`, `-`, and `/` between
    parts."""
    return _fullmatch(
        SETTING_NAME_RE, value, what, shape="letters, digits, '_', '.' or '-', parts split by '/'"
    )


def free_text(value: str, what: str) -> str:
    """Text that reaches templates as it is (a setting's strings): printable, so no line break
    or other control character can start a new directive."""
    if not value.isprintable():
        raise CheckError(f"{what} holds a line break or another control character")
    return value
