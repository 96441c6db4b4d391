"""Relays: serve's encoded streams passed on elsewhere, as internal consumers of
:meth:`Server.subscribe` — to an Icecast server (:mod:`.icecast`), to an HLS folder
(:mod:`.hls`).

A relay is one of serve's background tasks (:func:`deskcast.http.app.make_app` runs
:meth:`Relay.relay` while the application runs) and has its own section in ``/api/status``.
A new destination is a new module here with a class that fits :class:`Relay`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from deskcast.http.server import Server


class Relay(Protocol):
    name: str
    """Its section in ``/api/status``."""

    def status(self) -> dict[str, Any]:
        """What ``/api/status`` shows of it (no secrets)."""
        ...

    async def relay(self, server: Server, stopping: asyncio.Event) -> None:
        """Pass ``server``'s stream on until cancelled (``stopping`` is set first)."""
        ...
