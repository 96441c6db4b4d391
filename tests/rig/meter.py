"""Every output on one sample clock: a multi-channel null sink with each sink remapped onto its
own channels, recorded as one stream, so that every delay is a sample offset inside one file.

On a private sound server, :meth:`Meter.installed` loads ``module-null-sink sink_name=meter`` with
``2N`` channels (``aux0..``) and, for each of N names (``hub``, ``out``, ...), a stereo
``module-remap-sink`` onto its own pair of channels. Whatever plays into ``hub`` and whatever
a receiver plays into ``out`` are mixed by the one meter sink, on its one clock, and
:class:`MeterRecording` records ``meter.monitor`` (to a file: an hour is 1.4 GB at 4 channels).
Nothing has to be aligned afterwards: no arrival times, no second recording.

:class:`MarkerSignal` is what goes in: a steady 1 kHz tone at -30 dBFS (a gap in the output is
a run of silence) with a 30 ms chirp at -12 dBFS every 0.5 s, in a cycle of four different
chirps (a delay is never mistaken by a whole period below 2 s). :class:`EventTracker` finds each
chirp where it entered the hub and, by cross-correlation, where it left an output: one delay
per chirp; it also counts the output's gaps. It works on a growing recording, a piece at a time.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .capture import CaptureError
from .signals import chirp, correlation, find_delay
from .soundserver import SoundServer

METER = "meter"
RATE = 48000
_F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Meter:
    """The layout: ``meter`` (``2 * len(sinks)`` channels), each of ``sinks`` on its pair."""

    sinks: tuple[str, ...] = ("hub", "out")
    rate: int = RATE

    @property
    def channels(self) -> int:
        return 2 * len(self.sinks)

    @property
    def channel_map(self) -> str:
        return ",".join(f"aux{i}" for i in range(self.channels))

    def channel(self, sink: str) -> int:
        """The first (left) channel of ``sink`` in the meter's recording."""
        return 2 * self.sinks.index(sink)

    @contextlib.contextmanager
    def installed(self, server: SoundServer) -> Iterator[Meter]:
        """The meter and its remap sinks loaded on ``server`` while the ``with`` runs."""
        modules: list[int] = []

        def load(module: str, *args: str) -> None:
            modules.append(int(server.pactl("load-module", module, *args).strip()))

        try:
            args = [f"sink_name={METER}", f"rate={self.rate}", f"channels={self.channels}",
                    f"channel_map={self.channel_map}"]
            if server.kind == "pulseaudio":
                args.append("norewinds=1")
            load("module-null-sink", *args)
            for i, name in enumerate(self.sinks):
                load("module-remap-sink", f"sink_name={name}", f"master={METER}",
                     "channels=2", f"master_channel_map=aux{2 * i},aux{2 * i + 1}",
                     "channel_map=front-left,front-right", "remix=no")
            server.wait_for(lambda: all(n in server.sinks() for n in self.sinks) or None)
            yield self
        finally:
            for index in reversed(modules):
                with contextlib.suppress(Exception):
                    server.unload_module(index)


class MeterRecording:
    """``parec meter.monitor`` (all channels, s16le) into ``path`` while it runs; read back
    any stretch of it with :meth:`read` while it is still growing."""

    def __init__(self, meter: Meter, path: Path, server: SoundServer | None = None,
                 latency_ms: int = 20) -> None:
        self.meter = meter
        self.server = server
        self.path = path
        self.latency_ms = latency_ms
        self.frame_bytes = 2 * meter.channels
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> MeterRecording:
        m = self.meter
        if self.server is None:
            raise CaptureError("MeterRecording.start needs the sound server")
        with self.path.open("wb") as fh:
            self._proc = subprocess.Popen(
                ["parec", f"--device={METER}.monitor", "--format=s16le", f"--rate={m.rate}",
                 f"--channels={m.channels}", f"--channel-map={m.channel_map}", "--raw",
                 f"--latency-msec={self.latency_ms}", "--client-name=deskcast-meter"],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.PIPE,
                env=self.server.env)
        deadline = time.monotonic() + timeout
        while self.frames() == 0:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CaptureError(f"parec {METER}.monitor: no audio within {timeout:g} s")
            time.sleep(0.02)
        return self

    def frames(self) -> int:
        """Frames recorded so far."""
        try:
            return self.path.stat().st_size // self.frame_bytes
        except OSError:
            return 0

    def read(self, start: int, stop: int) -> _F32:
        """Frames [start, stop) as float32 ``(frames, channels)`` (fewer if not there yet)."""
        start = max(0, start)
        count = max(0, min(stop, self.frames()) - start)
        raw = np.fromfile(self.path, dtype="<i2", count=count * self.meter.channels,
                          offset=start * self.frame_bytes)
        return (raw.astype(np.float32) / 32768.0).reshape(-1, self.meter.channels)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> MeterRecording:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass(frozen=True)
class MarkerSignal:
    """The bed tone with a chirp every ``period_s``, cycling through four chirps."""

    rate: int = RATE
    period_s: float = 0.5
    burst_s: float = 0.03
    bed_hz: float = 1000.0
    bed_db: float = -30.0
    burst_db: float = -12.0

    @property
    def period(self) -> int:
        return round(self.period_s * self.rate)

    def bursts(self) -> list[npt.NDArray[np.float64]]:
        bands = ((300.0, 6000.0), (6000.0, 300.0), (500.0, 3000.0), (3000.0, 500.0))
        return [chirp(f0, f1, self.burst_s, self.rate, 1, level_db=self.burst_db)[:, 0]
                for f0, f1 in bands]

    def render(self, start: int, frames: int) -> npt.NDArray[np.float64]:
        """Mono samples for frames [start, start + frames)."""
        n = start + np.arange(frames, dtype=np.int64)
        amp = 10 ** (self.bed_db / 20) * np.sqrt(2.0)
        phase = 2 * np.pi * self.bed_hz * (n % self.rate) / self.rate
        x: npt.NDArray[np.float64] = amp * np.sin(phase)
        bursts = self.bursts()
        size = bursts[0].size
        first = start // self.period
        for k in range(first, (start + frames) // self.period + 1):
            lo = k * self.period
            if lo + size <= start or k < 1:
                continue
            burst = bursts[k % len(bursts)]
            a, b = max(lo, start), min(lo + size, start + frames)
            x[a - start:b - start] += burst[a - lo:b - lo]
        return x

    def pcm(self, start: int, frames: int) -> bytes:
        """Stereo s16le bytes for frames [start, start + frames)."""
        mono = np.clip(self.render(start, frames), -1.0, 1.0)
        s16 = np.round(mono * 32767).astype("<i2")
        return np.repeat(s16[:, None], 2, axis=1).tobytes()


class Signal(Protocol):
    """What :class:`SignalPlayer` plays (:class:`MarkerSignal`, or a benchmark's own)."""

    @property
    def rate(self) -> int: ...

    def pcm(self, start: int, frames: int) -> bytes:
        """Stereo s16le bytes for frames [start, start + frames)."""
        ...


class SignalPlayer:
    """Plays a :class:`Signal` (a :class:`MarkerSignal`, say) into ``sink`` with ``pacat`` for
    ``seconds`` (fed from a thread, so an hour needs no file). ``latency_ms`` is pacat's
    buffer: if pacat is not scheduled for that long (a busy machine), the sink gets a gap."""

    def __init__(self, server: SoundServer, sink: str, signal: Signal,
                 seconds: float, latency_ms: int = 60) -> None:
        self.server, self.sink, self.signal, self.seconds = server, sink, signal, seconds
        self.latency_ms = latency_ms
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> SignalPlayer:
        self._proc = subprocess.Popen(
            ["pacat", "--playback", f"--device={self.sink}", "--format=s16le",
             f"--rate={self.signal.rate}", "--channels=2", "--raw",
             f"--latency-msec={self.latency_ms}", "--client-name=deskcast-marker"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self.server.env)
        self._thread = threading.Thread(target=self._feed, name="marker-feed", daemon=True)
        self._thread.start()
        return self

    def _feed(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        total = round(self.seconds * self.signal.rate)
        chunk = self.signal.rate // 10
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            for at in range(0, total, chunk):
                if self._stop.is_set():
                    break
                proc.stdin.write(self.signal.pcm(at, min(chunk, total - at)))
            proc.stdin.close()

    def running(self) -> bool:
        """Whether pacat is still playing."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float) -> None:
        if self._proc is not None:
            self._proc.wait(timeout=timeout)

    def stop(self) -> None:
        self._stop.set()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def __enter__(self) -> SignalPlayer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class Event:
    at: int
    """Frame of the recording where the chirp entered the hub."""
    delay_ms: float
    corr: float


@dataclass
class EventTracker:
    """Delays and gaps of one output, measured from a (growing) :class:`MeterRecording`."""

    recording: MeterRecording
    hub: str = "hub"
    out: str = "out"
    max_delay_s: float = 1.0
    min_corr: float = 0.5
    gap_ms: float = 5.0
    silent_db: float = -50.0
    events: list[Event] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    """Frames of chirps found in the hub but not (well enough) in the output."""
    gaps: list[tuple[int, float]] = field(default_factory=list)
    """(frame of the output where it fell silent, ms) for each gap of ``gap_ms`` or more."""
    silent_ms: float = 0.0
    checked_ms: float = 0.0
    _onset_from: int = 0
    _gap_from: int | None = None
    _run: int = 0
    _run_at: int = 0

    def _mono(self, x: _F32, sink: str) -> npt.NDArray[np.float64]:
        c = self.recording.meter.channel(sink)
        return np.asarray(x[:, c:c + 2].mean(axis=1), dtype=np.float64)

    def update(self) -> None:
        """Measure every chirp (and the gaps) the recording now holds in full."""
        rate = self.recording.meter.rate
        pre, length = round(0.005 * rate), round(0.05 * rate)
        span = round(self.max_delay_s * rate)
        end = self.recording.frames() - span - length
        ms = rate // 1000
        if end - self._onset_from < 50 * ms:
            return
        lo = max(0, self._onset_from - 30 * ms)
        x = self.recording.read(lo, end)
        hub = self._mono(x, self.hub)
        n = hub.size // ms
        loud = _levels_db(hub[: n * ms], ms) > -21.0
        for b in np.flatnonzero(loud[20:] & ~loud[19:-1].astype(bool)) + 20:
            if loud[b - 20:b].any():
                continue
            at = lo + int(b) * ms
            if at < self._onset_from:
                continue
            self._measure(at - pre, length, span)
        self._onset_from = lo + n * ms
        self._update_gaps(self._onset_from)

    def _measure(self, at: int, length: int, span: int) -> None:
        rate = self.recording.meter.rate
        x = self.recording.read(at, at + span + length)
        ref = self._mono(x[:length], self.hub)
        window = self._mono(x, self.out)
        lag = find_delay(ref, window, rate, max_delay=self.max_delay_s)
        k = round(lag * rate)
        corr = correlation(ref, window[k:k + length], max_lag=2) if lag >= 0 else 0.0
        if corr < self.min_corr:
            self.missed.append(at)
        else:
            self.events.append(Event(at, 1000 * lag, corr))

    def _update_gaps(self, upto: int) -> None:
        """Silent 1 ms blocks of the output while the hub, one delay earlier, was sounding."""
        if not self.events:
            return
        rate = self.recording.meter.rate
        ms = rate // 1000
        delay = round(float(np.median([e.delay_ms for e in self.events[-9:]])) * ms)
        start = self._gap_from if self._gap_from is not None else self.events[0].at + delay
        stop = upto + delay
        if stop - start < ms:
            return
        x = self.recording.read(start - delay, stop)
        n = (x.shape[0] - delay) // ms
        if n <= 0:
            return
        hub = _levels_db(self._mono(x[: n * ms], self.hub), ms) > self.silent_db
        out = _levels_db(self._mono(x[delay:delay + n * ms], self.out), ms) <= self.silent_db
        for i, (sounding, silent) in enumerate(zip(hub, out, strict=True)):
            if not sounding:
                continue
            self.checked_ms += 1
            if silent:
                if self._run == 0:
                    self._run_at = start + i * ms
                self._run += 1
                self.silent_ms += 1
            elif self._run:
                if self._run >= self.gap_ms:
                    self.gaps.append((self._run_at, float(self._run)))
                self._run = 0
        self._gap_from = start + n * ms


def _levels_db(mono: npt.NDArray[np.float64], block: int) -> npt.NDArray[np.float64]:
    n = mono.size // block
    blocks = mono[: n * block].reshape(n, block)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    db: npt.NDArray[np.float64] = 20 * np.log10(np.maximum(rms, 1e-12))
    return db


def steps(values_ms: Sequence[float], min_ms: float = 3.0,
          width: int = 5) -> list[tuple[int, float]]:
    """Where a series of delays moves to a new level and stays: (index, size in ms) for each
    change of at least ``min_ms`` between the median of the ``width`` values before and of the
    ``width`` values after (a single stray value is not a step). The index is that of the
    largest single move near the change."""
    v = np.asarray(values_ms, dtype=np.float64)
    found: list[tuple[int, float]] = []
    i = width
    while i <= v.size - width:
        change = float(np.median(v[i:i + width]) - np.median(v[i - width:i]))
        if abs(change) < min_ms:
            i += 1
            continue
        lo = i - width
        j = lo + 1 + int(np.argmax(np.abs(np.diff(v[lo:i + width]))))
        found.append((j, change))
        i = j + width
    return found
