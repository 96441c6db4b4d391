"""HTTPS for ``deskcast serve``: an :class:`ssl.SSLContext` from a certificate and key file,
and a listening site whose TLS handshake has a deadline.

The context takes Python's server defaults (``ssl.create_default_context``: no SSLv3, no
compression, forward-secret ciphers first) and raises the floor to TLS 1.2, which every browser
and player of the last decade speaks. Every way the files can be wrong is one line naming the
file and what to do about it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from aiohttp import web

from deskcast.errors import ConfigError

logger = logging.getLogger(__name__)

MIN_VERSION = ssl.TLSVersion.TLSv1_2
"""Oldest protocol accepted (1.0 and 1.1 are deprecated by RFC 8996)."""

_MAKE_ONE = ("(a test certificate: openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem -days 365 "
             "-subj /CN=HOSTNAME)")


class _EncryptedKeyError(Exception):
    """The key asked for a passphrase."""


def _no_passphrase() -> bytes:
    raise _EncryptedKeyError


def _read(path: Path, flag: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path} does not exist {_MAKE_ONE}") from None
    except IsADirectoryError:
        raise ConfigError(f"{flag} {path} is a folder: give the PEM file") from None
    except OSError as err:
        raise ConfigError(f"cannot read {flag} {path}: {err.strerror} (check its "
                          "permissions: the user running serve must be able to read it)") from None
    return data.decode("ascii", "replace")


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS server context for ``cert`` (PEM, the chain after the certificate if any) and
    ``key`` (PEM, not encrypted)."""
    cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
    cert_text = _read(cert_path, "--tls-cert")
    key_text = _read(key_path, "--tls-key")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        hint = " (that is a key: swap --tls-cert and --tls-key)" \
            if "PRIVATE KEY-----" in cert_text else ""
        raise ConfigError(f"--tls-cert {cert_path} holds no PEM certificate "
                          f"('-----BEGIN CERTIFICATE-----'){hint}")
    try:  # parses the certificates alone, so a bad one is not blamed on the key
        ssl.create_default_context().load_verify_locations(cadata=cert_text)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"--tls-cert {cert_path} is not a valid PEM certificate: "
                          f"{err}") from None
    if "PRIVATE KEY-----" not in key_text:
        hint = " (that is a certificate: swap --tls-cert and --tls-key)" \
            if "-----BEGIN CERTIFICATE-----" in key_text else ""
        raise ConfigError(f"--tls-key {key_path} holds no PEM private key{hint}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_VERSION
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_passphrase)
    except _EncryptedKeyError:
        raise ConfigError(f"--tls-key {key_path} is encrypted with a passphrase: write an "
                          f"unencrypted copy readable only by you (openssl pkey -in {key_path} "
                          "-out key.pem; chmod 600 key.pem)") from None
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"--tls-key {key_path} does not belong to --tls-cert "
                              f"{cert_path}: give the key the certificate was made "
                              "for") from None
        why = err.reason or "OpenSSL cannot parse it"
        raise ConfigError(f"--tls-key {key_path} is not a usable PEM private key ({why}): "
                          "give the unencrypted key of --tls-cert") from None
    return context


class Site(web.TCPSite):
    """A TCP site whose TLS handshake has to finish within ``handshake_timeout_s`` (asyncio's
    default, 60 s, would let a client that never says hello hold a socket that long)."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext | None, handshake_timeout_s: float,
                 backlog: int) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=backlog)
        self.handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        if self._ssl_context is None:
            await super().start()
            return
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=self.handshake_timeout_s)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
