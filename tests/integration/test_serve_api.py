"""`deskcast serve`'s metadata: POST /api/metadata and `deskcast meta` with a token, ICY titles
inside the MP3 stream, a polled song tracker, /api/events (server-sent events) and /metrics."""

from __future__ import annotations

import itertools
import json
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from deskcast.encode.mp3 import side_info_main_data_begin, split_frames
from deskcast.http.icy import split_icy
from rig.signals import dominant_frequency

from .conftest import Cli, finish, wait_for_line
from .test_serve import decode, free_tcp_port

TOKEN = "integration-test-token-42"
METRIC_LINE = re.compile(r'^(deskcast_[a-z_]+)(\{format="(mp3|opus|aac)"\})? (-?[0-9.e+]+)$')


def post(base: str, body: bytes, token: str | None = TOKEN,
         content_type: str = "application/json") -> tuple[int, str]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}/api/metadata", data=body, method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def status(base: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        urllib.request.urlopen(f"{base}/api/status", timeout=5).read())
    return result


def start(cli: Cli, port: int, *args: str) -> Any:
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}", *args)
    wait_for_line(server, "serving")
    return server


def test_icy_titles_arrive_in_the_mp3_stream_and_the_audio_between_them_decodes(
        cli: Cli) -> None:
    port = free_tcp_port()
    server = start(cli, port, "-t", "10", "--token", TOKEN, "--icy-metaint", "4000",
                   "--stream-name", "Test Radio")
    base = f"http://127.0.0.1:{port}"
    assert post(base, json.dumps({"title": "First Artist - First Song"}).encode())[0] == 200
    got: dict[str, Any] = {}

    def listen() -> None:
        request = urllib.request.Request(f"{base}/stream.mp3", headers={"Icy-MetaData": "1"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            got["headers"] = dict(resp.headers)
            data = bytearray()
            start_t = time.monotonic()
            while time.monotonic() - start_t < 4.0:
                data += resp.read1(65536)
            got["data"] = bytes(data)

    reader = threading.Thread(target=listen)
    reader.start()
    time.sleep(2.0)
    code, answer = post(base, json.dumps({"artist": "Second", "title": "It's new"}).encode())
    reader.join(20)
    plain: dict[str, Any] = {}
    with urllib.request.urlopen(f"{base}/stream.mp3", timeout=5) as resp:
        plain["headers"] = dict(resp.headers)
        plain["data"] = resp.read(20000)
    code_end, err = finish(server, timeout=20)
    assert code_end == 0, err

    assert code == 200 and json.loads(answer)["now_playing"]["text"] == "Second - It's new"
    headers = got["headers"]
    assert headers["icy-metaint"] == "4000"
    assert headers["icy-name"] == "Test Radio" and headers["icy-br"] == "128"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "no-cache" in headers["Cache-Control"]
    audio, blocks = split_icy(got["data"], 4000)
    assert len(blocks) >= 10
    titles = [b.title for b in blocks if b.title is not None]
    assert titles == ["First Artist - First Song", "Second - It\u2019s new"]
    assert blocks[0].title == "First Artist - First Song"  # at once, in the first block
    frames, _ = split_frames(audio)
    assert len(frames) * 1152 / 48000 >= 3.5
    assert all(side_info_main_data_begin(f) == 0 for f in frames)
    x = decode(b"".join(frames))
    assert dominant_frequency(x[2000:], 48000) == pytest.approx(1000.0, abs=2.0)
    # Without Icy-MetaData: plain MP3, no metaint.
    assert "icy-metaint" not in plain["headers"]
    frames, _ = split_frames(plain["data"])
    assert len(b"".join(frames)) >= len(plain["data"]) - 1000


def test_bad_metadata_requests_get_one_line_errors_and_the_stream_goes_on(cli: Cli) -> None:
    port = free_tcp_port()
    server = start(cli, port, "-t", "8", "--token", TOKEN)
    base = f"http://127.0.0.1:{port}"
    results = {
        "no token": post(base, b'{"title": "x"}', token=None),
        "wrong token": post(base, b'{"title": "x"}', token="wrong-token-wrong-token"),
        "bad json": post(base, b'{"title": '),
        "not utf-8": post(base, b'\xff\xfe'),
        "list": post(base, b'["x"]'),
        "unknown field": post(base, b'{"title": "x", "year": 1999}'),
        "huge": post(base, b'{"title": "' + b"x" * 100_000 + b'"}'),
    }
    # a huge body without Content-Length (chunked) is refused too
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST /api/metadata HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(40):
                s.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may hang up first
        s.settimeout(5)
        chunked = s.recv(100)
    ok = post(base, b'{"title": "Fine - Title"}')
    st = status(base)
    with urllib.request.urlopen(f"{base}/stream.mp3", timeout=5) as resp:
        frames, _ = split_frames(resp.read(16000))
    code, err = finish(server, timeout=20)
    assert code == 0, err
    assert "Traceback" not in err

    assert results["no token"][0] == 401 and results["wrong token"][0] == 401
    assert "Bearer" in results["no token"][1]
    for name in ("bad json", "not utf-8", "list", "unknown field"):
        status_code, text = results[name]
        assert status_code == 400, name
        assert text.count("\n") == 1, (name, text)
    assert "year" in results["unknown field"][1]
    assert results["huge"][0] == 413
    assert chunked.startswith(b"HTTP/1.1 413")
    assert ok[0] == 200
    assert st["now_playing"]["artist"] == "Fine" and st["now_playing"]["source"] == "api"
    assert len(frames) >= 20


def test_meta_command_uses_the_generated_token(cli: Cli) -> None:
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "8")
    token_file = cli.home / "state" / "deskcast" / "serve-token"
    logged = wait_for_line(server, "token")
    wait_for_line(server, "serving")
    base = f"http://127.0.0.1:{port}"
    try:
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        good = cli.run("meta", "Some Artist - Some Title", "--server", base)
        after = status(base)
        wrong = cli.run("meta", "x", "--server", base, "--token", "not-the-right-token-1")
        nobody = cli.run("meta", "x", "--server", f"http://127.0.0.1:{free_tcp_port()}")
    finally:
        code, err = finish(server, timeout=20)
    assert code == 0, err
    assert str(token_file) in logged  # logged where the token is
    assert good.returncode == 0, good.stderr.decode()
    assert good.stdout.decode().strip() == "now playing: Some Artist - Some Title"
    assert after["now_playing"]["artist"] == "Some Artist"
    assert after["now_playing"]["title"] == "Some Title"
    for result, needle in ((wrong, "HTTP 401"), (nobody, "is `deskcast serve` running")):
        assert result.returncode == 2
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines


class _Tracker(BaseHTTPRequestHandler):
    body: ClassVar[list[bytes]] = [b"{}"]

    def do_GET(self) -> None:
        body = self.body[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[tuple[str, type[_Tracker]]]:
    handler = type("Tracker", (_Tracker,), {"body": [b"{}"]})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/now", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_song_tracker_events_and_metrics(cli: Cli,
                                         tracker: tuple[str, type[_Tracker]]) -> None:
    url, handler = tracker
    handler.body[0] = json.dumps({"now": {"song": {"by": "Tracked", "name": "Song 1"}}}).encode()
    port = free_tcp_port()
    server = start(cli, port, "-t", "12", "--tracker-url", url, "--tracker-interval-s", "1",
                   "--tracker-title-field", "now.song.by,now.song.name")
    base = f"http://127.0.0.1:{port}"
    events: list[tuple[str, dict[str, Any], float]] = []

    def read_events() -> None:
        with urllib.request.urlopen(f"{base}/api/events", timeout=5) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            start_t = time.monotonic()
            name = ""
            while time.monotonic() - start_t < 5.5:
                line = resp.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:]), time.monotonic() - start_t))

    listener = urllib.request.urlopen(f"{base}/stream.mp3", timeout=5)
    listener.read(1000)
    reader = threading.Thread(target=read_events)
    reader.start()
    time.sleep(1.5)
    handler.body[0] = json.dumps({"now": {"song": {"by": "Tracked", "name": "Song 2"}}}).encode()
    reader.join(20)
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5)
    metrics_type = metrics.headers["Content-Type"]
    text = metrics.read().decode()
    listener.close()
    code, err = finish(server, timeout=20)
    assert code == 0, err

    titles = [e[1]["text"] for e in events if e[0] == "metadata"]
    assert "Tracked - Song 2" in titles
    assert titles[-1] == "Tracked - Song 2"
    statuses = [e for e in events if e[0] == "status"]
    assert len(statuses) >= 3  # one at once, then every ~2 s
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(statuses[1:])]
    assert all(1.5 <= g <= 3.5 for g in gaps), gaps
    assert statuses[-1][1]["formats"]["mp3"]["listeners"] == 1
    assert statuses[-1][1]["event_clients"] == 1
    assert statuses[-1][1]["now_playing"]["source"] == "tracker"

    assert metrics_type.startswith("text/plain; version=0.0.4")
    values: dict[str, float] = {}
    helped: set[str] = set()
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            typed.add(line.split()[2])
            assert line.split()[3] in ("gauge", "counter")
        else:
            m = METRIC_LINE.match(line)
            assert m, f"not Prometheus text format: {line!r}"
            values[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    names = {k.split("{")[0] for k in values}
    assert names == helped == typed
    assert values['deskcast_listeners{format="mp3"}'] == 1
    assert values['deskcast_listeners{format="opus"}'] == 0
    assert values['deskcast_encoder_running{format="mp3"}'] == 1
    assert values['deskcast_encoder_running{format="opus"}'] == 0
    assert values['deskcast_sent_bytes_total{format="mp3"}'] > 50_000
    assert values["deskcast_uptime_seconds"] >= 5
    assert values["deskcast_event_clients"] == 0
    assert "deskcast_listeners_cut_total{format=\"mp3\"}" in values
    assert "deskcast_listeners_refused_total" in values
