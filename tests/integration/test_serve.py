"""`deskcast serve`: real HTTP listeners, the MP3 they get, and a listener that never reads."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from deskcast.encode.mp3 import side_info_main_data_begin, split_frames
from rig.signals import dominant_frequency, level_db

from .conftest import Cli, finish, wait_for_line


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_stream(url: str, seconds: float, out: dict[str, object]) -> None:
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as resp:
        out["headers"] = dict(resp.headers)
        data = bytearray()
        first = None
        while time.monotonic() - start < seconds:
            chunk = resp.read1(65536)
            if not chunk:
                break
            if first is None:
                first = time.monotonic() - start
            data += chunk
    out["data"] = bytes(data)
    out["ttfb_s"] = first


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), "r", format="mp3") as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
    return np.concatenate(frames, axis=1).T.astype(np.float64)


def test_listeners_get_self_contained_mp3_and_a_stuck_one_stalls_nobody(
        cli: Cli, tmp_path: Path) -> None:
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "7")
    wait_for_line(server, "serving")
    base = f"http://127.0.0.1:{port}"
    # A listener that connects and never reads a byte.
    stuck = socket.create_connection(("127.0.0.1", port))
    stuck.sendall(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    results: list[dict[str, object]] = [{} for _ in range(3)]
    readers = [threading.Thread(target=read_stream, args=(f"{base}/stream.mp3", 4.0, r))
               for r in results]
    for t in readers:
        t.start()
    for t in readers:
        t.join(20)
    status = json.loads(urllib.request.urlopen(f"{base}/api/status", timeout=5).read())
    with urllib.request.urlopen(f"{base}/", timeout=5) as resp:
        page = resp.read().decode()
        page_headers = dict(resp.headers)
    with urllib.request.urlopen(f"{base}/app.js", timeout=5) as resp:
        script = resp.read().decode()
        script_type = resp.headers["Content-Type"]
    stuck.close()
    code, err = finish(server, timeout=20)
    assert code == 0, err

    assert "<audio" in page and 'src="app.js"' in page and '"stream." + format.value' in script
    assert script_type.startswith("text/javascript")
    csp = {d.split()[0]: d.split()[1:] for d in
           page_headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"]
    assert "<script>" not in page and " style=" not in page  # nothing inline to allow
    assert page_headers["X-Content-Type-Options"] == "nosniff"
    assert page_headers["Referrer-Policy"] == "no-referrer"
    assert status["formats"]["mp3"]["bitrate_kbps"] == 128
    assert status["listeners_total"] >= 4
    for r in results:
        headers = r["headers"]
        assert isinstance(headers, dict)
        assert headers["Content-Type"] == "audio/mpeg"
        assert "no-cache" in headers["Cache-Control"]
        assert headers["Access-Control-Allow-Origin"] == "*"
        ttfb = r["ttfb_s"]
        assert isinstance(ttfb, float) and ttfb < 0.5
        data = r["data"]
        assert isinstance(data, bytes)
        frames, _rest = split_frames(data)
        # Burst (~1 s) + 4 s live, and nobody was held up by the stuck listener.
        audio_s = len(frames) * 1152 / 48000
        assert 4.0 <= audio_s <= 5.6, audio_s
        assert all(side_info_main_data_begin(f) == 0 for f in frames)
        # Any frame is a join point: decode from the middle.
        x = decode(b"".join(frames[len(frames) // 2:]))
        assert dominant_frequency(x[2000:], 48000) == pytest.approx(1000.0, abs=2.0)
        assert level_db(x[2000:]) == pytest.approx(-15.0, abs=1.0)


def test_hostile_clients_do_not_stall_the_stream(cli: Cli) -> None:
    """Garbage requests, a slowloris, HEAD, a connect/disconnect storm and too many listeners
    from one address: a well-behaved listener keeps getting real-time audio throughout."""
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "9", "--max-per-address", "6")
    wait_for_line(server, "serving")
    base = f"http://127.0.0.1:{port}"
    good: dict[str, object] = {}
    reader = threading.Thread(target=read_stream, args=(f"{base}/stream.mp3", 5.0, good))
    reader.start()
    hostile: list[socket.socket] = []
    try:
        head = urllib.request.urlopen(urllib.request.Request(f"{base}/stream.mp3",
                                                            method="HEAD"), timeout=3)
        assert head.headers["Content-Type"] == "audio/mpeg" and head.read() == b""
        for junk in (b"\x00\xff garbage\r\n\r\n", b"GET " + b"A" * 20000 + b" HTTP/1.1\r\n\r\n",
                     b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n"):  # the last never ends
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(junk)
            hostile.append(s)
        for _ in range(300):  # connect/disconnect storm
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
        extra: list[socket.socket] = []
        codes = []
        for _ in range(8):  # the good reader is 1 of the 6 allowed
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(3)
            codes.append(s.recv(12))
            extra.append(s)
        hostile += extra
        assert sum(c.startswith(b"HTTP/1.1 503") for c in codes) >= 3
        assert sum(c.startswith(b"HTTP/1.1 200") for c in codes) >= 1
    finally:
        reader.join(20)
        for s in hostile:
            s.close()
    code, err = finish(server, timeout=20)
    assert code == 0, err
    assert "Traceback" not in err
    data = good["data"]
    assert isinstance(data, bytes)
    frames, _rest = split_frames(data)
    assert len(frames) * 1152 / 48000 >= 5.0   # burst + 5 s live: never held up
    x = decode(b"".join(frames))
    assert dominant_frequency(x[2000:], 48000) == pytest.approx(1000.0, abs=2.0)
