"""The one TLS rule for every client lbsync builds (etcd, Consul reads and writes alike).

A CA file replaces the system's trust store; a client certificate may come with its key in a
separate file, or hold the key itself (one PEM with both, as OpenSSL allows). A key without a
certificate is refused: it can prove nothing. The files are checked when a client is built
(`context`), with an error that names the settings, not at every connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsError(ValueError):
    """TLS files that cannot be used; the message names the files."""


@dataclass(frozen=True)
class TlsFiles:
    """The CA, client certificate and key files of one store (all optional)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise TlsError("key_file needs cert_file (a key alone proves nothing)")

    @property
    def configured(self) -> bool:
        """Whether any file is set (otherwise the system's defaults apply)."""
        return any(path is not None for path in (self.ca_file, self.cert_file, self.key_file))

    @property
    def client_cert(self) -> tuple[str, str] | str | None:
        """The certificate (and key) as `requests`-style clients such as py-consul take it."""
        if self.cert_file is None:
            return None
        return (str(self.cert_file), str(self.key_file)) if self.key_file else str(self.cert_file)

    def context(self) -> ssl.SSLContext | None:
        """A verifying context with these files, or None when none is set."""
        if not self.configured:
            return None
        try:
            context = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file)
            )
            if self.cert_file is not None:
                context.load_cert_chain(
                    str(self.cert_file), None if self.key_file is None else str(self.key_file)
                )
        except (OSError, ssl.SSLError) as error:
            files = ", ".join(str(p) for p in (self.ca_file, self.cert_file, self.key_file) if p)
            raise TlsError(f"TLS files {files} cannot be used: {error}") from error
        return context
