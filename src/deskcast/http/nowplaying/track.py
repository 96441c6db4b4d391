"""The track playing now: :class:`NowPlaying` holds the current :class:`Track` and calls its
watchers on every change (the ICY inserter, server-sent events and an Icecast push read it from
there); what ``POST /api/metadata`` and ``deskcast meta`` send is checked here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
