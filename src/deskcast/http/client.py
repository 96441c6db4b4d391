"""How this machine's own tools reach this machine's ``deskcast serve``.

``deskcast meta`` (:func:`post_now_playing`) and the route daemon's web leg talk to a serve
started with the same settings:
the same port, HTTPS when ``tls_cert`` is set, the listener token when ``listen_token`` is set.
With HTTPS they trust exactly the configured certificate (also a self-signed one; the host name
is not checked, since they connect to the loopback address the certificate was not made for).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from deskcast.errors import ConfigError, DeskcastError


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


def post_now_playing(url: str, token: str, artist: str, title: str, *,
                     context: ssl.SSLContext | None = None, pinned_cert: str | None = None
                     ) -> dict[str, Any]:
    """``POST /api/metadata`` to the serve at ``url`` with its bearer ``token``; its answer
    (``answer["now_playing"]["text"]``). ``pinned_cert``: the certificate ``context`` trusts
    (serve.tls_cert), for the message when the server shows another. Raises DeskcastError
    with a one-line reason."""
    body = json.dumps({"artist": artist, "title": title}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/api/metadata", data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        reason = err.read(300).decode("utf-8", "replace").strip() or err.reason
        raise DeskcastError(f"{url} refused the title (HTTP {err.code}): {reason}") from None
    except (urllib.error.URLError, OSError) as err:
        why = getattr(err, "reason", err)
        if isinstance(why, ssl.SSLError):
            trusted = (f"the certificate in serve.tls_cert ({pinned_cert})" if pinned_cert
                       else "a certificate this system trusts")
            raise DeskcastError(f"{url} answers with HTTPS, but not the certificate expected: "
                                f"{why} — meta trusts {trusted}") from None
        raise DeskcastError(f"cannot reach {url}: {why} — is `deskcast serve` running? "
                            "(--server URL)") from None
    return answer
