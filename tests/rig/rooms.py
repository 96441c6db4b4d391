"""Rooms in sync, measured from one recording: clicks go into ``hub``, every room's output is
recorded beside it on the meter's one sample clock (:mod:`rig.meter`), and each click is found
in every room to a fraction of a sample.

:class:`ClickSignal` is what goes in: silence with a click every ``period_s``: 20 ms of white
noise band-limited to 0.4-5 kHz (so Opus carries it nearly unchanged), Hann-windowed, in a cycle
of eight different bursts that correlate with each other below 0.4 (their own peak is 1.0), so
that within a search window of less than a cycle (4 s) no click is taken for another.

:func:`hub_onsets` finds where each click entered the hub (the first loud millisecond after a
quiet stretch); :func:`locate` finds the hub's own click (the template) in a room's channel by
normalised cross-correlation, the peak refined by parabolic interpolation: a delay in samples
with a fractional part. :class:`ClickTracker` does both on a growing
:class:`~rig.meter.MeterRecording`: per click, a delay per room (or none: the click was lost in
that room); :func:`summarize` turns those into each room's delay and each pair's offset.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .meter import MeterRecording

RATE = 48000
_F64 = npt.NDArray[np.float64]

CLICKS = 8
"""Clicks in the cycle, each a different noise burst."""


@dataclass(frozen=True)
class ClickSignal:
    """Silence with a click every ``period_s`` (the first at ``period_s``), cycling through
    :data:`CLICKS` different ones: ``click_s`` of white noise band-limited to ``band`` (Hz),
    Hann-windowed, at ``level_db`` RMS (its peaks 10-12 dB higher)."""

    rate: int = RATE
    period_s: float = 0.5
    click_s: float = 0.02
    level_db: float = -18.0
    band: tuple[float, float] = (400.0, 5000.0)

    @property
    def period(self) -> int:
        return round(self.period_s * self.rate)

    @property
    def cycle_s(self) -> float:
        """After this long the same click comes again: a search window must be shorter."""
        return self.period_s * CLICKS

    def clicks(self) -> list[_F64]:
        n = round(self.click_s * self.rate)
        size = 1 << (4 * n).bit_length()
        freqs = np.fft.rfftfreq(size, 1 / self.rate)
        outside = (freqs < self.band[0]) | (freqs > self.band[1])
        out: list[_F64] = []
        for seed in range(CLICKS):
            spectrum = np.fft.rfft(np.random.default_rng(seed).normal(size=size))
            spectrum[outside] = 0.0
            x = np.fft.irfft(spectrum, size)[:n] * np.hanning(n)
            out.append(x * 10 ** (self.level_db / 20) / np.sqrt(np.mean(x * x)))
        return out

    def render(self, start: int, frames: int) -> _F64:
        """Mono samples for frames [start, start + frames)."""
        x = np.zeros(frames, dtype=np.float64)
        clicks = self.clicks()
        size = clicks[0].size
        for k in range(max(1, start // self.period), (start + frames) // self.period + 1):
            lo = k * self.period
            if lo + size <= start:
                continue
            click = clicks[k % len(clicks)]
            a, b = max(lo, start), min(lo + size, start + frames)
            x[a - start:b - start] += click[a - lo:b - lo]
        return x

    def pcm(self, start: int, frames: int) -> bytes:
        """Stereo s16le bytes for frames [start, start + frames)."""
        s16 = np.round(np.clip(self.render(start, frames), -1.0, 1.0) * 32767).astype("<i2")
        return np.repeat(s16[:, None], 2, axis=1).tobytes()


def hub_onsets(hub: _F64, rate: int = RATE, threshold_db: float = -40.0,
               quiet_ms: int = 100) -> list[int]:
    """Sample index where each click starts in ``hub`` (mono): the first 1 ms block at or
    above ``threshold_db`` after at least ``quiet_ms`` blocks below it (the first
    ``quiet_ms`` of ``hub`` only ever count as quiet lead-in)."""
    ms = rate // 1000
    n = hub.size // ms
    blocks = hub[: n * ms].reshape(n, ms)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    loud = 20 * np.log10(np.maximum(rms, 1e-12)) >= threshold_db
    found: list[int] = []
    for b in np.flatnonzero(loud[quiet_ms:]) + quiet_ms:
        if not loud[b - quiet_ms:b].any():
            found.append(int(b) * ms)
    return found


@dataclass(frozen=True)
class Match:
    lag: float
    """Samples from the window's start to the template's best match (with a fractional part)."""
    corr: float
    """Normalised cross-correlation there (1.0: a scaled copy)."""


def locate(template: _F64, window: _F64) -> Match | None:
    """Where ``template`` best matches inside ``window``: the peak of the normalised
    cross-correlation over every whole-sample lag (the template inside the window), refined to
    a fraction of a sample by a parabola through the raw correlation at the peak and its two
    neighbours. None if the window is shorter than the template or the template is silent."""
    n, m = template.size, window.size
    if m < n or n == 0:
        return None
    t_energy = float(np.dot(template, template))
    if t_energy == 0.0:
        return None
    size = 1 << (n + m - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(window, size) * np.conj(np.fft.rfft(template, size)), size)
    raw = full[: m - n + 1]  # lag k at [k]; lag -1 at [-1], as the parabola may need
    csum = np.concatenate(([0.0], np.cumsum(window * window)))
    energy = np.maximum(csum[n:] - csum[:-n], 1e-6 * t_energy)
    norm = raw / np.sqrt(t_energy * energy)
    i = int(np.argmax(norm))
    frac = 0.0
    y0, y1, y2 = full[i - 1], full[i], full[i + 1]  # at either end: a partial overlap
    denom = y0 - 2.0 * y1 + y2
    if denom < 0:
        frac = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    return Match(i + frac, float(min(norm[i], 1.0)))


@dataclass
class Click:
    at: int
    """Frame of the recording where the hub's template starts (a little before the click)."""
    delays_ms: dict[str, float | None]
    """Per room: how much later the click is there (None: lost, not found well enough)."""
    corr: dict[str, float]


@dataclass
class ClickTracker:
    """Every click of a (growing) :class:`MeterRecording`, found in the hub and in each room
    up to ``max_delay_s`` later (keep that below the signal's cycle); a click whose best
    match in a room correlates below ``min_corr`` is lost there."""

    recording: MeterRecording
    rooms: tuple[str, ...]
    hub: str = "hub"
    max_delay_s: float = 2.0
    min_corr: float = 0.5
    pre_ms: float = 5.0
    template_ms: float = 30.0
    clicks: list[Click] = field(default_factory=list)
    _from: int = 0

    def _mono(self, x: npt.NDArray[np.float32], sink: str) -> _F64:
        c = self.recording.meter.channel(sink)
        return np.asarray(x[:, c:c + 2].mean(axis=1), dtype=np.float64)

    def update(self) -> None:
        """Measure every click whose search windows the recording now holds in full."""
        rate = self.recording.meter.rate
        pre, length = round(self.pre_ms * rate / 1000), round(self.template_ms * rate / 1000)
        span = round(self.max_delay_s * rate) + length
        quiet = rate // 10
        end = self.recording.frames() - span
        lo = max(0, self._from - quiet)
        if end - lo < 2 * quiet:
            return
        x = self.recording.read(lo, end)
        for onset in hub_onsets(self._mono(x, self.hub), rate):
            at = lo + onset - pre
            if at + pre >= self._from:
                self._measure(at, length, span)
        self._from = end

    def _measure(self, at: int, length: int, span: int) -> None:
        rate = self.recording.meter.rate
        x = self.recording.read(at, at + span)
        template = self._mono(x[:length], self.hub)
        delays: dict[str, float | None] = {}
        corr: dict[str, float] = {}
        for room in self.rooms:
            match = locate(template, self._mono(x, room))
            corr[room] = match.corr if match is not None else 0.0
            ok = match is not None and match.corr >= self.min_corr
            delays[room] = 1000 * match.lag / rate if ok and match is not None else None
        self.clicks.append(Click(at, delays, corr))


@dataclass(frozen=True)
class Spread:
    """Median, 95th percentile and maximum of some values (NaN: none)."""

    count: int
    median: float
    p95: float
    max: float

    @staticmethod
    def of(values: Sequence[float]) -> Spread:
        if not values:
            return Spread(0, math.nan, math.nan, math.nan)
        v = np.asarray(values, dtype=np.float64)
        return Spread(v.size, float(np.median(v)), float(np.percentile(v, 95)), float(v.max()))


@dataclass(frozen=True)
class RoomsSummary:
    clicks: int
    """Clicks found in the hub."""
    delay_ms: dict[str, Spread]
    lost: dict[str, int]
    """Per room: clicks that went into the hub and were not found in that room."""
    offset_ms: dict[tuple[str, str], Spread]
    """Per pair of rooms: |delay difference| over the clicks found in both."""


def delays(clicks: Sequence[Click], room: str) -> list[float]:
    return [d for c in clicks if (d := c.delays_ms[room]) is not None]


def offsets(clicks: Sequence[Click], a: str, b: str) -> list[float]:
    """|delay in ``a`` - delay in ``b``| (ms) of every click found in both rooms."""
    return [abs(da - db) for c in clicks
            if (da := c.delays_ms[a]) is not None and (db := c.delays_ms[b]) is not None]


def summarize(clicks: Sequence[Click], rooms: Sequence[str]) -> RoomsSummary:
    return RoomsSummary(
        len(clicks),
        {r: Spread.of(delays(clicks, r)) for r in rooms},
        {r: sum(1 for c in clicks if c.delays_ms[r] is None) for r in rooms},
        {(a, b): Spread.of(offsets(clicks, a, b)) for a, b in itertools.combinations(rooms, 2)},
    )
