"""Now playing from a "song tracker": a URL returning JSON, polled, the artist and title read
at dotted paths (``--tracker-url``, ``--tracker-title-field``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from deskcast.http.nowplaying.track import NowPlaying

logger = logging.getLogger(__name__)


def lookup(data: Any, path: str) -> str:
    """The value at a dotted ``path`` (``now.song.title``, ``items.0.name``) as text, "" if absent
    or not a scalar."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return ""
    if isinstance(node, bool) or node is None or isinstance(node, dict | list):
        return ""
    return str(node)


def parse_field_map(spec: str) -> tuple[str, str]:
    """``"artist,title"`` -> (artist path, title path); one path means title only."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) == 1 and parts[0]:
        return "", parts[0]
    if len(parts) == 2 and parts[1]:
        return parts[0], parts[1]
    raise ValueError(f"--tracker-title-field {spec!r}: give TITLE_PATH or ARTIST_PATH,TITLE_PATH"
                     " (dotted paths into the JSON, e.g. now.artist,now.title)")


def from_tracker(data: Any, field_map: tuple[str, str]) -> tuple[str, str]:
    artist_path, title_path = field_map
    artist = lookup(data, artist_path) if artist_path else ""
    return artist, lookup(data, title_path)


async def poll_tracker(now: NowPlaying, url: str, field_map: tuple[str, str],
                       interval_s: float, stop: asyncio.Event) -> None:
    """Fetch ``url`` every ``interval_s`` and set what it says; errors are logged once per kind
    and polling goes on."""
    import aiohttp

    last_error = ""
    timeout = aiohttp.ClientTimeout(total=max(min(interval_s, 10.0), 1.0))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    if resp.content_length is not None and resp.content_length > 1 << 20:
                        raise ValueError("answer larger than 1 MB")
                    data = await resp.json(content_type=None)
                artist, title = from_tracker(data, field_map)
                if not (artist or title):
                    raise ValueError(f"no value at {','.join(p for p in field_map if p)}")
                now.set(artist, title, "tracker")
                last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as err:  # outside data: never stop polling for it
                text = f"{type(err).__name__}: {err}"
                if text != last_error:
                    logger.warning("song tracker %s: %s (retrying every %g s)", url, text,
                                   interval_s)
                    last_error = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
