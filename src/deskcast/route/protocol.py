"""The control protocol and the words of a route — pure logic, no sockets held open.

One request per connection: the client writes one JSON object on one line, the daemon answers
with one JSON object on one line and closes. Requests::

    {"cmd": "status"}
    {"cmd": "route", "targets": ["local", "box:1350"]}
    {"cmd": "stop"}

Answers: ``{"ok": true, "status": {...}}`` or ``{"ok": false, "error": "one line"}``.

The socket lives in ``$XDG_RUNTIME_DIR/deskcast/control.sock`` (directory 0700, socket 0600),
or in the state directory when ``XDG_RUNTIME_DIR`` is unset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deskcast import state
from deskcast.endpoints import parse_hostport
from deskcast.errors import DeskcastError, EndpointError

SOCKET_NAME = "control.sock"
MAX_MESSAGE_BYTES = 1 << 20
"""A request or answer larger than this is malformed (a status is a few kB)."""

KEYWORDS = ("local", "web", "none")


class ProtocolError(DeskcastError):
    """A malformed message on the control socket."""


def runtime_dir(env: dict[str, str] | None = None) -> Path:
    """Where the control socket lives (not created here)."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "deskcast"
    return state.state_dir()


def socket_path(env: dict[str, str] | None = None) -> Path:
    return runtime_dir(env) / SOCKET_NAME


def make_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700); tighten it if it exists with looser permissions."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One message from one line; ProtocolError for anything else."""
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too long")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(f"not JSON: {err}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


@dataclass(frozen=True)
class Target:
    """One destination of a route: ``local``, ``web``, ``none`` or a host."""

    kind: str
    """'local', 'web', 'none' or 'host'."""
    host: str = ""
    port: int = 0
    trx: bool = False
    """Send what trx-rx plays (it never reports back, so answering is 'unconfirmed')."""
    port_given: bool = field(default=True, compare=False)
    """False for a bare name: shown without the port (an announced receiver has its own)."""

    @property
    def word(self) -> str:
        if self.kind != "host":
            return self.kind
        host = f"[{self.host}]" if ":" in self.host else self.host
        return ("trx:" if self.trx else "") + (f"{host}:{self.port}" if self.port_given
                                                else host)


def parse_target(word: str, default_port: int) -> Target:
    text = word.strip()
    if text.lower() in KEYWORDS:
        return Target(text.lower())
    trx = False
    if text.lower().startswith("trx:"):
        trx, text = True, text[4:]
    if not text or text.startswith(":"):
        raise EndpointError(f"bad destination {word!r}: give local, web, none or HOST[:PORT]")
    host, port = parse_hostport(text, 0)
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise EndpointError(f"bad host name in {word!r}: give local, web, none or "
                            "HOST[:PORT]")
    return Target("host", host, port or default_port, trx, port_given=bool(port))


def parse_targets(words: list[str], default_port: int) -> list[Target]:
    """The targets of one ``route`` command, checked and without duplicates.

    ``none`` and ``local``/``web`` are exclusive with nothing else except that ``none`` must
    stand alone; several hosts (and ``local``/``web`` besides them) may be combined.
    """
    if not words:
        raise EndpointError("say where to: local, web, none or HOST[:PORT]")
    targets: list[Target] = []
    for word in words:
        t = parse_target(word, default_port)
        if t not in targets:
            targets.append(t)
    if any(t.kind == "none" for t in targets) and len(targets) > 1:
        raise EndpointError("'none' turns every destination off: give it alone")
    return targets
