"""`deskcast serve`: Ogg/Opus for late joiners, and one encoder per format that runs only while
somebody listens (or always, with --always-on)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from deskcast.encode.mp3 import split_frames
from deskcast.encode.ogg import parse_pages
from rig.signals import dominant_frequency, level_db

from .conftest import Cli, finish, wait_for_line
from .test_serve import decode, free_tcp_port, read_stream

TOKEN = "formats-test-token-0123456789"


def ffmpeg_decode_ogg(data: bytes) -> npt.NDArray[np.float64]:
    out = subprocess.run(["ffmpeg", "-v", "error", "-f", "ogg", "-i", "pipe:0", "-f", "f32le",
                          "-ac", "2", "-ar", "48000", "pipe:1"], input=data,
                         capture_output=True, check=True, timeout=30)
    return np.frombuffer(out.stdout, dtype=np.float32).reshape(-1, 2).astype(np.float64)


def status(base: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        urllib.request.urlopen(f"{base}/api/status", timeout=5).read())
    return result


def read(url: str, seconds: float) -> dict[str, object]:
    out: dict[str, object] = {}
    read_stream(url, seconds, out)
    return out


def test_late_opus_listener_gets_headers_then_whole_pages_that_ffmpeg_decodes(
        cli: Cli) -> None:
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "11", "--always-on", "--token", TOKEN)
    wait_for_line(server, "serving")
    base = f"http://127.0.0.1:{port}"
    head = urllib.request.urlopen(urllib.request.Request(f"{base}/stream.opus", method="HEAD"),
                                  timeout=5)
    set_title = urllib.request.Request(
        f"{base}/api/metadata", method="POST", data=json.dumps(
            {"artist": "Ogg Artist", "title": "Ogg Title \u00e9"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}"})
    urllib.request.urlopen(set_title, timeout=5).close()
    time.sleep(4.0)  # the stream has been running for a while: this listener joins late
    got = read(f"{base}/stream.opus", 3.0)
    st = status(base)
    code, err = finish(server, timeout=20)
    assert code == 0, err

    headers = got["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Type"] == "audio/ogg"
    assert head.headers["Content-Type"] == "audio/ogg" and head.read() == b""
    assert "no-cache" in headers["Cache-Control"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "icy-metaint" not in {k.lower() for k in headers}  # no ICY blocks inside Ogg
    data = got["data"]
    assert isinstance(data, bytes)
    pages, _tail = parse_pages(data)  # every checksum verified
    assert pages[0].bos and pages[0].packets[0][:8] == b"OpusHead"
    assert pages[1].packets[0][:8] == b"OpusTags"
    assert {p.serial for p in pages} == {pages[0].serial}
    audio = pages[2:]
    assert all(p.complete_last for p in audio)
    # Joined ~4 s in, minus the 2 s burst: the first audio page is well past the start.
    assert audio[0].granule >= 1.5 * 48000
    assert audio[0].sequence > 2
    assert [p.sequence for p in audio] == list(range(audio[0].sequence,
                                                     audio[0].sequence + len(audio)))
    assert (audio[-1].granule - audio[0].granule) / 48000 >= 4.0  # burst + 3 s, never held up
    x = ffmpeg_decode_ogg(data)
    assert 4.3 <= len(x) / 48000 <= 5.8, len(x) / 48000
    assert dominant_frequency(x[4800:], 48000) == pytest.approx(1000.0, abs=2.0)
    assert level_db(x[4800:]) == pytest.approx(-15.0, abs=1.5)
    probe = subprocess.run(["ffprobe", "-v", "error", "-f", "ogg", "-show_entries",
                            "stream=codec_name,sample_rate,channels:stream_tags", "-of", "json",
                            "pipe:0"], input=data, capture_output=True, check=True, timeout=30)
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream == {"codec_name": "opus", "sample_rate": "48000", "channels": 2,
                      "tags": {"ARTIST": "Ogg Artist", "TITLE": "Ogg Title \u00e9"}}
    assert st["formats"]["opus"]["encoder"] == "running"
    assert st["formats"]["mp3"]["encoder"] == "running"  # --always-on


def test_encoders_run_only_while_listened_to_and_restart_cleanly(cli: Cli) -> None:
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "16", "--idle-stop-s", "0.5")
    wait_for_line(server, "serving")
    base = f"http://127.0.0.1:{port}"
    idle = status(base)
    during: dict[str, Any] = {}

    def peek() -> None:
        time.sleep(1.0)
        during.update(status(base))

    observer = threading.Thread(target=peek)
    observer.start()
    first = read(f"{base}/stream.opus", 2.0)
    observer.join()
    time.sleep(1.5)
    after = status(base)
    second = read(f"{base}/stream.opus", 2.0)
    mp3 = read(f"{base}/stream.mp3", 2.0)
    time.sleep(1.5)
    mp3_again = read(f"{base}/stream.mp3", 2.0)
    time.sleep(1.5)
    end = status(base)
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(f"{base}/stream.flac", timeout=5)
    code, err = finish(server, timeout=20)
    assert code == 0, err

    assert unknown.value.code == 404
    assert "/stream.mp3, /stream.opus, /stream.aac" in unknown.value.read().decode()
    assert {f: idle["formats"][f]["encoder"] for f in ("mp3", "opus", "aac")} == \
        {"mp3": "stopped", "opus": "stopped", "aac": "stopped"}
    assert end["formats"]["aac"]["encoder_starts"] == 0  # nobody listened to it
    assert during["formats"]["opus"]["encoder"] == "running"
    assert during["formats"]["opus"]["listeners"] == 1
    assert during["formats"]["mp3"]["encoder"] == "stopped"
    assert after["formats"]["opus"]["encoder"] == "stopped"
    assert end["formats"]["opus"]["encoder_starts"] == 2
    assert end["formats"]["mp3"]["encoder_starts"] == 2
    assert end["formats"]["mp3"]["encoder"] == "stopped"
    assert end["formats"]["opus"]["sent_bytes"] > 2 * 20000
    assert 'deskcast_encoder_running{format="opus"} 0' in metrics
    assert 'deskcast_encoder_starts_total{format="mp3"} 2' in metrics

    # Even the listener who starts an encoder gets a burst: the audio thread keeps the last
    # burst's worth of PCM and a fresh encoder encodes it first (2 s Opus, 1 s MP3; the very
    # first listener came too soon after start for a whole one).
    serials = []
    for got, least_s in ((first, 1.5), (second, 2.0 + 1.6)):
        data = got["data"]
        assert isinstance(data, bytes)
        pages, _ = parse_pages(data)
        assert pages[0].bos
        assert pages[2].granule == 960 * 5  # a fresh stream starts at zero
        serials.append(pages[0].serial)
        x = ffmpeg_decode_ogg(data)
        assert len(x) / 48000 >= least_s
        assert dominant_frequency(x[4800:], 48000) == pytest.approx(1000.0, abs=2.0)
    assert serials[0] != serials[1]
    for got, least_s in ((mp3, 1.0 + 1.6), (mp3_again, 1.0 + 1.6)):
        data = got["data"]
        assert isinstance(data, bytes)
        frames, _ = split_frames(data)
        assert len(frames) * 1152 / 48000 >= least_s
        x = decode(b"".join(frames))
        assert dominant_frequency(x[2000:], 48000) == pytest.approx(1000.0, abs=2.0)
