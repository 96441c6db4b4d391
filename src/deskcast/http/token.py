"""The bearer token that protects ``POST /api/metadata``.

With no ``--token`` configured, ``serve`` uses the token in ``$XDG_STATE_HOME/deskcast/
serve-token`` (created on first start, mode 0600, readable only by you), and ``deskcast meta``
reads it from there, so on one machine nobody needs to copy it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from deskcast import state
from deskcast.errors import ConfigError

logger = logging.getLogger(__name__)

FILE_NAME = "serve-token"
MIN_CHARS = 16
"""Shorter tokens are refused: guessable."""


def token_path() -> Path:
    return state.state_dir() / FILE_NAME


def read_token() -> str | None:
    """The saved token, or None if there is none (or it is unreadable)."""
    try:
        text = token_path().read_text().strip()
    except OSError:
        return None
    return text if len(text) >= MIN_CHARS else None


def check(token: str) -> str:
    token = token.strip()
    if len(token) < MIN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(f"--token must be at least {MIN_CHARS} characters without spaces "
                          "(or leave it unset and one is generated)")
    return token


def load_or_create() -> tuple[str, Path]:
    """The saved token, or a new random one written with mode 0600."""
    path = token_path()
    saved = read_token()
    if saved is not None:
        os.chmod(path, 0o600)
        return saved, path
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token, path
