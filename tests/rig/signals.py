"""Test signals and measurements, in plain numpy.

Conventions used throughout:

* Audio is a float64 array of shape ``(frames, channels)`` with full scale at
  ±1.0.  Functions that take audio also accept a 1-D array (one channel).
* Levels are in dBFS of the RMS value: ``20*log10(rms)``.  So a sine with peak
  amplitude 1.0 measures -3.01 dB, and ``level_db(tone(..., level_db=-12))`` is
  -12.0.  Silence measures :data:`SILENCE_DB` (-240) rather than -inf, so
  comparisons and ``abs()`` differences stay finite.
* Where two signals are compared, both are mixed to mono first.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soundfile as sf

__all__ = [
    "SILENCE_DB",
    "Audio",
    "aligned_segment",
    "as_2d",
    "chirp",
    "correlation",
    "db_to_amplitude",
    "dominant_frequency",
    "find_delay",
    "level_db",
    "noise",
    "onset_time",
    "peak_db",
    "read_wav",
    "silence",
    "silence_fraction",
    "speech_wav",
    "to_mono",
    "tone",
    "write_wav",
]

Audio = npt.NDArray[np.float64]

SILENCE_DB = -240.0
_TINY = 10.0 ** (SILENCE_DB / 20.0)


# --------------------------------------------------------------------------- #
# shapes and files
# --------------------------------------------------------------------------- #


def as_2d(x: npt.ArrayLike) -> Audio:
    """``x`` as float64 ``(frames, channels)``; a 1-D array becomes one channel."""
    a: Audio = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"audio must be 1-D or 2-D, got shape {a.shape}")
    return a


def to_mono(x: npt.ArrayLike) -> Audio:
    """Mean of the channels, as a 1-D float64 array."""
    a: Audio = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return a
    mono: Audio = as_2d(a).mean(axis=1)
    return mono


def read_wav(path: str | Path) -> tuple[Audio, int]:
    """Read any file libsndfile knows.  Returns ``(audio (frames, channels), rate)``."""
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return np.ascontiguousarray(data, dtype=np.float64), int(rate)


def write_wav(
    path: str | Path,
    audio: npt.ArrayLike,
    rate: int = 48000,
    subtype: str = "PCM_16",
) -> Path:
    """Write ``audio`` as a WAV file (16-bit PCM by default; values are
    clipped to ±1).  Returns the path."""
    a = np.clip(as_2d(audio), -1.0, 1.0)
    p = Path(path)
    sf.write(str(p), a, rate, subtype=subtype, format="WAV")
    return p


# --------------------------------------------------------------------------- #
# generators
# --------------------------------------------------------------------------- #


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def _frames(seconds: float, rate: int) -> int:
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    return round(seconds * rate)


def _channels(mono: Audio, channels: int) -> Audio:
    if channels < 1:
        raise ValueError("channels must be >= 1")
    return np.repeat(mono.reshape(-1, 1), channels, axis=1)


def silence(seconds: float, rate: int = 48000, channels: int = 2) -> Audio:
    return np.zeros((_frames(seconds, rate), channels), dtype=np.float64)


def tone(
    freq: float,
    seconds: float,
    rate: int = 48000,
    channels: int = 2,
    level_db: float = -12.0,
    *,
    phase: float = 0.0,
) -> Audio:
    """A sine of ``freq`` Hz whose RMS level is ``level_db`` dBFS (peak is
    3.01 dB higher), the same on every channel."""
    n = _frames(seconds, rate)
    t = np.arange(n, dtype=np.float64) / rate
    amp = db_to_amplitude(level_db) * math.sqrt(2.0)
    return _channels(amp * np.sin(2.0 * np.pi * freq * t + phase), channels)


def chirp(
    f0: float,
    f1: float,
    seconds: float,
    rate: int = 48000,
    channels: int = 2,
    *,
    level_db: float = -12.0,
    method: Literal["linear", "log"] = "log",
) -> Audio:
    """A sine sweep from ``f0`` to ``f1`` Hz (RMS ``level_db``).  A chirp has a
    sharp autocorrelation peak, which makes it good for delay measurements."""
    n = _frames(seconds, rate)
    t = np.arange(n, dtype=np.float64) / rate
    if method == "linear":
        k = (f1 - f0) / seconds if seconds > 0 else 0.0
        ph = 2.0 * np.pi * (f0 * t + 0.5 * k * t * t)
    elif method == "log":
        if f0 <= 0 or f1 <= 0:
            raise ValueError("a log sweep needs positive frequencies")
        if math.isclose(f0, f1):
            ph = 2.0 * np.pi * f0 * t
        else:
            ratio = math.log(f1 / f0)
            ph = 2.0 * np.pi * f0 * seconds / ratio * (np.exp(t * ratio / seconds) - 1.0)
    else:
        raise ValueError(f"unknown sweep method {method!r}")
    amp = db_to_amplitude(level_db) * math.sqrt(2.0)
    return _channels(amp * np.sin(ph), channels)


def noise(
    seconds: float,
    rate: int = 48000,
    channels: int = 2,
    level_db: float = -20.0,
    seed: int = 0,
) -> Audio:
    """Reproducible white Gaussian noise, independent per channel, scaled to an
    RMS of exactly ``level_db`` (before clipping to ±1, which at the default
    level practically never happens)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((_frames(seconds, rate), channels))
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    if rms > 0:
        x *= db_to_amplitude(level_db) / rms
    return np.clip(x, -1.0, 1.0)


def speech_wav(
    path: str | Path,
    text: str,
    rate: int = 48000,
    channels: int = 2,
    *,
    voice: str = "en",
    words_per_minute: int = 160,
) -> Path:
    """Speak ``text`` with espeak-ng into a WAV file (16-bit, ``rate`` Hz,
    ``channels`` channels; converted with sox).  Returns the path."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    out = Path(path)
    with tempfile.TemporaryDirectory(prefix="deskcast-speech-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                "sox", str(raw),
                "-r", str(rate), "-c", str(channels), "-b", "16", "-e", "signed-integer",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------- #
# measurements
# --------------------------------------------------------------------------- #


def level_db(x: npt.ArrayLike) -> float:
    """RMS level over all samples and channels, in dBFS (see module doc)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return SILENCE_DB
    rms = math.sqrt(float(np.mean(a * a)))
    return 20.0 * math.log10(max(rms, _TINY))


def peak_db(x: npt.ArrayLike) -> float:
    """Largest absolute sample value, in dBFS."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return SILENCE_DB
    return 20.0 * math.log10(max(float(np.max(np.abs(a))), _TINY))


def dominant_frequency(
    x: npt.ArrayLike,
    rate: int,
    fmin: float = 1.0,
    fmax: float | None = None,
) -> float:
    """The frequency (Hz) of the strongest spectral peak between ``fmin`` and
    ``fmax``.

    Hann window, zero-padding to at least 4x the length, then a parabola
    through the log magnitudes of the peak bin and its neighbours.  For a 1 s
    tone the error is far below 0.1 Hz.
    """
    m = to_mono(x)
    if m.size < 4:
        raise ValueError("need at least 4 samples")
    m = m - m.mean()
    nfft = 1 << max(2, (4 * m.size - 1).bit_length())
    spec = np.abs(np.fft.rfft(m * np.hanning(m.size), nfft))
    freqs = np.fft.rfftfreq(nfft, 1.0 / rate)
    hi = rate / 2.0 if fmax is None else fmax
    band = np.flatnonzero((freqs >= fmin) & (freqs <= hi))
    if band.size == 0:
        raise ValueError("empty frequency band")
    k = int(band[np.argmax(spec[band])])
    if spec[k] <= 0.0:
        raise ValueError("signal is silent")
    if 0 < k < spec.size - 1:
        a, b, c = np.log(np.maximum(spec[k - 1 : k + 2], _TINY))
        denom = a - 2.0 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        shift = 0.0
    return float((k + shift) * rate / nfft)


def tone_level_db(x: npt.ArrayLike, freq: float, rate: int) -> float:
    """Level (dBFS, as an RMS) of the sine component at ``freq`` alone: the Hann-windowed
    projection of the mono signal onto that frequency. A full-scale sine gives -3 dBFS; other
    tones more than a few bins away (``rate / len(x)``) barely count."""
    m = to_mono(x)
    if m.size == 0:
        return SILENCE_DB
    window = np.hanning(m.size)
    t = np.arange(m.size) / rate
    amplitude = 2.0 * abs(np.sum(m * window * np.exp(-2j * np.pi * freq * t))) / window.sum()
    return 20.0 * math.log10(max(amplitude / math.sqrt(2.0), _TINY))


def _xcorr(reference: Audio, recording: Audio) -> tuple[npt.NDArray[np.float64], int]:
    """Full linear cross-correlation; ``c[i]`` belongs to lag ``i - (len(ref)-1)``
    where a positive lag means the recording is late."""
    a, b = reference, recording
    n = a.size + b.size - 1
    nfft = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(b, nfft) * np.conj(np.fft.rfft(a, nfft)), nfft)
    # c[k] = sum_t b[t + k] a[t]; negative lags wrapped to the end.
    full = np.concatenate((c[nfft - (a.size - 1) :], c[: b.size]))
    return full, a.size - 1


def _best_lag(reference: Audio, recording: Audio, max_lag: int | None) -> tuple[float, int]:
    """(sub-sample lag, integer lag) of the largest |cross-correlation|."""
    if reference.size == 0 or recording.size == 0:
        raise ValueError("empty signal")
    c, zero = _xcorr(reference, recording)
    mag = np.abs(c)
    if max_lag is not None:
        lo = max(0, zero - max_lag)
        hi = min(mag.size, zero + max_lag + 1)
        window = mag[lo:hi]
        i = lo + int(np.argmax(window))
    else:
        i = int(np.argmax(mag))
    frac = 0.0
    if 0 < i < mag.size - 1:
        y0, y1, y2 = mag[i - 1], mag[i], mag[i + 1]
        denom = y0 - 2.0 * y1 + y2
        if denom != 0:
            frac = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    return i - zero + frac, i - zero


def find_delay(
    reference: npt.ArrayLike,
    recording: npt.ArrayLike,
    rate: int,
    max_delay: float | None = None,
) -> float:
    """How many seconds later ``reference`` appears in ``recording`` (negative
    if earlier), from the peak of the FFT cross-correlation of the mono mixes.

    Polarity is ignored (the peak of |correlation| is used).  ``max_delay``
    limits the search to ±max_delay seconds.  Periodic signals such as pure
    tones are ambiguous by whole periods; use a chirp, noise or speech.
    """
    max_lag = None if max_delay is None else round(max_delay * rate)
    lag, _ = _best_lag(to_mono(reference), to_mono(recording), max_lag)
    return lag / rate


def aligned_segment(
    reference: npt.ArrayLike,
    recording: npt.ArrayLike,
    max_lag: int | None = None,
) -> Audio:
    """The part of ``recording`` (all its channels) that lines up with
    ``reference`` at the best alignment: ``len(reference)`` frames, zero-padded
    where the recording does not cover the reference."""
    ref = as_2d(reference)
    rec = as_2d(recording)
    _, lag = _best_lag(to_mono(ref), to_mono(rec), max_lag)
    out = np.zeros((ref.shape[0], rec.shape[1]), dtype=np.float64)
    src_lo = max(0, lag)
    src_hi = min(rec.shape[0], lag + ref.shape[0])
    if src_hi > src_lo:
        out[src_lo - lag : src_hi - lag] = rec[src_lo:src_hi]
    return out


def correlation(
    reference: npt.ArrayLike,
    recording: npt.ArrayLike,
    max_lag: int | None = None,
) -> float:
    """Pearson correlation coefficient (in [-1, 1]) between the mono mix of
    ``reference`` and the mono mix of ``recording`` at the best alignment,
    over the frames where both exist.  1.0 means a delayed, scaled, but
    otherwise perfect copy; a dropout or distortion lowers it."""
    ref = to_mono(reference)
    rec = to_mono(recording)
    _, lag = _best_lag(ref, rec, max_lag)
    lo = max(0, -lag)
    hi = min(ref.size, rec.size - lag)
    if hi - lo < 2:
        return 0.0
    a = ref[lo:hi] - ref[lo:hi].mean()
    b = rec[lo + lag : hi + lag] - rec[lo + lag : hi + lag].mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if denom == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


def _block_levels(x: npt.ArrayLike, rate: int, block_ms: float) -> npt.NDArray[np.float64]:
    m = as_2d(x)
    block = max(1, round(rate * block_ms / 1000.0))
    nblocks = m.shape[0] // block
    if nblocks == 0:
        return np.zeros(0, dtype=np.float64)
    blocks = m[: nblocks * block].reshape(nblocks, block * m.shape[1])
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    return np.asarray(20.0 * np.log10(np.maximum(rms, _TINY)), dtype=np.float64)


def silence_fraction(
    x: npt.ArrayLike,
    rate: int,
    block_ms: float = 10.0,
    threshold_db: float = -50.0,
) -> float:
    """Fraction (0..1) of whole ``block_ms`` blocks whose RMS level is below
    ``threshold_db``.  A trailing partial block is ignored; an input shorter
    than one block counts as all silent."""
    levels = _block_levels(x, rate, block_ms)
    if levels.size == 0:
        return 1.0
    return float(np.mean(levels < threshold_db))


def onset_time(
    x: npt.ArrayLike,
    rate: int,
    threshold_db: float = -40.0,
    block_ms: float = 1.0,
) -> float | None:
    """Start time (s) of the first ``block_ms`` block at or above
    ``threshold_db``, or None if there is none."""
    levels = _block_levels(x, rate, block_ms)
    hits = np.flatnonzero(levels >= threshold_db)
    if hits.size == 0:
        return None
    block = max(1, round(rate * block_ms / 1000.0))
    return float(hits[0] * block / rate)
