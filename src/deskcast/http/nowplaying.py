"""What is playing now, from whoever knows: ``POST /api/metadata``, ``deskcast meta``, or a
polled "song tracker" URL returning JSON.

:class:`NowPlaying` holds the current :class:`Track` and calls its watchers on every change (the
ICY inserter, server-sent events and an Icecast push read it from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MAX_FIELD_CHARS = 500
"""Longer artist or title strings are cut: nobody reads more, and ICY blocks hold ~4 KB."""


@dataclass(frozen=True)
class Track:
    artist: str = ""
    title: str = ""
    source: str = ""
    """Who said so: "api", "tracker", …"""
    since: float = field(default_factory=time.time)
    """Unix time of the change."""

    @property
    def text(self) -> str:
        """``Artist - Title``, or whichever of them is set, or ""."""
        return " - ".join(x for x in (self.artist, self.title) if x)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


Watcher = Callable[[Track], None]


class NowPlaying:
    """The current track; watchers are called (on the loop thread) when it changes."""

    def __init__(self) -> None:
        self.track = Track(since=0.0)
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher(track)`` on every change; returns a function that stops it."""
        self._watchers.append(watcher)

        def unwatch() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)
        return unwatch

    def set(self, artist: str, title: str, source: str) -> bool:
        """Set the track; False (and nobody called) when nothing changed."""
        artist, title = clean(artist), clean(title)
        if (artist, title) == (self.track.artist, self.track.title):
            return False
        self.track = Track(artist, title, source)
        logger.info("now playing: %s (from %s)", self.track.text or "(nothing)", source)
        for watcher in list(self._watchers):
            try:
                watcher(self.track)
            except Exception:
                logger.exception("now-playing watcher failed")
        return True


def clean(text: str) -> str:
    """One line of printable text, at most MAX_FIELD_CHARS characters."""
    one = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return one[:MAX_FIELD_CHARS]


def split_artist_title(text: str) -> tuple[str, str]:
    """``"Artist - Title"`` -> (artist, title); without " - " it is all title."""
    artist, sep, title = text.partition(" - ")
    return (artist.strip(), title.strip()) if sep else ("", text.strip())


def parse_metadata(body: Any) -> tuple[str, str]:
    """(artist, title) from a ``POST /api/metadata`` JSON body; ValueError says what is wrong.

    Accepted: ``{"title": "Artist - Title"}`` or ``{"artist": "…", "title": "…"}``.
    """
    if not isinstance(body, dict):
        raise ValueError('expected a JSON object like {"title": "Artist - Title"} or '
                         '{"artist": "...", "title": "..."}')
    unknown = set(body) - {"artist", "title"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}: use artist and title")
    for key in ("artist", "title"):
        if key in body and not isinstance(body[key], str):
            raise ValueError(f"{key} must be a string")
    if "title" not in body:
        raise ValueError('"title" is missing')
    if "artist" in body:
        return body["artist"], body["title"]
    return split_artist_title(body["title"])


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
