"""Fan-out: ``deskcast serve`` against icecast2, measured in the same run, at 128 kbit/s MP3.

For each listener count N (10, 100, 500, 1000) and each server, a fresh server is started:

* **deskcast**: ``deskcast serve -s tone:1000`` on a free loopback port (its MP3 encoder runs in
  the server process, so its CPU includes encoding the tone);
* **icecast2**: a private icecast2 (``tests/rig/icecast.py``) fed by ffmpeg with the same MP3
  (1 kHz tone, 48 kHz stereo, 128 kbit/s CBR, bit reservoir off) through an HTTP PUT source;
  the server CPU is icecast2's alone, the feeder's is shown apart.

A separate process (this script with ``--worker``) opens N HTTP listeners with asyncio, all
reading as fast as data comes (a server sends a live stream at real time). Then, over a fixed
window, the server's CPU time (utime+stime from /proc/PID/stat, ms per s) and resident memory
(VmRSS, sampled every 0.25 s) are measured, and each listener's received audio is counted
(CBR: 16,000 bytes per second of audio). A listener *kept up* if it received at least the
window's length of audio minus 0.5 s and was not disconnected. After the window, 10 extra
listeners join one by one and each notes its time to first byte (from the start of the TCP
connect), its time to the first whole MP3 frame it could decode, and how much audio it got in
its first 200 ms (the server's burst on join).

Servers are interleaved (deskcast, icecast2, deskcast, …) so that background load hits both
alike. Every child (servers, feeder, worker) is stopped on exit, also on Ctrl-C.

    .venv/bin/python bench/fanout.py            # 2 runs x 15 s windows per N and server (~6 min)
    .venv/bin/python bench/fanout.py --quick    # 1 run x 5 s windows (~2 min)
    .venv/bin/python bench/fanout.py --listeners 10,100 --runs 3 --window-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "src"), str(_ROOT / "tests")]

from bench.common.measure import MachineLoad, cpu_seconds, median, percentile, rss_mb  # noqa: E402
from bench.common.procs import (  # noqa: E402
    DESKCAST,
    BenchError,
    Child,
    Procs,
    die_with_parent,
    wait_for_log,
)
from bench.common.report import (  # noqa: E402
    Progress,
    header,
    package_version,
    print_run_footer,
    table,
)

BITRATE_KBPS = 128
BYTES_PER_S = BITRATE_KBPS * 1000 // 8
"""CBR MP3: every second of audio is this many bytes (48 kHz: 384-byte frames, no padding)."""
KEPT_UP_MARGIN_S = 0.5
"""A listener kept up if it got the window's length of audio minus this (batching jitter):
deskcast writes 0.36 s at once to 300 listeners and more (3 chunks of 5 MP3 frames), so a 5 s
window holds 13 or 14 of its batches (4.68 or 5.05 s) depending on where it falls; with 0.3 s
every listener of such a run counted as behind (all at 4.69 s, none cut) now and then."""
PROBES = 10
"""Listeners that join one by one after the window, for the join measurements."""
BURST_WINDOW_S = 0.2
RSS_EVERY_S = 0.25
FIRST_FRAME_PREFIX = 4096
"""Bytes :func:`first_frame_end` parses first (a 128 kbit/s frame is 384 or 418 bytes)."""
SERVERS = ("deskcast", "icecast2")


# --------------------------------------------------------------------------- #
# the listeners (run in a separate process: this script with --worker)
# --------------------------------------------------------------------------- #


def first_frame_end(data: bytes) -> int | None:
    """Offset just past the first whole MP3 frame in ``data`` that a decoder can start on
    (a valid header confirmed by the next one, or ending exactly at the end), else None."""
    from deskcast.encode.mp3 import split_frames

    # The first few KB hold it unless the stream starts with a long tag: parsing a whole burst
    # (tens of KB) in Python for each of hundreds of connecting listeners would make this
    # process, not the server, the bottleneck of the connect storm.
    head = data[:FIRST_FRAME_PREFIX]
    frames, _rest = split_frames(head)
    if len(frames) < 2 and len(head) < len(data):  # the first one is confirmed by the next
        frames, _rest = split_frames(data)
    if not frames:
        return None
    # split_frames returns frames in order; the first one ends where the bytes up to it do.
    first = frames[0]
    at = data.find(first)
    return at + len(first) if at >= 0 else None


class Listener(asyncio.Protocol):
    """One HTTP listener: counts bytes, notes when the first byte and first frame came."""

    def __init__(self, request: bytes, started: float) -> None:
        self.request = request
        self.started = started
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.in_body = False
        self.status = 0
        self.body_bytes = 0
        self.first_bytes = bytearray()
        self.ttfh: float | None = None
        self.ttfb: float | None = None
        self.ttff: float | None = None
        self.burst_bytes = 0
        self.closed = False
        self.error = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.error = "response head too long"
                    self._close()
                return
            line = bytes(self.head[:self.head.find(b"\r\n")]).split()
            self.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
            data = bytes(self.head[end + 4:])
            self.in_body = True
            self.ttfh = now - self.started
            if self.status != 200:
                self.error = f"HTTP {self.status}"
                self._close()
                return
        if not data:
            return
        if self.ttfb is None:
            self.ttfb = now - self.started
        if now - self.started <= (self.ttfb or 0) + BURST_WINDOW_S:
            self.burst_bytes += len(data)
        self.body_bytes += len(data)
        if self.ttff is None:
            self.first_bytes += data
            if first_frame_end(bytes(self.first_bytes)) is not None:
                self.ttff = now - self.started
                self.first_bytes = bytearray()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and not self.error:
            self.error = str(exc)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_listener(host: str, port: int, path: str, icy: bool = False) -> Listener:
    loop = asyncio.get_running_loop()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: deskcast-bench\r\n"
               + ("Icy-MetaData: 1\r\n" if icy else "") + "Accept: */*\r\n\r\n").encode()
    started = time.monotonic()
    listener = Listener(request, started)
    try:
        await asyncio.wait_for(loop.create_connection(lambda: listener, host, port), 10)
    except (OSError, TimeoutError) as err:
        listener.error = f"connect: {err}"
        listener.closed = True
    return listener


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


async def worker(host: str, port: int, path: str, *, n: int, window_s: float,
                 settle_s: float, icy: bool = False) -> None:
    listeners: list[Listener] = []
    sem = asyncio.Semaphore(50)  # connects in flight at once (a listen backlog is ~128)

    async def one() -> None:
        async with sem:
            listeners.append(await open_listener(host, port, path, icy))

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    ramp_s = time.monotonic() - t0
    # Wait until every listener has its first byte (or failed), at most 10 s.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            lst.ttfb is None and not lst.closed for lst in listeners):
        await asyncio.sleep(0.05)
    emit("connected", ok=sum(1 for lst in listeners if lst.ttfb is not None and not lst.closed),
         ramp_s=ramp_s)
    await asyncio.sleep(settle_s)
    emit("window-start")
    before = [lst.body_bytes for lst in listeners]
    cut_before = [lst.closed for lst in listeners]
    w0 = time.monotonic()
    await asyncio.sleep(window_s)
    w1 = time.monotonic()
    after = [lst.body_bytes for lst in listeners]
    emit("window-end")
    span = w1 - w0
    got_s = [(a - b) / BYTES_PER_S for a, b in zip(after, before, strict=True)]
    kept = [g >= span - KEPT_UP_MARGIN_S and not lst.closed and not was_cut
            for g, lst, was_cut in zip(got_s, listeners, cut_before, strict=True)]
    # Joining listeners, one at a time, while the N keep listening.
    probes: list[dict[str, Any]] = []
    for _ in range(PROBES):
        probe = await open_listener(host, port, path, icy)
        await asyncio.sleep(0.6)
        probes.append({"ttfh": probe.ttfh, "ttfb": probe.ttfb, "ttff": probe.ttff,
                       "burst_s": probe.burst_bytes / BYTES_PER_S, "error": probe.error})
        if probe.transport is not None:
            probe.transport.close()
    errors = sorted({lst.error for lst in listeners if lst.error})
    emit("result", n=n, window_s=span, kept=sum(kept), got_min_s=min(got_s, default=0.0),
         got_median_s=sorted(got_s)[len(got_s) // 2] if got_s else 0.0,
         ttfb=[lst.ttfb for lst in listeners if lst.ttfb is not None],
         failed=sum(1 for lst in listeners if lst.ttfb is None), errors=errors[:5],
         probes=probes)
    for lst in listeners:
        if lst.transport is not None:
            lst.transport.close()


# --------------------------------------------------------------------------- #
# the servers
# --------------------------------------------------------------------------- #


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ready(port: int, path: str, timeout: float = 15.0) -> None:
    """Wait until GET ``path`` answers 200 with at least one body byte."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                s.settimeout(3)
                data = b""
                while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 5:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    return
                last = data[:60].decode(errors="replace")
        except OSError as err:
            last = str(err)
        time.sleep(0.1)
    raise BenchError(f"127.0.0.1:{port}{path} did not stream within {timeout:.0f} s ({last})")


@dataclass
class Target:
    """A started server: where listeners go, which pid to measure, what feeds it."""

    port: int
    path: str
    pid: int
    feeder_pid: int | None
    stop: list[Any] = field(default_factory=list)


def start_deskcast(procs: Procs, env: dict[str, str], tag: str) -> Target:
    port = free_tcp_port()
    child = procs.start(tag, [*DESKCAST, "-v", "serve", "-s", "tone:1000", "--listen",
                              f"127.0.0.1:{port}", "--mp3-bitrate", str(BITRATE_KBPS),
                              "--max-listeners", "5000", "--max-per-address", "5000"], env)
    wait_for_log(child, "serving")
    http_ready(port, "/stream.mp3")
    return Target(port, "/stream.mp3", child.proc.pid, None)


def start_icecast(procs: Procs, env: dict[str, str], tag: str) -> Target:
    from rig.icecast import IcecastServer

    ice = IcecastServer(max_clients=5000).start()
    assert ice.pid is not None
    mount = "/stream.mp3"
    feeder = procs.start(f"{tag}-ffmpeg", [
        "ffmpeg", "-hide_banner", "-loglevel", "warning", "-re", "-f", "lavfi",
        "-i", "sine=frequency=1000:sample_rate=48000", "-af", "volume=-12dB",
        "-ac", "2", "-c:a", "libmp3lame", "-b:a", f"{BITRATE_KBPS}k", "-reservoir", "0",
        "-content_type", "audio/mpeg", "-f", "mp3", ice.source_url(mount)], env)
    try:
        ice.wait_source(mount, 15)
        time.sleep(1.0)  # so icecast has a burst to give, as deskcast has after its warm-up
        http_ready(ice.port, mount)
    except BaseException:
        ice.close()
        raise
    return Target(ice.port, mount, ice.pid, feeder.proc.pid, stop=[ice])


# --------------------------------------------------------------------------- #
# one measurement
# --------------------------------------------------------------------------- #


@dataclass
class Sample:
    server: str
    n: int
    cpu_ms_s: float = math.nan
    feeder_ms_s: float = math.nan
    worker_ms_s: float = math.nan
    rss_start_mb: float = math.nan
    rss_end_mb: float = math.nan
    rss_max_mb: float = math.nan
    kept: int = 0
    connected: int = 0
    got_min_s: float = math.nan
    window_s: float = math.nan
    ttfb_p95_ms: float = math.nan
    join_ttfh_ms: list[float] = field(default_factory=list)
    join_ttfb_ms: list[float] = field(default_factory=list)
    join_ttff_ms: list[float] = field(default_factory=list)
    join_burst_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    load: MachineLoad = field(default_factory=MachineLoad)


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if not math.isnan(value):
                self.values.append(value)
            self._stop.wait(RSS_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def read_event(child: Child, proc: subprocess.Popen[bytes], want: str,
               timeout: float) -> dict[str, Any]:
    """The next JSON line from the worker with ``event == want``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise BenchError(f"the listener process exited (status {proc.poll()}):\n"
                             f"{child.tail()}")
        with contextlib.suppress(json.JSONDecodeError):
            record: dict[str, Any] = json.loads(line)
            if record.get("event") == want:
                return record
    raise BenchError(f"the listener process said no {want!r} within {timeout:.0f} s")


def measure(server: str, n: int, window_s: float, *, procs: Procs, env: dict[str, str],
            workdir: Path, tag: str, progress: Progress, icy: bool = False) -> Sample:
    sample = Sample(server, n)
    target = (start_deskcast if server == "deskcast" else start_icecast)(procs, env, tag)
    log = workdir / f"{tag}-listeners.log"
    try:
        with log.open("ab") as errlog:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker",
                 f"127.0.0.1:{target.port}{target.path}", "--n", str(n),
                 "--window-s", str(window_s), *(["--icy"] if icy else [])],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog,
                env=env, start_new_session=True, preexec_fn=die_with_parent)  # noqa: PLW1509
        child = Child(f"{tag}-listeners", proc, log)
        procs.children.append(child)
        connected = read_event(child, proc, "connected", 60 + n / 20)
        sample.connected = int(connected["ok"])
        progress(f"{server} N={n}: {sample.connected} listening "
                 f"(connected in {connected['ramp_s']:.1f} s); measuring {window_s:g} s")
        read_event(child, proc, "window-start", 30)
        cpu0 = cpu_seconds(target.pid)
        feed0 = cpu_seconds(target.feeder_pid) if target.feeder_pid else math.nan
        work0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        sample.load.start()
        with RssSampler(target.pid) as rss:
            read_event(child, proc, "window-end", window_s + 30)
        t1 = time.monotonic()
        sample.load.stop()
        span = t1 - t0
        sample.cpu_ms_s = 1000 * (cpu_seconds(target.pid) - cpu0) / span
        if target.feeder_pid:
            sample.feeder_ms_s = 1000 * (cpu_seconds(target.feeder_pid) - feed0) / span
        sample.worker_ms_s = 1000 * (cpu_seconds(proc.pid) - work0) / span
        if rss.values:
            sample.rss_start_mb, sample.rss_end_mb = rss.values[0], rss.values[-1]
            sample.rss_max_mb = max(rss.values)
        result = read_event(child, proc, "result", 60)
        sample.kept = int(result["kept"])
        sample.got_min_s = float(result["got_min_s"])
        sample.window_s = float(result["window_s"])
        sample.ttfb_p95_ms = 1000 * percentile([float(v) for v in result["ttfb"]], 95)
        for p in result["probes"]:
            if p["ttfh"] is not None:
                sample.join_ttfh_ms.append(1000 * float(p["ttfh"]))
            if p["ttfb"] is not None:
                sample.join_ttfb_ms.append(1000 * float(p["ttfb"]))
            if p["ttff"] is not None:
                sample.join_ttff_ms.append(1000 * float(p["ttff"]))
            sample.join_burst_s.append(float(p["burst_s"]))
        sample.errors = [str(e) for e in result["errors"]]
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    finally:
        for obj in target.stop:
            obj.close()
        for c in list(procs.children):
            procs.stop(c)
        procs.children.clear()
    return sample


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #


def fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def report(samples: Sequence[Sample], ns: Sequence[int], window_s: float, runs: int) -> None:
    rows = []
    for n in ns:
        for server in SERVERS:
            mine = [s for s in samples if s.server == server and s.n == n]
            if not mine:
                continue
            cpu = median([s.cpu_ms_s for s in mine])
            feeder = median([s.feeder_ms_s for s in mine])
            rss_end = median([s.rss_end_mb for s in mine])
            growth = median([s.rss_end_mb - s.rss_start_mb for s in mine])
            kept = sum(s.kept for s in mine)
            total = sum(s.n for s in mine)
            ttfb_all = median([s.ttfb_p95_ms for s in mine])
            join_ttfh = percentile([v for s in mine for v in s.join_ttfh_ms], 95)
            join_ttfb = percentile([v for s in mine for v in s.join_ttfb_ms], 95)
            join_ttff = percentile([v for s in mine for v in s.join_ttff_ms], 95)
            burst = median([v for s in mine for v in s.join_burst_s])
            rows.append([
                str(n), server,
                fmt(cpu) + (f" (+{fmt(feeder)})" if not math.isnan(feeder) else ""),
                fmt(rss_end, 1), f"{growth:+.1f}", f"{kept}/{total}",
                fmt(ttfb_all), fmt(join_ttfh), fmt(join_ttfb), fmt(join_ttff), fmt(burst, 2),
            ])
    print(table(["N", "server", "CPU ms/s", "RSS MB", "RSS Δ MB", "kept up",
                 "TTFB ms (all N)", "join head ms", "join TTFB ms", "join frame ms",
                 "burst s/200 ms"], rows))
    print()
    print(f"{runs} run(s) per N and server, {window_s:g} s measuring window; CPU ms/s is "
          "the server process (utime+stime, all threads) per second of wall time, median of "
          "runs; icecast2's ffmpeg feeder in brackets (deskcast encodes inside its CPU figure).")
    print("RSS Δ: VmRSS at the end of the window minus at its start (median of runs). "
          f"kept up: listeners that got >= window - {KEPT_UP_MARGIN_S} s of audio and stayed "
          "connected, summed over runs. TTFB (all N): p95 over the N listeners from TCP "
          "connect to the first body byte while they all connect at once (median of runs). "
          f"join: {PROBES} listeners joining one by one after the window, with N listening: "
          "p95 time to the response headers / first body byte / first whole MP3 frame, and "
          "median seconds of audio "
          f"received in the first {BURST_WINDOW_S * 1000:.0f} ms after the first byte.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="1 run, 5 s windows")
    parser.add_argument("--runs", type=int, default=None, help="runs per N and server (2)")
    parser.add_argument("--window-s", type=float, default=None,
                        help="measuring window in seconds (15; --quick: 5)")
    parser.add_argument("--listeners", default="10,100,500,1000",
                        help="comma-separated listener counts (default 10,100,500,1000)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="which servers to run (default deskcast,icecast2)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--icy", action="store_true",
                        help="listeners ask for ICY metadata (Icy-MetaData: 1); their byte "
                        "counts then include the metadata blocks (1 byte per 16,000 of audio)")
    parser.add_argument("--worker", metavar="HOST:PORT/PATH", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        hostport, _, path = args.worker.partition("/")
        host, _, port = hostport.rpartition(":")
        asyncio.run(worker(host, int(port), "/" + path, n=args.n, window_s=args.window_s,
                           settle_s=1.0, icy=args.icy))
        return 0
    runs = args.runs or (1 if args.quick else 2)
    window_s = args.window_s or (5.0 if args.quick else 15.0)
    try:
        ns = [int(v) for v in args.listeners.split(",") if v.strip()]
    except ValueError:
        parser.error("--listeners takes numbers separated by commas, e.g. 10,100,1000")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"--servers: unknown {', '.join(sorted(unknown))}; use "
                     + ", ".join(SERVERS))
    progress = Progress(args.quiet)
    workdir = Path(tempfile.mkdtemp(prefix="deskcast-fanout-"))
    env = dict(os.environ)
    home = workdir / "home"
    for sub in ("config", "state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"))
    env.pop("DESKCAST_CONFIG", None)
    samples: list[Sample] = []
    interrupted = False
    failures: dict[str, list[str]] = {s: [] for s in servers}
    print(header("Fan-out: deskcast serve vs icecast2, 128 kbit/s MP3 (bench/fanout.py)"))
    print(f"icecast2 {package_version('icecast2')}, ffmpeg {package_version('ffmpeg')}")
    if args.icy:
        print("listeners ask for ICY metadata (Icy-MetaData: 1)")
    print()
    try:
        with Procs(workdir) as procs:
            for n in ns:
                for run in range(runs):
                    for server in servers:
                        tag = f"{server}-n{n}-r{run}"
                        progress(f"{server} N={n} run {run + 1}/{runs}")
                        try:
                            samples.append(measure(server, n, window_s, procs=procs, env=env,
                                                   workdir=workdir, tag=tag,
                                                   progress=progress, icy=args.icy))
                        except BenchError as err:
                            failures[server].append(f"N={n} run {run + 1}: {err}")
                            progress(f"{server} N={n}: failed: {str(err).splitlines()[0]}")
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: partial results", file=sys.stderr)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    report(samples, ns, window_s, runs)
    described = [
        ("deskcast", "deskcast serve -s tone:1000 --listen 127.0.0.1:P --mp3-bitrate 128 "
                     "--max-listeners 5000 --max-per-address 5000", failures.get("deskcast", [])),
        ("icecast2", "icecast2 -c (tests/rig/icecast.py: clients 5000, queue 512 KiB, burst "
                     "64 KiB) <- ffmpeg -re -f lavfi sine=1000 -af volume=-12dB -c:a libmp3lame "
                     "-b:a 128k -reservoir 0 -f mp3 icecast://…", failures.get("icecast2", [])),
    ]
    worker_cpu = {s: median([x.worker_ms_s for x in samples if x.server == s])
                  for s in servers}
    extra = ["listener process CPU (median over all N): " + ", ".join(
        f"{s} {fmt(v)} ms/s" for s, v in worker_cpu.items())]
    errs = sorted({e for x in samples for e in x.errors})
    if errs:
        extra.append("listener errors seen: " + "; ".join(errs[:5]))
    print_run_footer([x.load for x in samples],
                     [d for d in described if d[0] in servers], extra)
    if interrupted:
        return 130
    return 0 if not any(failures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
