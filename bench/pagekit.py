"""What bench/page.py runs on: headless Chromium (launched by Playwright with its sound in the
private PulseAudio's ``out`` sink, and gone, every process of it, when the ``with`` ends) and
the bare page that plays an icecast2 mount; the test signal (a 1 kHz tone with a different
noise burst every 0.5 s); and finding the bursts and the silences in the meter's recording (hub
and out on one sample clock; bench/common/measure.py's FrameClock puts navigation start onto it).

Like bench/common/, it needs the repository root and ``tests/`` on ``sys.path`` (page.py
puts them there)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from playwright import sync_api

from bench.common.measure import block_levels_db, true_runs_ms
from bench.common.server import METER, RATE
from rig.meter import MeterRecording
from rig.signals import correlation, find_delay, level_db

PERIOD_S = 0.5
BURST_S = 0.04
TONE_DB = -30.0
BURST_DB = -15.0
SOUND_DB = -50.0
"""First sound: the first 10 ms block at ``out`` at or above this level."""
SOUND_BLOCK_MS = 10.0
MAX_DELAY_S = 15.0
"""Bursts are searched for in the output up to this long after they were in the hub."""
MIN_CORR = 0.5

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [  # as in tests/integration/test_page_chromium.py
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # Chromium's Private Network Access check blocks a non-secure page of a public or "null"
    # origin from fetching from loopback; both pages here are served from loopback, and these
    # flags keep it that way if Chromium's rules move.
    "--disable-features=BlockInsecurePrivateNetworkRequests,"
    "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
    "LocalNetworkAccessChecks",
]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_chromium_of(home: Path) -> int:
    """SIGKILL any Chromium process still running with HOME=``home`` (this run's own, unique
    directory: only browsers this script started). Returns how many there were."""
    needle = f"HOME={home}".encode()
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            if "chromium" not in exe:
                continue
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
    return killed


@contextlib.contextmanager
def chromium(env: dict[str, str], home: Path) -> Iterator[sync_api.Page]:
    """A headless Chromium page whose audio plays into ``out``; it is gone afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    benv: dict[str, str | float | bool] = dict(env)
    benv.update(PULSE_SINK="out", HOME=str(home))
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                ignore_default_args=["--mute-audio"], env=benv, timeout=30_000)
            try:
                yield browser.new_page()
            finally:
                with contextlib.suppress(Exception):
                    browser.close()
    finally:
        kill_chromium_of(home)


@contextlib.contextmanager
def icecast_page(listen_url: str) -> Iterator[str]:
    """The bare page that plays ``listen_url``, served from 127.0.0.1 while the ``with`` runs;
    yields its URL. Served rather than a ``data:`` URL: with Chromium 156 the ``data:`` page
    (origin "null") played nothing in 3 of 3 runs on 2026-12-07, the flags below
    notwithstanding; a page on loopback reading loopback is no private-network request."""
    html = ("<!doctype html><title>icecast</title><audio id=audio></audio><script>"
            "addEventListener('load',()=>{const a=document.getElementById('audio');"
            f"a.src={listen_url!r};a.play().catch(()=>{{}});}});</script>").encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, name="icecast-page", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- #
# the test signal, and the recording's clock
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=16)
def noise_burst(seed: int) -> npt.NDArray[np.float64]:
    """40 ms of noise, 300 Hz-8 kHz (survives MP3 and Opus alike), 2 ms fades, BURST_DB RMS."""
    n = round(BURST_S * RATE)
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < 300) | (freqs > 8000)] = 0
    x = np.fft.irfft(spec, n)
    fade = round(0.002 * RATE)
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    x *= 10 ** (BURST_DB / 20) / math.sqrt(float(np.mean(x * x)))
    x.flags.writeable = False
    return x


@dataclass(frozen=True)
class PageSignal:
    """The 1 kHz tone with burst ``k`` (``noise_burst(999 + k)``) at frame ``k * period``,
    k >= 1: every burst different, so any delay is found without ambiguity."""

    rate: int = RATE

    @property
    def period(self) -> int:
        return round(PERIOD_S * self.rate)

    def render(self, start: int, frames: int) -> npt.NDArray[np.float64]:
        """Mono samples for frames [start, start + frames)."""
        n = start + np.arange(frames, dtype=np.int64)
        amp = 10 ** (TONE_DB / 20) * math.sqrt(2.0)
        x: npt.NDArray[np.float64] = amp * np.sin(2 * np.pi * 1000.0 * (n % self.rate)
                                                  / self.rate)
        size = round(BURST_S * self.rate)
        for k in range(max(1, (start - size) // self.period), (start + frames) // self.period + 1):
            lo = k * self.period
            a, b = max(lo, start), min(lo + size, start + frames)
            if a < b:
                x[a - start:b - start] += noise_burst(999 + k)[a - lo:b - lo]
        return np.clip(x, -1.0, 1.0)

    def pcm(self, start: int, frames: int) -> bytes:
        """Stereo s16le bytes for frames [start, start + frames)."""
        s16 = np.round(self.render(start, frames) * 32767).astype("<i2")
        return np.repeat(s16[:, None], 2, axis=1).tobytes()


def wait_for_sound(rec: MeterRecording, timeout: float) -> bool:
    """Wait until a block of ``out`` recorded after the call is at SOUND_DB or above."""
    c = METER.channel("out")
    block = round(SOUND_BLOCK_MS / 1000 * RATE)
    start = rec.frames()
    deadline = time.monotonic() + timeout
    while time.monotonic() <= deadline:
        end = rec.frames()
        if end - start >= block and level_db(rec.read(end - block, end)[:, c:c + 2]) >= SOUND_DB:
            return True
        time.sleep(0.01)
    return False


# --------------------------------------------------------------------------- #
# bursts and silences in the recording
# --------------------------------------------------------------------------- #


def hub_bursts(h: npt.NDArray[np.float64]) -> list[int]:
    """Frames of the hub recording where a burst starts (5 ms early): taken from the recording,
    not from the schedule, so that a gap in what went in cannot shift them."""
    ms = RATE // 1000
    levels = block_levels_db(h, RATE, 1.0)
    loud = levels > (TONE_DB + BURST_DB) / 2 + 1.5  # between the tone and tone + burst
    onsets = np.flatnonzero(loud[20:] & ~loud[19:-1]) + 20
    return [int(b) * ms - 5 * ms for b in onsets if not loud[b - 20:b].any()]


def find_bursts(h: npt.NDArray[np.float64], o: npt.NDArray[np.float64], sound_frame: int
                ) -> tuple[list[tuple[int, int]], list[int]]:
    """((frame at out, delay in frames) of each burst found at ``out``, frames of the hub
    where each burst that was looked for went in)."""
    ref_len = round((BURST_S + 0.01) * RATE)
    found: list[tuple[int, int]] = []
    refs: list[int] = []
    last: int | None = None  # the latest delay found: look near it first
    for e in hub_bursts(h):
        if e + ref_len > h.shape[0] or e < sound_frame - round(MAX_DELAY_S * RATE):
            continue
        w0 = max(sound_frame, e - round(0.01 * RATE))
        w1 = min(o.shape[0], e + round(MAX_DELAY_S * RATE))
        if w1 - w0 < ref_len:
            continue
        refs.append(e)
        ref = h[e:e + ref_len]
        windows = [(w0, w1)]
        if last is not None:
            near = (max(w0, e + last - RATE), min(w1, e + last + RATE))
            if near[1] - near[0] >= ref_len:
                windows.insert(0, near)
        for a, b in windows:
            window = o[a:b]
            lag = find_delay(ref, window, RATE, max_delay=(b - a) / RATE)
            k = round(lag * RATE)
            if lag >= 0 and correlation(ref, window[k:k + ref_len]) >= MIN_CORR:
                last = a + k - e
                found.append((a + k, last))
                break
    return found, refs


def silences(h: npt.NDArray[np.float64], o: npt.NDArray[np.float64], start: int,
             found: list[tuple[int, int]]) -> tuple[list[float], float, float]:
    """(ms of each run of silent 10 ms blocks at ``out`` from ``start`` on, ms of out
    checked, ms left out) where the hub, one delay earlier (that of the nearest burst found),
    was sounding: a gap in what went in is not the page's."""
    block = round(SOUND_BLOCK_MS / 1000 * RATE)
    out_db = block_levels_db(o[start:], RATE, SOUND_BLOCK_MS)
    n = out_db.size
    hub_quiet = block_levels_db(h, RATE, 1.0) < SOUND_DB
    pad = 20  # ms either side: the delay from the nearest burst may be that far off
    hub_quiet = np.convolve(hub_quiet, np.ones(2 * pad + 1), mode="same") > 0
    frames = start + block * np.arange(n)
    if found:
        at = np.asarray([f for f, _ in found])
        lags = np.asarray([d for _, d in found])
        nearest = np.clip(np.searchsorted(at, frames), 0, at.size - 1)
        idx = (frames - lags[nearest] + block // 2) // (RATE // 1000)
        inside = (idx >= 0) & (idx < hub_quiet.size)
        skip = np.zeros(n, dtype=bool)
        skip[inside] = hub_quiet[idx[inside]]
    else:
        skip = np.zeros(n, dtype=bool)
    runs = true_runs_ms((out_db < SOUND_DB) & ~skip, SOUND_BLOCK_MS)
    return runs, float(np.sum(~skip)) * SOUND_BLOCK_MS, float(np.sum(skip)) * SOUND_BLOCK_MS
