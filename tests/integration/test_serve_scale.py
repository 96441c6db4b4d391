"""`deskcast serve` under a storm of bad clients (issue 4, "bad input"; issue 6, fault matrix):
twice 10,000 connect/disconnect cycles, then 200 slowloris connections and a slow body, and a
client that never reads, while one real listener reads /stream.mp3 in real time. The listener
must never starve, and the server's memory, file descriptors and listener count must come back
to where they were."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deskcast.encode.mp3 import split_frames
from deskcast.http.stream_handler import STREAM_SNDBUF_BYTES
from rig.signals import dominant_frequency

from .conftest import DESKCAST, Cli, finish, wait_for_line
from .test_serve import decode, free_tcp_port

CYCLES = 10_000
CONCURRENCY = 200
HEADER_TIMEOUT_S = 4.0
BODY_TIMEOUT_S = 10.0  # deskcast.http.api.BODY_TIMEOUT_S
SLOWLORIS = 200
MP3_BYTES_PER_S = 128_000 / 8
META_TOKEN = "scale-test-metadata-token"


@dataclass
class RealListener:
    """Reads /stream.mp3 in its own thread, noting when each piece arrived."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += s.recv(4096)
                assert head.startswith(b"HTTP/1.1 200"), head
                self.data += head.partition(b"\r\n\r\n")[2]
                self.arrivals.append((time.monotonic(), len(self.data)))
                while not self.stop.is_set():
                    chunk = s.recv(65536)
                    if not chunk:
                        raise AssertionError("the server closed the real listener")
                    self.arrivals.append((time.monotonic(), len(chunk)))
                    self.data += chunk
        except BaseException as err:  # reported by the test
            self.error = err


def proc_numbers(pid: int) -> tuple[int, int]:
    """(resident memory in KiB, open file descriptors) of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)), len(os.listdir(f"/proc/{pid}/fd"))


def status(port: int) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5).read())
    return answer


def listeners_now(port: int) -> tuple[int, float]:
    """Listeners according to /api/status and to /metrics (mp3 + opus)."""
    base = f"http://127.0.0.1:{port}"
    status = json.loads(urllib.request.urlopen(f"{base}/api/status", timeout=5).read())
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    counted = sum(float(m.group(1)) for m in
                  re.finditer(r'^deskcast_listeners\{format="\w+"\} (\S+)$', metrics,
                              re.MULTILINE))
    return int(status["listeners"]), counted


async def one_cycle(port: int, kind: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == 0:  # connect, say nothing, reset
            writer.transport.abort()
            return
        if kind == 1:  # whole request headers, then hang up before the answer
            writer.write(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            return
        if kind == 2:  # a listener that leaves after a few KB
            writer.write(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
            got = 0
            while got < 4096:
                chunk = await reader.read(4096)
                if not chunk:
                    raise AssertionError("stream ended early")
                got += len(chunk)
            writer.transport.abort()
            return
        if kind == 3:  # HEAD of the stream
            writer.write(b"HEAD /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            return
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    finally:
        writer.close()


async def storm(port: int, cycles: int, concurrency: int) -> dict[int, int]:
    """``cycles`` connections of mixed kinds, ``concurrency`` at a time; returns errors by
    kind (a refused or failed cycle of ours, not the server's)."""
    next_cycle = iter(range(cycles))
    failures: dict[int, int] = {}

    async def worker() -> None:
        for n in next_cycle:
            kind = n % 5
            try:
                await asyncio.wait_for(one_cycle(port, kind), 10)
            except (OSError, AssertionError, TimeoutError, asyncio.IncompleteReadError):
                failures[kind] = failures.get(kind, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def slowloris(port: int, count: int, patience_s: float) -> list[float]:
    """``count`` connections sending one byte of a never-ending header per second; returns,
    for each, seconds from connecting until the server closed it (inf: it never did)."""

    async def one() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        trickle = b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        try:
            for byte in trickle:
                if time.monotonic() - start > patience_s:
                    return float("inf")
                writer.write(bytes([byte]))
                try:
                    if not await asyncio.wait_for(reader.read(4096), 1.0):
                        return time.monotonic() - start
                except TimeoutError:
                    continue
            return float("inf")
        except OSError:  # reset by the server
            return time.monotonic() - start
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def slow_body(port: int) -> tuple[float, bytes]:
    """A metadata POST whose 200-byte body comes one byte a second; returns when and what
    the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(b"POST /api/metadata HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + META_TOKEN.encode() +
                 b"\r\nContent-Length: 200\r\n\r\n{")
    try:
        for _ in range(60):
            try:
                answer = await asyncio.wait_for(reader.read(4096), 1.0)
                return time.monotonic() - start, answer
            except TimeoutError:
                writer.write(b" ")
        return float("inf"), b""
    finally:
        writer.close()


def settle(pid: int, fds_target: int, timeout: float = 10.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        rss, fds = proc_numbers(pid)
        if fds <= fds_target or time.monotonic() > deadline:
            return rss, fds
        time.sleep(0.2)


@pytest.mark.realtime  # judges a listener in real time beside 20,000 connections
def test_connect_storm_and_slowloris_starve_nobody_and_leave_nothing_behind(
        cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "--token", META_TOKEN, "--max-per-address", "100000",
                       "--max-listeners", "100000", "--header-timeout-s", f"{HEADER_TIMEOUT_S:g}",
                       "-t", "300")
    wait_for_line(server, "serving")
    listener = RealListener(port)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    numbers: dict[str, float] = {}
    try:
        time.sleep(2.0)
        assert listeners_now(port) == (1, 1.0)
        rss0, fds0 = proc_numbers(server.pid)
        before = status(port)

        t0 = time.monotonic()
        failures = asyncio.run(storm(port, CYCLES, CONCURRENCY))
        storm_s = time.monotonic() - t0
        assert sum(failures.values()) <= CYCLES // 1000, failures
        after = status(port)
        # Every stream GET that read a few KB (1 in 5) was a listener of the server's.
        stream_gets = after["listeners_total"] - before["listeners_total"]
        assert stream_gets >= CYCLES // 5 - 10, stream_gets
        rss_peak, _ = proc_numbers(server.pid)
        time.sleep(1.0)
        rss1, fds1 = settle(server.pid, fds0)
        assert listeners_now(port) == (1, 1.0)
        # A second storm: a leak per connection would grow memory again by the same amount.
        failures2 = asyncio.run(storm(port, CYCLES, CONCURRENCY))
        assert sum(failures2.values()) <= CYCLES // 1000, failures2
        time.sleep(1.0)
        rss1b, fds1b = settle(server.pid, fds0)
        assert listeners_now(port) == (1, 1.0)

        async def bad_clients() -> tuple[list[float], tuple[float, bytes]]:
            slow = asyncio.create_task(slow_body(port))
            loris = await slowloris(port, SLOWLORIS, HEADER_TIMEOUT_S + 15)
            return loris, await slow

        loris, (body_s, body_answer) = asyncio.run(bad_clients())
        rss2, fds2 = settle(server.pid, fds0)
        assert listeners_now(port) == (1, 1.0)
        numbers.update(storm_s=storm_s, cycles_per_s=CYCLES / storm_s, rss0_mb=rss0 / 1024,
                       rss_peak_mb=rss_peak / 1024, rss1_mb=rss1 / 1024,
                       rss1b_mb=rss1b / 1024, rss2_mb=rss2 / 1024,
                       stream_gets=stream_gets, failures=sum(failures.values()),
                       fds0=fds0, fds1=fds1, fds1b=fds1b, fds2=fds2, loris_min_s=min(loris),
                       loris_max_s=max(loris), body_s=body_s)
    finally:
        listener.stop.set()
        thread.join(10)
        server.terminate()
        code, err = finish(server, timeout=20)
    assert code == 0, err
    assert "Traceback" not in err
    assert listener.error is None, listener.error

    # The storm was a storm, and it left memory and sockets where they were.
    assert storm_s < 60, storm_s
    assert rss1 - rss0 < 20 * 1024, (rss0, rss1)
    assert rss2 - rss0 < 20 * 1024, (rss0, rss2)
    assert rss1b - rss1 < 5 * 1024, (rss1, rss1b)
    assert fds1 <= fds0 and fds1b <= fds0 and fds2 <= fds0, (fds0, fds1, fds1b, fds2)
    # Every slowloris connection was closed by the header timeout, not before it.
    assert all(HEADER_TIMEOUT_S - 0.5 <= s <= HEADER_TIMEOUT_S + 4 for s in loris), \
        sorted(loris)[:3] + sorted(loris)[-3:]
    assert body_answer.startswith(b"HTTP/1.1 408"), body_answer[:100]
    assert BODY_TIMEOUT_S - 0.5 <= body_s <= BODY_TIMEOUT_S + 4, body_s

    # The real listener got real-time audio all along: no gap over 1 s, >= 95 % of the bitrate.
    times = [t for t, _ in listener.arrivals]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 1.0, max(gaps)
    start = times[0] + 2.0  # past the ~1 s burst
    duration = times[-1] - start
    live = sum(n for t, n in listener.arrivals if t > start)
    with capsys.disabled():
        numbers.update(max_gap_s=max(gaps), live_ratio=live / (MP3_BYTES_PER_S * duration))
        print("\nserve scale:", ", ".join(f"{k}={v:.2f}" for k, v in numbers.items()))
    assert live >= 0.95 * MP3_BYTES_PER_S * duration, (live, duration)
    frames, _rest = split_frames(bytes(listener.data))
    assert len(frames) * 1152 / 48000 >= 0.95 * (times[-1] - times[0]), len(frames)
    x = decode(b"".join(frames[-400:]))  # the last ~10 s, after everything
    assert dominant_frequency(x[2000:], 48000) == pytest.approx(1000.0, abs=2.0)


@pytest.mark.realtime  # judges a listener in real time, and when the stuck one is cut
def test_a_listener_that_never_reads_is_dropped_and_frees_its_slot(
        cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """A client that asks for the stream and never reads fills its socket buffers and would
    otherwise hold its listener slot (and kernel memory) forever; the server drops it once its
    socket has taken nothing for --max-lag-s + 1 s, while a real listener keeps flowing."""
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "--mp3-bitrate", "320", "--max-lag-s", "1", "--burst-s", "0.5",
                       "--opus-burst-s", "0.5", "--max-per-address", "2", "-t", "120")
    wait_for_line(server, "serving")
    listener = RealListener(port)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", port))
    stuck.sendall(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
    t0 = time.monotonic()
    counts = []
    try:
        while time.monotonic() - t0 < 40:
            counts.append(listeners_now(port)[0])
            if len(counts) > 4 and counts[-1] == 1:
                break
            time.sleep(0.5)
        cut_s = time.monotonic() - t0  # cut from the audio: it fell behind
        # Its connection is dropped and its slot freed once its socket took nothing for
        # --max-lag-s + 1 s: with --max-per-address 2, one more listener gets in again.
        answer = b""
        while answer != b"HTTP/1.1 200" and time.monotonic() - t0 < 60:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
                again.sendall(b"GET /stream.mp3 HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = again.recv(12)
            time.sleep(0.5)
        dropped_s = time.monotonic() - t0
    finally:
        stuck.close()
        listener.stop.set()
        thread.join(10)
        server.terminate()
        code, err = finish(server, timeout=20)
    assert code == 0, err
    assert listener.error is None, listener.error
    assert 2 in counts and counts[-1] == 1, counts
    # When, from what serve documents: the stuck socket takes the 0.5 s burst and then live
    # audio until its kernel buffers are full (send buffer STREAM_SNDBUF_BYTES and the 4 KB
    # receive buffer, each doubled by Linux, at 320 kbit/s: 3.5 s); from then on it falls
    # behind and is cut once --max-lag-s (1 s) behind, and dropped once its socket took
    # nothing for --max-lag-s + 1 s. 2 s over that for the 0.5 s polling and a shared machine.
    # Measured: cut at 4.06 s, dropped at 4.56 s (the first poll after the cut).
    full_s = 2 * (STREAM_SNDBUF_BYTES + 4096) / (320_000 / 8) - 0.5
    print(f"MEASURED cut {cut_s:.2f} s, dropped {dropped_s:.2f} s (buffers full at {full_s:.2f} s)")
    assert cut_s < full_s + 1.0 + 2.0, (cut_s, full_s)
    assert dropped_s < full_s + 2.0 + 2.0, (dropped_s, full_s)
    assert answer == b"HTTP/1.1 200", answer
    times = [t for t, _ in listener.arrivals]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 1.0
    with capsys.disabled():
        print(f"\nnever-reading listener: cut after {cut_s:.1f} s, its slot free after "
              f"{dropped_s:.1f} s")


def test_serve_raises_its_open_file_limit_for_max_listeners(cli: Cli) -> None:
    """Started with the 256/1024 soft limit desktops give programs, serve raises it to what
    --max-listeners needs (2 x listeners + 1024) within the hard limit, or says it cannot."""
    results = []
    for hard, max_listeners in ((8000, 2000), (1000, 2000)):
        port = free_tcp_port()
        proc = subprocess.Popen(
            ["prlimit", f"--nofile=256:{hard}", "--", *DESKCAST, "-v", "serve", "-s",
             "tone:1000", "--listen", f"127.0.0.1:{port}", "--max-listeners",
             str(max_listeners), "-t", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=cli.env)
        assert proc.stderr is not None
        said = ""
        try:
            while "serving" not in said:  # the warning comes before "serving"
                line = proc.stderr.readline().decode()
                assert line, said
                said += line
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
            assert match is not None, limits
            results.append((int(match.group(1)), int(match.group(2))))
        finally:
            proc.terminate()
            code, err = finish(proc, timeout=20)
        assert code == 0, err
        if hard < 2 * max_listeners + 1024:
            assert "open-file limit 1000 (hard) is below the 5024" in said, said
    assert results == [(5024, 8000), (1000, 1000)], results
