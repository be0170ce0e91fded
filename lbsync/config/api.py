"""`[api]`: where the status API listens and who may read it.

The API shows every service, instance, address and error lbsync knows. On loopback it answers
this machine only (and the daemon turns away requests for other host names, which is how a web
page that rebinds its name to 127.0.0.1 would come); anywhere else a bearer token is required,
unless `open = true` says on purpose that anyone who reaches it may read it.
"""

from __future__ import annotations

import re
from typing import Final

from lbsync.config.listen import is_loopback, parse_listen
from lbsync.config.reader import Reader
from lbsync.config.schema import ApiConfig, ConfigError

DEFAULT_LISTEN: Final = "127.0.0.1:9180"
# It travels in an HTTP header: printable ASCII, no spaces.
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")


def api_config(reader: Reader) -> ApiConfig:
    """`[api]`: `listen`, `token_file`, `open`."""
    if "token" in reader.table:  # inline, it would sit in a file that is often world-readable
        raise ConfigError(
            f"{reader.name('token')}: put the token in a file named by {reader.name('token_file')}"
        )
    reader.check_known({"listen", "token_file", "open"})
    listen = reader.table.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str):
        raise ConfigError(f'{reader.name("listen")}: a host:port string, or "" for no API')
    where = parse_listen(listen)
    token = reader.secret_file("token_file") if "token_file" in reader.table else None
    if token is not None and not _TOKEN.fullmatch(token):
        raise ConfigError(
            f"{reader.name('token_file')}: the token must be one word of printable ASCII "
            "(it is sent in an HTTP header)"
        )
    is_open = reader.flag("open", False)
    if where is not None and token is None and not is_open and not is_loopback(where[0]):
        raise ConfigError(
            f"{reader.name('token_file')}: required when {reader.name('listen')} ({listen}) is "
            f"not a loopback address; or set {reader.name('open')} = true to let anyone who can "
            "reach it read the API"
        )
    return ApiConfig(listen=listen, token=token, open=is_open)
