"""The hooks an internal consumer (e.g. an Icecast push) uses: ``Server.subscribe(fmt)`` keeps the
format's encoder running and yields header + whole pages/frames; ``Server.on_now_playing``."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from deskcast.capture import make_source
from deskcast.encode.mp3 import split_frames
from deskcast.encode.ogg import parse_pages
from deskcast.http.nowplaying import Track
from deskcast.http.server import Server
from deskcast.media import AudioFormat
from rig.signals import dominant_frequency

from .test_serve import decode
from .test_serve_formats import ffmpeg_decode_ogg


def test_subscribe_keeps_the_encoder_running_and_yields_whole_pages() -> None:
    fmt = AudioFormat()
    source = make_source("tone:1000", fmt, fmt.frames_for_ms(10))
    titles: list[Track] = []

    async def run() -> tuple[bytes, bytes, dict[str, object], dict[str, object]]:
        with source:
            server = Server(source, idle_stop_s=0)
            stop_watching = server.on_now_playing(titles.append)
            server.status_providers["extra"] = lambda: {"state": "fine"}
            server.start_audio(asyncio.get_running_loop())
            try:
                with pytest.raises(ValueError, match="mp3, opus, aac"):
                    await anext(aiter(server.subscribe("flac")))
                opus = bytearray()
                during: dict[str, object] = {}
                async with contextlib.aclosing(server.subscribe("opus")) as chunks:
                    async for data in chunks:
                        opus += data
                        if len(opus) > 30_000:
                            during = server.status_dict()
                            server.nowplaying.set("A", "B", "api")
                            break
                mp3 = bytearray()
                agen = server.subscribe("mp3")
                async for data in agen:
                    mp3 += data
                    if len(mp3) > 40_000:
                        break
                await agen.aclose()
                stop_watching()
                server.nowplaying.set("C", "D", "api")
                after = server.status_dict()
                return bytes(opus), bytes(mp3), during, after
            finally:
                server.stop_audio()

    opus, mp3, during, after = asyncio.run(run())
    formats = during["formats"]
    assert isinstance(formats, dict)
    assert formats["opus"]["encoder"] == "running" and formats["opus"]["internal"] == 1
    assert formats["opus"]["listeners"] == 0 and during["listeners"] == 0
    assert formats["mp3"]["encoder"] == "stopped"
    after_formats = after["formats"]
    assert isinstance(after_formats, dict)
    assert after_formats["opus"]["encoder"] == "stopped"  # released with idle_stop_s=0
    assert after_formats["mp3"]["encoder"] == "stopped"
    assert after_formats["opus"]["internal"] == 0
    assert [t.text for t in titles] == ["A - B"]
    assert after["extra"] == {"state": "fine"}

    pages, rest = parse_pages(opus)
    assert rest == b"" and pages[0].bos and pages[1].packets[0].startswith(b"OpusTags")
    x = ffmpeg_decode_ogg(opus)
    assert dominant_frequency(x[4800:], 48000) == pytest.approx(1000.0, abs=2.0)
    _frames, rest = split_frames(mp3)
    assert rest == b""  # whole frames only
    y = decode(mp3)
    assert np.isfinite(y).all()
    assert dominant_frequency(y[2000:], 48000) == pytest.approx(1000.0, abs=2.0)
