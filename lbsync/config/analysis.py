"""`[analysis]`: the Prometheus that rollouts' metric gates query.

Its URL is printed in readings, logs and errors, so, like a store's address, it never carries
credentials. It may have a path: a Prometheus behind a reverse proxy at `/prometheus`.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from lbsync.config.endpoints import without_userinfo
from lbsync.config.reader import Reader
from lbsync.config.schema import AnalysisConfig, ConfigError

DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_WINDOW: Final = 60.0
MIN_WINDOW: Final = 1.0


def prometheus_url(text: str, what: str) -> str:
    """`http(s)://host[:port][/path]`, normalised without a trailing `/`; ConfigError naming
    `what` otherwise (the text shown without any `user:password@`)."""
    if "@" in text:
        raise ConfigError(
            f"{what}: {without_userinfo(text)!r} (credentials removed): must not carry credentials"
        )
    expected = f"{what}: expected http(s)://host[:port][/path], got {text!r:.120}"
    parts = urllib.parse.urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"{expected} ({error})") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(expected)
    if parts.query or parts.fragment or any(c.isspace() for c in parts.path):
        raise ConfigError(f"{expected}: no query, fragment or space")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def analysis_config(reader: Reader) -> AnalysisConfig:
    """`[analysis]`: `prometheus`, `timeout`, `window`."""
    reader.check_known({"prometheus", "timeout", "window"})
    url = reader.optional_text("prometheus")
    timeout = reader.duration("timeout", DEFAULT_TIMEOUT)
    if timeout <= 0:
        raise ConfigError(f"{reader.name('timeout')}: must be longer than 0")
    window = reader.duration("window", DEFAULT_WINDOW)
    if window < MIN_WINDOW:
        raise ConfigError(
            f"{reader.name('window')}: at least {MIN_WINDOW:g}s (and at least two scrape "
            "intervals, for rate() to have two samples)"
        )
    return AnalysisConfig(
        prometheus=None if url is None else prometheus_url(url, reader.name("prometheus")),
        timeout=timeout,
        window=window,
    )
