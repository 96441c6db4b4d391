"""Synthetic sources that pace themselves: tone, silence, noise, sweep and the demo chime.

Each is a pure function of the frame index, so blocks are phase-continuous and the same
frames always hold the same samples (tests can rebuild the reference signal exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer

Signal = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
"""Maps sample times in seconds to mono samples in [-1, 1]."""

DEFAULT_LEVEL_DB = -12.0
"""Loud enough to measure and hear, with 12 dB of headroom before anything clips."""

DEMO_NOTES_HZ = (523.25, 659.25, 783.99, 1046.5)  # C5 E5 G5 C6
DEMO_NOTE_S = 0.25
DEMO_PERIOD_S = 2.0


def tone(freq: float) -> Signal:
    return lambda t: np.sin(2 * np.pi * freq * t)


def silence() -> Signal:
    return np.zeros_like


def noise(seed: int, rate: int) -> Signal:
    """White noise that depends only on the frame index (and the seed)."""

    def gen(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if t.size == 0:
            return t
        first = round(t[0] * rate)
        # One generator per 4096-frame chunk, keyed by (seed, chunk), keeps it frame-exact.
        out = np.empty(t.size)
        idx = first
        pos = 0
        while pos < t.size:
            chunk, offset = divmod(idx, 4096)
            take = min(4096 - offset, t.size - pos)
            rng = np.random.default_rng([seed, chunk])
            out[pos:pos + take] = rng.uniform(-1.0, 1.0, 4096)[offset:offset + take]
            pos += take
            idx += take
        return out

    return gen


def sweep(f1: float, f2: float, seconds: float) -> Signal:
    """Exponential sine sweep from f1 to f2 over ``seconds``, repeated."""
    k = math.log(f2 / f1)

    def gen(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        tau = np.mod(t, seconds)
        phase = 2 * np.pi * f1 * seconds / k * (np.exp(tau * k / seconds) - 1)
        return np.sin(phase)

    return gen


def demo() -> Signal:
    """A rising four-note chime every two seconds: clearly "deskcast works", not a test tone."""

    def gen(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        tau = np.mod(t, DEMO_PERIOD_S)
        note = np.minimum((tau // DEMO_NOTE_S).astype(int), len(DEMO_NOTES_HZ) - 1)
        freqs = np.asarray(DEMO_NOTES_HZ)[note]
        since = tau - note * DEMO_NOTE_S
        env = np.exp(-since * 6.0) * np.minimum(1.0, since * 200.0)
        env[tau >= DEMO_NOTE_S * (len(DEMO_NOTES_HZ) + 2)] = 0.0
        out: npt.NDArray[np.float64] = env * np.sin(2 * np.pi * freqs * t)
        return out

    return gen


def signal_for(endpoint: Endpoint, rate: int) -> Signal:
    scheme, target = endpoint.scheme, endpoint.target
    nyquist = rate / 2
    if scheme == "tone":
        freq = _number(endpoint, target or "440", "frequency in Hz")
        if not 0 < freq < nyquist:
            raise EndpointError(f"{endpoint}: frequency must be between 0 and {nyquist:g} Hz")
        return tone(freq)
    if scheme == "silence":
        return silence()
    if scheme == "noise":
        return noise(int(_number(endpoint, target or "0", "seed")), rate)
    if scheme == "sweep":
        lo, _, hi = (target or f"20-{min(20000, nyquist * 0.95):g}").partition("-")
        f1 = _number(endpoint, lo, "start frequency")
        f2 = _number(endpoint, hi or str(nyquist * 0.95), "end frequency")
        if not (0 < f1 < nyquist and 0 < f2 < nyquist and f1 != f2):
            raise EndpointError(f"{endpoint}: sweep as F1-F2 in Hz, both below {nyquist:g}")
        seconds = endpoint.number("seconds", 5.0)
        if seconds <= 0:
            raise EndpointError(f"{endpoint}: seconds must be positive")
        return sweep(f1, f2, seconds)
    if scheme == "demo":
        return demo()
    raise EndpointError(f"{endpoint}: not a generator")


def period_frames(endpoint: Endpoint, rate: int, longest_s: float = 1.0) -> int | None:
    """After how many frames the generator's samples repeat, if they do within ``longest_s``:
    a tone of a whole number of Hz after ``rate / gcd(freq, rate)`` frames, silence at once."""
    if endpoint.scheme == "silence":
        return 1
    if endpoint.scheme != "tone":
        return None
    freq = float(endpoint.target or "440")  # checked by signal_for
    if not freq.is_integer():
        return None
    period = rate // math.gcd(int(freq), rate)
    return period if period <= rate * longest_s else None


def _number(endpoint: Endpoint, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise EndpointError(f"{endpoint}: {what} {text!r} is not a number") from None


class ToneSource(Source):
    """tone[:FREQ], silence, noise[:SEED], sweep[:F1-F2], demo — paced at real time."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int,
                 pacer: Pacer | None = None) -> None:
        super().__init__(endpoint, fmt, block_frames)
        self.signal = signal_for(endpoint, fmt.rate)
        level_db = endpoint.number("level", DEFAULT_LEVEL_DB)
        if level_db > 0:
            raise EndpointError(f"{endpoint}: level is in dBFS and must be 0 or below")
        self.gain = 10 ** (level_db / 20)
        # clock_ppm: run the real-time clock off nominal, like a real sound card does, to
        # test drift compensation downstream.
        ppm = endpoint.number("clock_ppm", 0.0)
        if abs(ppm) > 10000:
            raise EndpointError(f"{endpoint}: clock_ppm must be within ±10000")
        self.pacer: Pacer | None = pacer or Pacer(fmt.rate * (1 + ppm / 1e6))
        self._pts = 0
        self.period = period_frames(endpoint, fmt.rate)
        """Frames after which the samples repeat exactly (None: they do not, or not within
        a second): such a signal is rendered once and then cut from that loop."""
        self._loop = b""

    def render(self, start: int, frames: int) -> npt.NDArray[np.float64]:
        """Mono samples for frames [start, start + frames)."""
        t = (start + np.arange(frames, dtype=np.float64)) / self.fmt.rate
        return self.gain * self.signal(t)

    def pcm(self, start: int, frames: int) -> bytes:
        """The encoded frames [start, start + frames), every channel the same."""
        mono = self.render(start, frames)
        return PcmBlock.from_float(np.repeat(mono[:, None], self.fmt.channels, axis=1),
                                   self.fmt).data

    def read(self) -> PcmBlock:
        if self.pacer is not None:
            self.pacer.wait(self._pts)
        period = self.period
        if period is None:
            data = self.pcm(self._pts, self.block_frames)
        else:  # a periodic signal: one period rendered once, repeated to cover any block
            if not self._loop:
                one = self.pcm(0, period)
                self._loop = one * (-(-(period + self.block_frames) // period))
            at = self._pts % period * self.fmt.frame_bytes
            data = self._loop[at:at + self.block_bytes]
        block = PcmBlock(data, self.fmt, self._pts)
        self._pts += self.block_frames
        return block
