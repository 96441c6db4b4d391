"""What is playing now, and where it is learnt: :mod:`.track` (the current track, and what
``POST /api/metadata`` takes), :mod:`.tracker` (a polled song-tracker URL), :mod:`.mpris`
(the desktop's media players over D-Bus). A new source of titles is a module here that calls
:meth:`NowPlaying.set`."""

from deskcast.http.nowplaying.track import (
    NowPlaying,
    Track,
    parse_metadata,
    split_artist_title,
)

__all__ = ["NowPlaying", "Track", "parse_metadata", "split_artist_title"]
