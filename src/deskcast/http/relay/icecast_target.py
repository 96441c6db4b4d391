"""Where and as whom to push to Icecast, and what Icecast's answers mean.

URL: ``icecast://[USER:]PASSWORD@HOST[:PORT]/MOUNT`` (``http://`` is accepted as a synonym;
user defaults to ``source``, port to 8000).
"""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass

from aiohttp import encode_basic_auth

from deskcast.errors import ConfigError

DEFAULT_PORT = 8000
"""Icecast's stock port."""
DEFAULT_USER = "source"
"""Icecast's source user name (only ``source`` works unless a mount has its own)."""
CONTENT_TYPES = {"mp3": "audio/mpeg", "mpeg": "audio/mpeg", "ogg": "audio/ogg",
                 "opus": "audio/ogg", "aac": "audio/aac"}


@dataclass(frozen=True)
class IcecastTarget:
    """Where and as whom to push: parsed from an ``icecast://`` or ``http://`` URL."""

    host: str
    port: int
    mount: str
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> IcecastTarget:
        """Parse ``icecast://[USER:]PASSWORD@HOST[:PORT]/MOUNT``; ConfigError says what's wrong."""
        example = "icecast://source:PASSWORD@HOST:8000/stream.mp3"
        parts = urllib.parse.urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme == "https":
            raise ConfigError(f"Icecast URL {_redact(url)}: TLS (https) is not supported; use "
                              f"http:// or icecast:// (e.g. {example}) through a local Icecast "
                              "or a TLS tunnel")
        if scheme not in ("icecast", "http"):
            raise ConfigError(f"Icecast URL {_redact(url)!r} must start with icecast:// or "
                              f"http://, e.g. {example}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"Icecast URL {_redact(url)}: the port must be a number "
                              f"1-65535, e.g. {example}") from None
        host = parts.hostname or ""
        if not host:
            raise ConfigError(f"Icecast URL {_redact(url)} names no host, e.g. {example}")
        mount = urllib.parse.unquote(parts.path)
        if not mount or mount == "/":
            raise ConfigError(f"Icecast URL {_redact(url)} names no mount point: add one "
                              f"after the host, e.g. {example}")
        if parts.query or parts.fragment:
            raise ConfigError(f"Icecast URL {_redact(url)}: a mount point cannot have ?query "
                              "or #fragment; remove it")
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        if parts.password is None:  # icecast://PASSWORD@host/mount: the user part is the password
            user, password = DEFAULT_USER, user
        if not password:
            raise ConfigError(f"Icecast URL {_redact(url)} has no source password: put it "
                              f"before the host, e.g. {example}")
        return cls(host=host, port=port or DEFAULT_PORT, mount=mount, user=user or DEFAULT_USER,
                   password=password)

    @property
    def where(self) -> str:
        """``host:port/mount`` for log lines (no password)."""
        return f"{self.host_port}{self.mount}"

    @property
    def host_port(self) -> str:
        """``host:port`` as in a URL or a Host header (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def authorization(self) -> str:
        return encode_basic_auth(self.user, self.password)


def format_for_mount(mount: str) -> tuple[str, str]:
    """(serve format, Content-Type) a mount's name asks for: ``.ogg``/``.opus`` -> Ogg/Opus,
    anything else (``.mp3``, no extension) -> MP3."""
    name = mount.rsplit("/", 1)[-1].lower()
    if name.endswith((".ogg", ".opus", ".oga")):
        return "opus", "audio/ogg"
    return "mp3", "audio/mpeg"


def _redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.password is not None else f"***@{host}"
    with contextlib.suppress(ValueError):
        if parts.port:
            netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class SourceRefused(Exception):  # noqa: N818 - it is a state, not a bug
    """Icecast answered the source request with an error; ``str()`` is the log message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def explain_refusal(status: int, reason: str, body: str, mount: str) -> str:
    """One line for an Icecast answer other than 200 to a source ``PUT``."""
    text = body.strip().splitlines()[0][:200] if body.strip() else reason
    low = text.lower()
    if status == 401:
        return ("refused (401: wrong source password? check the password in the --icecast URL "
                "against <source-password> in icecast.xml)")
    if status == 403 and "in use" in low:
        return (f"mount {mount} is already in use by another source: stop it or choose "
                "another mount")
    if status == 403 and "content-type" in low:
        return f"refused (403: Icecast does not take this stream type: {text})"
    if status == 403 and "too many" in low:
        return f"refused (403: {text}; raise <sources> in icecast.xml)"
    if status == 405:
        return ("refused (405: this server does not take HTTP PUT sources; Icecast 2.4 or "
                "newer is needed)")
    return f"refused ({status}: {text})"
