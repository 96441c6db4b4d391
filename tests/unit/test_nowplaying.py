"""Now-playing state, the metadata API's body rules and the song tracker's field mapping, the
poller against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from deskcast.http.nowplaying.track import (
    MAX_FIELD_CHARS,
    NowPlaying,
    Track,
    clean,
    parse_metadata,
    split_artist_title,
)
from deskcast.http.nowplaying.tracker import from_tracker, lookup, parse_field_map, poll_tracker


def test_watchers_called_only_on_change() -> None:
    now = NowPlaying()
    seen: list[Track] = []
    stop = now.watch(seen.append)
    assert now.set("A", "B", "api")
    assert not now.set(" A ", "B\n", "api")  # same after cleaning
    assert now.set("", "C", "tracker")
    stop()
    now.set("D", "E", "api")
    assert [t.text for t in seen] == ["A - B", "C"]
    assert now.track.as_dict()["text"] == "D - E"


def test_a_failing_watcher_does_not_stop_the_others() -> None:
    now = NowPlaying()
    seen: list[str] = []

    def broken(track: Track) -> None:
        raise RuntimeError("bug")

    now.watch(broken)
    now.watch(lambda t: seen.append(t.text))
    now.set("", "x", "api")
    assert seen == ["x"]


def test_clean_and_split() -> None:
    assert clean("a\tb\x00c\n d") == "a b c d"
    assert len(clean("x" * 10000)) == MAX_FIELD_CHARS
    assert split_artist_title("Artist - Title - Remix") == ("Artist", "Title - Remix")
    assert split_artist_title("Just a title") == ("", "Just a title")


@pytest.mark.parametrize(("body", "expected"), [
    ({"title": "A - B"}, ("A", "B")),
    ({"artist": "A", "title": "B - C"}, ("A", "B - C")),
    ({"title": ""}, ("", "")),
])
def test_metadata_bodies(body: Any, expected: tuple[str, str]) -> None:
    assert parse_metadata(body) == expected


@pytest.mark.parametrize(("body", "message"), [
    ([1], "JSON object"),
    ("x", "JSON object"),
    ({"artist": "A"}, "missing"),
    ({"title": 5}, "must be a string"),
    ({"title": "x", "album": "y"}, "unknown field"),
])
def test_bad_metadata_bodies(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_metadata(body)


def test_lookup_and_field_maps() -> None:
    data = {"now": {"song": {"artist": "A", "title": "T", "n": 3}}, "items": [{"name": "x"}],
            "flag": True, "nothing": None}
    assert lookup(data, "now.song.title") == "T"
    assert lookup(data, "now.song.n") == "3"
    assert lookup(data, "items.0.name") == "x"
    assert lookup(data, "items.1.name") == ""
    assert lookup(data, "now.song") == ""  # not a scalar
    assert lookup(data, "flag") == "" and lookup(data, "nothing") == ""
    assert parse_field_map("artist,title") == ("artist", "title")
    assert parse_field_map("now.title") == ("", "now.title")
    for bad in ("", "a,", "a,b,c"):
        with pytest.raises(ValueError, match="tracker-title-field"):
            parse_field_map(bad)
    assert from_tracker(data, ("now.song.artist", "now.song.title")) == ("A", "T")


class _Tracker(BaseHTTPRequestHandler):
    answers: ClassVar[list[bytes]] = []

    def do_GET(self) -> None:
        body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.send_response(200 if body != b"500" else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[tuple[str, type[_Tracker]]]:
    handler = type("Tracker", (_Tracker,), {"answers": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/now.json", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_poller_follows_the_tracker_and_survives_bad_answers(
        tracker: tuple[str, type[_Tracker]], caplog: pytest.LogCaptureFixture) -> None:
    url, handler = tracker
    handler.answers = [
        json.dumps({"song": {"artist": "A", "title": "One"}}).encode(),
        b"not json",
        b"500",
        json.dumps({"song": {}}).encode(),
        json.dumps({"song": {"artist": "B", "title": "Two"}}).encode(),
    ]
    now = NowPlaying()
    seen: list[str] = []
    now.watch(lambda t: seen.append(t.text))

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(poll_tracker(now, url, ("song.artist", "song.title"), 0.05,
                                                stop))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if now.track.title == "Two":
                break
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    assert seen == ["A - One", "B - Two"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("HTTP 500" in w for w in warnings)
    assert any("no value at song.artist,song.title" in w for w in warnings)
