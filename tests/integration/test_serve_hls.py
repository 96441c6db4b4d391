"""`deskcast serve`: AAC at /stream.aac (what Safari and iOS play over HTTP) and HLS written to a
folder with --hls, both decoded by ffmpeg at the tone's pitch."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from deskcast.encode.aac import parse_adts_header, split_adts
from rig.signals import dominant_frequency

from .conftest import Cli, finish, one_error_line, wait_for_line
from .test_serve import free_tcp_port, read_stream


def ffmpeg_decode(*args: str, data: bytes = b"") -> npt.NDArray[np.float64]:
    out = subprocess.run(["ffmpeg", "-v", "error", *args, "-f", "f32le", "-ac", "2", "-ar",
                          "48000", "pipe:1"], input=data, capture_output=True, check=True,
                         timeout=30)
    return np.frombuffer(out.stdout, dtype=np.float32).reshape(-1, 2).astype(np.float64)


def test_aac_stream_and_hls_folder_decode_to_the_tone(cli: Cli, tmp_path: Path) -> None:
    port = free_tcp_port()
    folder = tmp_path / "hls"
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "8", "--hls", str(folder), "--hls-segment-s", "1")
    wait_for_line(server, "serving")
    base = f"http://127.0.0.1:{port}"
    time.sleep(1.0)
    got: dict[str, object] = {}
    read_stream(f"{base}/stream.aac", 2.5, got)
    status = json.loads(urllib.request.urlopen(f"{base}/api/status", timeout=5).read())
    deadline = time.monotonic() + 6
    while not (folder / "index.m3u8").exists() or \
            (folder / "index.m3u8").read_text().count("#EXTINF") < 3:
        assert time.monotonic() < deadline, "no HLS playlist with 3 segments"
        time.sleep(0.2)
    live = ffmpeg_decode("-live_start_index", "0", "-i", str(folder / "index.m3u8"),
                         "-t", "2.5")
    code, err = finish(server, timeout=20)
    assert code == 0, err

    headers = got["headers"]
    assert isinstance(headers, dict) and headers["Content-Type"] == "audio/aac"
    data = got["data"]
    assert isinstance(data, bytes)
    frames, tail = split_adts(data)
    assert b"".join(frames) + tail == data  # nothing but whole ADTS frames from the first byte
    assert parse_adts_header(frames[0]).sample_rate == 48000
    heard = ffmpeg_decode("-f", "aac", "-i", "pipe:0", data=data)
    assert len(heard) >= 2.0 * 48000  # the ~1 s burst and then live
    assert dominant_frequency(heard[4800:], 48000) == pytest.approx(1000.0, abs=2.0)
    assert status["hls"]["segments_written"] >= 1 and "aac" in status["formats"]

    assert len(live) == pytest.approx(2.5 * 48000, abs=4800)
    assert dominant_frequency(live[4800:], 48000) == pytest.approx(1000.0, abs=2.0)
    playlist = (folder / "index.m3u8").read_text()
    assert playlist.endswith("#EXT-X-ENDLIST\n")  # serve stopped: the list is closed
    assert "#EXT-X-TARGETDURATION:1\n" in playlist


def test_hls_folder_that_cannot_be_written_is_a_one_line_error(cli: Cli,
                                                               tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = one_error_line(cli.run("serve", "-s", "tone:1000", "--listen",
                                  f"127.0.0.1:{free_tcp_port()}", "-t", "1",
                                  "--hls", str(blocker / "hls")))
    assert "--hls" in line and "cannot write there" in line
