"""How this machine's own tools reach this machine's ``deskcast serve``.

``deskcast meta`` and the route daemon's web leg talk to a serve started with the same settings:
the same port, HTTPS when ``tls_cert`` is set, the listener token when ``listen_token`` is set.
With HTTPS they trust exactly the configured certificate (also a self-signed one; the host name
is not checked, since they connect to the loopback address the certificate was not made for).
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass

from deskcast.errors import ConfigError


@dataclass(frozen=True)
class LocalServe:
    base_url: str
    """``http(s)://127.0.0.1:PORT`` (or the configured address), no trailing slash."""
    ssl_context: ssl.SSLContext | None
    listen_token: str = ""

    def headers(self) -> dict[str, str]:
        """Basic auth with the listener token, when one is set (any user name works)."""
        if not self.listen_token:
            return {}
        user_pass = base64.b64encode(f"deskcast:{self.listen_token}".encode()).decode()
        return {"Authorization": f"Basic {user_pass}"}


def local_serve(listen: str, tls_cert: str | None = None, listen_token: str | None = None,
                default_port: int = 8000) -> LocalServe:
    """Where serve's ``listen`` setting (``HOST:PORT``, ``:PORT``) answers on this machine."""
    from deskcast.endpoints import parse_hostport

    host, port = parse_hostport(listen, default_port)
    probe = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    probe = f"[{probe}]" if ":" in probe else probe
    context = pinned_context(tls_cert) if tls_cert else None
    scheme = "https" if context is not None else "http"
    return LocalServe(f"{scheme}://{probe}:{port}", context, listen_token or "")


def pinned_context(cert_file: str) -> ssl.SSLContext:
    """A client context that trusts only ``cert_file`` (serve's own certificate)."""
    try:
        context = ssl.create_default_context(cafile=cert_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot read serve's certificate {cert_file}: {err} — check "
                          "serve.tls_cert") from None
    context.check_hostname = False
    # A certificate signed by a CA is trusted on its own too, without the rest of the chain.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
