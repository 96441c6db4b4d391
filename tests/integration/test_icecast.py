"""IcecastPush against a real, private icecast2: audio, titles, restarts, wrong passwords.

A 1 kHz tone (deskcast's tone source) is encoded by deskcast's Mp3Encoder at real time and
pushed with :class:`IcecastPush`; listeners fetch the mount from Icecast like any player, and
ffmpeg decodes what they got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from deskcast.backoff import Backoff
from deskcast.capture import make_source
from deskcast.capture.tone import ToneSource
from deskcast.encode.mp3 import Mp3Encoder, split_frames
from deskcast.http.relay.icecast import IcecastPush
from deskcast.media import AudioFormat
from rig.icecast import IcecastServer
from rig.signals import dominant_frequency, level_db

from .conftest import Cli, finish, wait_for_line

FMT = AudioFormat(48000, 2)
BLOCK_S = 0.1
TONE_RMS_DB = -15.0
"""The tone source's default level is -12 dBFS peak, i.e. -15 dBFS RMS for a sine."""


async def mp3_tone(freq: float = 1000.0) -> AsyncIterator[bytes]:
    """MP3 (128 kbit/s, reservoir off) of a tone at real time, in ~100 ms chunks of whole
    frames, forever."""
    source = make_source(f"tone:{freq:g}", FMT, FMT.frames_for_ms(BLOCK_S * 1000))
    assert isinstance(source, ToneSource)
    source.pacer = None  # paced here, without blocking the event loop
    encoder = Mp3Encoder(FMT, bitrate_kbps=128)
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while True:
        frames = encoder.encode(source.read())
        if frames:
            yield b"".join(frames)
        n += 1
        await asyncio.sleep(max(0.0, start + n * BLOCK_S - loop.time()))


def listen(url: str, seconds: float) -> bytes:
    """What a player gets from ``url`` in ``seconds`` (Icecast bursts on connect)."""
    data = bytearray()
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "audio/mpeg"
        while time.monotonic() - start < seconds:
            chunk = resp.read1(65536)
            if not chunk:
                break
            data += chunk
    return bytes(data)


def ffmpeg_decode(data: bytes) -> np.ndarray:
    """Decode MP3 bytes with ffmpeg to float64 (frames, 2) at 48 kHz (no remixing)."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "mp3", "-i", "pipe:0",
         "-f", "f32le", "-ac", "2", "-ar", "48000", "pipe:1"],
        input=data, capture_output=True, check=True, timeout=30)
    return np.frombuffer(out.stdout, dtype="<f4").astype(np.float64).reshape(-1, 2)


def assert_tone(data: bytes, min_seconds: float) -> None:
    frames, _ = split_frames(data)
    assert len(frames) * 1152 / 48000 >= min_seconds, f"only {len(frames)} MP3 frames"
    x = ffmpeg_decode(data)
    x = x[4800:]  # skip the decoder's start-up
    assert len(x) >= (min_seconds - 0.2) * 48000
    for channel in x.T:
        assert dominant_frequency(channel, 48000) == pytest.approx(1000.0, abs=1.0)
        assert level_db(channel) == pytest.approx(TONE_RMS_DB, abs=1.0)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def quick_push(url: str, **kwargs: object) -> IcecastPush:
    return IcecastPush(url, content_type="audio/mpeg", name="deskcast test",
                       description="1 kHz tone", bitrate_kbps=128, sample_rate=48000,
                       channels=2, backoff=Backoff(0.25, 1.0), **kwargs)  # type: ignore[arg-type]


def test_listeners_get_the_tone_and_the_title(icecast: IcecastServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deskcast.http.relay")
    mount = "/tone.mp3"
    push = quick_push(icecast.source_url(mount))

    async def scenario() -> tuple[bytes, dict[str, object]]:
        task = asyncio.create_task(push.run(mp3_tone()))
        try:
            await asyncio.to_thread(icecast.wait_source, mount)
            assert await push.set_title("Tone Artist – 1 kHz Ünïcode")
            await asyncio.sleep(1.0)  # live audio behind Icecast's burst
            data = await asyncio.to_thread(listen, icecast.listen_url(mount), 3.0)
            info = await asyncio.to_thread(icecast.source_info, mount)
            assert info is not None
            return data, info
        finally:
            await stop(task)

    data, info = asyncio.run(scenario())
    assert_tone(data, min_seconds=2.5)
    assert info["title"] == "Tone Artist – 1 kHz Ünïcode"
    assert info["server_name"] == "deskcast test"
    assert info["server_description"] == "1 kHz tone"
    assert info["server_type"] == "audio/mpeg"
    assert str(info["bitrate"]) == "128"
    status = push.status()
    assert status["state"] == "stopped"
    assert status["connects"] == 1 and status["reconnects"] == 0
    assert isinstance(status["bytes_sent"], int) and status["bytes_sent"] > 3 * 16000
    assert status["dropped_chunks"] == 0
    assert f"icecast: connected to 127.0.0.1:{icecast.port}{mount}" in caplog.messages
    assert icecast.source_password not in caplog.text


def test_push_reconnects_after_icecast_is_killed_and_restarted(
        icecast: IcecastServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deskcast.http.relay")
    mount = "/live.mp3"
    push = quick_push(icecast.source_url(mount))

    async def scenario() -> tuple[bytes, bytes, float]:
        task = asyncio.create_task(push.run(mp3_tone()))
        try:
            await asyncio.to_thread(icecast.wait_source, mount)
            await push.set_title("before the crash")
            before = await asyncio.to_thread(listen, icecast.listen_url(mount), 1.5)
            icecast.kill()
            await asyncio.sleep(1.5)  # a few failed reconnects while it is down
            assert push.status()["state"] != "connected"
            killed_at = time.monotonic()
            await asyncio.to_thread(icecast.start)
            await asyncio.to_thread(icecast.wait_source, mount, 8.0)
            back_s = time.monotonic() - killed_at
            await asyncio.sleep(0.5)
            after = await asyncio.to_thread(listen, icecast.listen_url(mount), 2.5)
            info = await asyncio.to_thread(icecast.source_info, mount)
            assert info is not None and info.get("title") == "before the crash"
            return before, after, back_s
        finally:
            await stop(task)

    before, after, back_s = asyncio.run(scenario())
    assert back_s < 5.0  # backoff capped at 1 s here
    assert_tone(before, min_seconds=1.0)
    assert_tone(after, min_seconds=2.0)
    status = push.status()
    assert status["reconnects"] == 1 and status["connects"] == 2
    assert status["attempts"] >= 3
    where = f"127.0.0.1:{icecast.port}{mount}"
    assert caplog.messages.count(f"icecast: connected to {where}") == 2
    lost = [m for m in caplog.messages if "connection lost" in m or "cannot connect" in m]
    assert lost and all("retrying in" in m for m in lost)
    # One line per change of state, not one per retry.
    assert len([m for m in caplog.messages if "cannot connect" in m]) <= 1


def test_wrong_password_is_named_and_retried_without_crashing(
        icecast: IcecastServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="deskcast.http.relay")
    mount = "/secret.mp3"
    push = quick_push(icecast.source_url(mount, password="not-the-password"))

    async def scenario() -> None:
        task = asyncio.create_task(push.run(mp3_tone()))
        await asyncio.sleep(2.5)
        assert not task.done()
        await stop(task)

    asyncio.run(scenario())
    status = push.status()
    assert status["attempts"] >= 3 and status["connects"] == 0
    assert "401" in str(status["last_error"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("icecast: refused (401: wrong source password?")
    assert "retrying in" in warnings[0]
    assert "not-the-password" not in caplog.text
    assert icecast.source_info(mount) is None


def test_a_busy_mount_is_named(icecast: IcecastServer,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deskcast.http.relay")
    mount = "/busy.mp3"
    first = quick_push(icecast.source_url(mount))
    second = quick_push(icecast.source_url(mount))

    async def scenario() -> None:
        a = asyncio.create_task(first.run(mp3_tone()))
        await asyncio.to_thread(icecast.wait_source, mount)
        b = asyncio.create_task(second.run(mp3_tone()))
        await asyncio.sleep(1.0)
        assert first.status()["state"] == "connected"
        assert second.status()["state"] != "connected"
        # The first source leaves: the second takes the mount over by itself.
        await stop(a)
        for _ in range(60):
            if second.status()["state"] == "connected":
                break
            await asyncio.sleep(0.1)
        assert second.status()["state"] == "connected"
        await stop(b)

    asyncio.run(scenario())
    assert any(m.startswith(f"icecast: mount {mount} is already in use by another source")
               for m in caplog.messages)


# -- serve's hook: Server.subscribe(fmt) feeding IcecastPush ---------------------------------


def ffmpeg_decode_any(data: bytes, fmt: str) -> np.ndarray:
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", fmt, "-i", "pipe:0",
         "-f", "f32le", "-ac", "2", "-ar", "48000", "pipe:1"],
        input=data, capture_output=True, check=True, timeout=30)
    return np.frombuffer(out.stdout, dtype="<f4").astype(np.float64).reshape(-1, 2)


def listen_any(url: str, seconds: float) -> tuple[str, bytes]:
    data = bytearray()
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as resp:
        ctype = str(resp.headers["Content-Type"])
        while time.monotonic() - start < seconds:
            chunk = resp.read1(65536)
            if not chunk:
                break
            data += chunk
    return ctype, bytes(data)


@pytest.mark.parametrize(("fmt", "ctype", "demux"), [("mp3", "audio/mpeg", "mp3"),
                                                     ("opus", "audio/ogg", "ogg")])
def test_serve_streams_reach_icecast_through_subscribe_and_survive_a_restart(
        icecast: IcecastServer, fmt: str, ctype: str, demux: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """What ``serve --icecast URL`` does: each connection opens a fresh
    ``Server.subscribe(fmt)`` (so Ogg header pages start every connection)."""
    from deskcast.http.app import serve
    from deskcast.http.server import Server

    caplog.set_level(logging.INFO, logger="deskcast.http.relay")

    mount = f"/desk.{fmt}"
    source = make_source("tone:1000", FMT, FMT.frames_for_ms(20))
    server = Server(source, bitrate_kbps=128)
    push = IcecastPush(icecast.source_url(mount), content_type=ctype, name="deskcast",
                       bitrate_kbps=server.bitrates[fmt], sample_rate=48000, channels=2,
                       backoff=Backoff(0.25, 1.0))

    server.status_providers["icecast"] = push.status

    async def scenario() -> tuple[bytes, bytes]:
        stop = asyncio.Event()
        port = _free_port()
        runner = asyncio.create_task(serve(
            server, "127.0.0.1", port, stop,
            tasks=[lambda _stop: push.run(lambda: server.subscribe(fmt))]))
        try:
            await asyncio.to_thread(icecast.wait_source, mount)
            await asyncio.sleep(0.5)
            api = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{port}/api/status")
            assert api["icecast"]["state"] == "connected"
            assert api["icecast"]["url"] == f"icecast://127.0.0.1:{icecast.port}{mount}"
            assert icecast.source_password not in json.dumps(api)
            got, before = await asyncio.to_thread(listen_any, icecast.listen_url(mount), 2.5)
            assert got == ctype
            icecast.kill()
            await asyncio.sleep(1.0)
            await asyncio.to_thread(icecast.start)
            await asyncio.to_thread(icecast.wait_source, mount, 8.0)
            await asyncio.sleep(0.5)
            _, after = await asyncio.to_thread(listen_any, icecast.listen_url(mount), 2.5)
            return before, after
        finally:
            stop.set()
            await asyncio.wait_for(runner, 10)

    with source:
        before, after = asyncio.run(scenario())
    for data in (before, after):
        x = ffmpeg_decode_any(data, demux)[4800:]
        assert len(x) >= 1.5 * 48000
        for channel in x.T:
            assert dominant_frequency(channel, 48000) == pytest.approx(1000.0, abs=1.0)
            assert level_db(channel) == pytest.approx(TONE_RMS_DB, abs=1.0)
    if fmt == "opus":
        assert before.startswith(b"OggS") and b"OpusHead" in before[:200]
        assert after.startswith(b"OggS") and b"OpusHead" in after[:200]
    assert push.status()["reconnects"] == 1


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_icecast_option_pushes_the_stream_and_the_title(cli: Cli,
                                                             icecast: IcecastServer) -> None:
    """The real command: `serve --icecast URL` pushes its MP3 to a real icecast2, a listener
    there hears the tone, `deskcast meta` titles reach Icecast, the password never shows."""
    port = _free_port()
    mount = "/cli.mp3"
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "--icecast", icecast.source_url(mount), "--token", "icecast-cli-token",
                       "-t", "12")
    try:
        wait_for_line(server, "icecast: connected to", timeout=10)
        icecast.wait_source(mount, 5)
        meta = cli.run("meta", "Band - Song", "--server", f"http://127.0.0.1:{port}",
                       "--token", "icecast-cli-token")
        data = listen(icecast.listen_url(mount), 3.0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "Song" not in json.dumps(icecast.status()):
            time.sleep(0.2)
        titled = json.dumps(icecast.status())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
            status = json.loads(r.read())
    finally:
        code, err = finish(server, timeout=20)
    assert code == 0, err
    assert meta.returncode == 0, meta.stderr.decode()
    assert_tone(data, min_seconds=2.5)
    assert "Band - Song" in titled
    assert status["icecast"]["state"] == "connected"
    assert icecast.source_password not in json.dumps(status)
    assert icecast.source_password not in err
