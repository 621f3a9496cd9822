"""TLS for the REST and gRPC listeners, from certificate and key files, reloadable.

One :class:`ServerTls` per process reads ``tls_cert`` / ``tls_key`` (and
``tls_client_ca`` for mutual TLS) and makes the server contexts: ALPN
``http/1.1`` for REST, ``h2`` for the native gRPC engine. :meth:`ServerTls.reload`
(on SIGHUP) loads the files again into the same contexts: new connections get the
new certificate, connections already open keep the one they were made with (an
``SSLContext`` change never touches established sessions). A reload that fails
(a missing or mismatched file) is logged and changes nothing.

grpcio reads the same files through :meth:`ServerTls.pem`, which its credentials'
fetcher asks for on every new connection.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

__all__ = ["ServerTls"]

logger = logging.getLogger(__name__)


class ServerTls:
    """The server's certificate, key and optional client CA, and the contexts using them."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._contexts: list[ssl.SSLContext] = []
        #: Bumped by each successful reload (grpcio's fetcher compares it).
        self.generation = 0
        self._pem = self._read()

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        """The files' bytes, checked by loading them into a scratch context first."""
        self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        return self.key.read_bytes(), self.cert.read_bytes(), ca

    def _load(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED

    def context(self, alpn: list[str]) -> ssl.SSLContext:
        """A server context offering ``alpn`` (TLS 1.2 or later)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(alpn)
        if "h2" in alpn:  # RFC 9113 §9.2: no renegotiation, no compression
            context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
        self._load(context)
        self._contexts.append(context)
        return context

    @property
    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(key, certificate chain, client CA or None) as last loaded, PEM."""
        return self._pem

    def reload(self) -> bool:
        """Read the files again into every context; False (and a logged error) if they
        cannot be used, in which case nothing changes."""
        try:
            pem = self._read()
            for context in self._contexts:
                self._load(context)
        except (OSError, ssl.SSLError) as exc:
            logger.error("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        self._pem = pem
        self.generation += 1
        logger.info("TLS certificate reloaded from %s", self.cert)
        return True
