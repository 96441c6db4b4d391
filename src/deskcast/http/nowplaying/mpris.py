"""Now playing from the desktop's media players: MPRIS over the D-Bus session bus (jeepney).

Every ``interval_s`` the bus is asked which ``org.mpris.MediaPlayer2.*`` players exist; the first
one (by name) whose ``PlaybackStatus`` is ``Playing`` gives ``xesam:artist`` and ``xesam:title``.
Only a change of what MPRIS reports is passed on, so a title set through the API stays until a
player starts another track. Polling (not signals) keeps it simple and survives players that
come and go. Without a session bus this says so once and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from deskcast.http.nowplaying.track import NowPlaying

logger = logging.getLogger(__name__)

PREFIX = "org.mpris.MediaPlayer2."
PATH = "/org/mpris/MediaPlayer2"
PLAYER = "org.mpris.MediaPlayer2.Player"
POLL_S = 2.0
"""Seconds between looks at the players (2 s: a track change shows up quickly, costs nothing)."""
CALL_TIMEOUT_S = 2.0
"""A player that does not answer within this is skipped (a hung player must not stall us)."""


def track_from_metadata(metadata: Mapping[str, Any]) -> tuple[str, str]:
    """(artist, title) from an MPRIS ``Metadata`` dict of D-Bus variants ``(signature, value)``.

    ``xesam:artist`` is a list of names (joined with ", "); missing or odd values give "".
    """
    def value(key: str) -> Any:
        item = metadata.get(key)
        return item[1] if isinstance(item, tuple) and len(item) == 2 else None

    artist = value("xesam:artist")
    if isinstance(artist, list):
        artist = ", ".join(a for a in artist if isinstance(a, str))
    title = value("xesam:title")
    return (artist if isinstance(artist, str) else "",
            title if isinstance(title, str) else "")


async def poll_mpris(now: NowPlaying, stop: asyncio.Event, *, bus: str = "SESSION",
                     interval_s: float = POLL_S) -> None:
    """Follow the playing MPRIS player until ``stop`` is set."""
    from jeepney import DBusAddress, MessageType, Properties  # type: ignore[import-untyped]
    from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
    from jeepney.io.asyncio import (  # type: ignore[import-untyped]
        RouterClosed,
        open_dbus_router,
    )

    try:
        router_cm = open_dbus_router(bus)
        router = await router_cm.__aenter__()
    except KeyError:
        logger.info("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set): media players' "
                    "titles (MPRIS) are not read; set titles with `deskcast meta` instead")
        return
    except (OSError, ValueError, RuntimeError) as err:
        logger.warning("cannot reach the D-Bus session bus (%s): media players' titles (MPRIS) "
                       "are not read", err)
        return

    async def call(message: Any) -> Any:
        reply = await asyncio.wait_for(router.send_and_get_reply(message), CALL_TIMEOUT_S)
        if reply.header.message_type is MessageType.error:
            return None
        return reply.body[0]

    last: tuple[str, str] | None = None
    last_error = ""
    try:
        while not stop.is_set():
            try:
                names = await call(message_bus.ListNames()) or []
                found: tuple[str, str, str] | None = None
                for name in sorted(n for n in names if n.startswith(PREFIX)):
                    props = Properties(DBusAddress(PATH, bus_name=name, interface=PLAYER))
                    try:
                        status = await call(props.get("PlaybackStatus"))
                        if status is None or status[1] != "Playing":
                            continue
                        metadata = await call(props.get("Metadata"))
                    except TimeoutError:
                        continue
                    if metadata is not None and isinstance(metadata[1], dict):
                        artist, title = track_from_metadata(metadata[1])
                        if artist or title:
                            found = (artist, title, name[len(PREFIX):])
                            break
                if found is not None and found[:2] != last:
                    last = found[:2]
                    now.set(found[0], found[1], f"mpris:{found[2]}")
                last_error = ""
            except (asyncio.CancelledError, RouterClosed):
                raise
            except Exception as err:  # the bus or a player misbehaving: keep polling
                text = f"{type(err).__name__}: {err}"
                if text != last_error:
                    logger.warning("MPRIS: %s (retrying every %g s)", text, interval_s)
                    last_error = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    except RouterClosed:
        logger.warning("MPRIS: the D-Bus session bus went away; media players' titles are no "
                       "longer read")
    finally:
        await router_cm.__aexit__(None, None, None)
