"""Judging a recording of steady tones: where the sound is, which tones, and whether it is
whole (no gap, click or concealment) — from the audio alone, whatever the delay or phase.

A window of the recording is fitted, by least squares, with a sine and a cosine at each
expected frequency (a ``dmix`` of two players mixes two tones with unknown phases); what the
fit leaves over is noise, distortion, a dropout or a click. A lost millisecond in a 50 ms
window leaves ~-17 dB of the tone; 16-bit quantization ~-90 dB, an Opus round trip at 128
kbit/s ~-35 dB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rig.signals import dominant_frequency, to_mono, tone_level_db

_TINY = 1e-12


@dataclass(frozen=True)
class ToneSpan:
    start_s: float
    """First 10 ms block above the threshold."""
    end_s: float
    """End of the last one."""
    silent_blocks: int
    """10 ms blocks below the threshold between the two: holes in the sound."""

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def block_levels_db(x: npt.ArrayLike, rate: int, block_ms: float = 10.0) -> npt.NDArray[np.float64]:
    m = to_mono(x)
    block = round(rate * block_ms / 1000)
    n = m.size // block
    rms = np.sqrt(np.mean(m[: n * block].reshape(n, block) ** 2, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, _TINY)), dtype=np.float64)


def sound_span(x: npt.ArrayLike, rate: int, threshold_db: float = -40.0) -> ToneSpan | None:
    """Where the recording has sound (10 ms blocks), and the holes inside; None if silent."""
    levels = block_levels_db(x, rate)
    loud = np.flatnonzero(levels > threshold_db)
    if loud.size == 0:
        return None
    first, last = int(loud[0]), int(loud[-1])
    holes = int(np.sum(levels[first : last + 1] <= threshold_db))
    return ToneSpan(first / 100, (last + 1) / 100, holes)


def residual_db(x: npt.ArrayLike, freqs: Sequence[float], rate: int) -> float:
    """What a least-squares fit of sines at ``freqs`` leaves of ``x``, in dB relative to ``x``."""
    m = to_mono(x)
    t = np.arange(m.size) / rate
    basis = np.column_stack([f(2 * np.pi * fr * t) for fr in freqs for f in (np.sin, np.cos)]
                            + [np.ones_like(t)])
    coef, *_ = np.linalg.lstsq(basis, m, rcond=None)
    rest = m - basis @ coef
    return 10 * math.log10(max(float(np.mean(rest**2)), _TINY) / max(float(np.mean(m**2)),
                                                                        _TINY))


def window_residuals_db(x: npt.ArrayLike, freqs: Sequence[float], rate: int,
                        window_s: float = 0.05) -> list[float]:
    """:func:`residual_db` of each whole ``window_s`` window of ``x``."""
    m = to_mono(x)
    size = round(window_s * rate)
    return [residual_db(m[i : i + size], freqs, rate) for i in range(0, m.size - size + 1, size)]


@dataclass(frozen=True)
class ToneReport:
    span: ToneSpan
    frequency_hz: float
    """The strongest tone, measured over the steady middle."""
    levels_db: dict[float, float]
    """Each expected tone's own level (dBFS RMS) over the steady middle."""
    worst_residual_db: float
    """The worst 50 ms window of the steady middle, fitted at the measured frequencies."""
    bad_windows: int
    """Windows of the steady middle whose residual is above ``bad_db``."""


def judge(x: npt.ArrayLike, rate: int, freqs: Sequence[float], *, trim_s: float = 0.25,
          bad_db: float = -25.0) -> ToneReport | None:
    """The sound span of ``x`` and, over its middle (``trim_s`` off each end, where players
    start and stop at different moments), the tones and how whole they are."""
    m = to_mono(x)
    span = sound_span(m, rate)
    if span is None:
        return None
    lo, hi = round((span.start_s + trim_s) * rate), round((span.end_s - trim_s) * rate)
    middle = m[lo:hi] if hi - lo > rate // 10 else m[round(span.start_s * rate):
                                                     round(span.end_s * rate)]
    freq = dominant_frequency(middle, rate)
    # Fit at the measured frequencies: a receiver's drift correction may move them a little.
    measured = [freq if abs(freq - f) < 5 else _near(middle, f, rate) for f in freqs]
    residuals = window_residuals_db(middle, measured, rate)
    return ToneReport(span, freq, {f: tone_level_db(middle, f, rate) for f in freqs},
                      max(residuals, default=0.0), sum(r > bad_db for r in residuals))


def _near(x: npt.ArrayLike, freq: float, rate: int) -> float:
    return dominant_frequency(x, rate, fmin=freq - 5, fmax=freq + 5)
