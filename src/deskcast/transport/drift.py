"""Clock drift compensation where the two clocks meet: the receiver.

The sender's sound card and ours never run at exactly the same rate (tens to hundreds of ppm).
Left alone, the jitter buffer slowly fills (latency creeps up) or empties (underruns). The
:class:`DriftController` watches how far the buffer is from its target and steers a resampling
ratio within ``±max_ppm`` (2‰ by default, far below what anyone can hear as pitch); the
:class:`AdaptiveResampler` applies it with libsamplerate, whose ratio may change between calls.

The controller is pure (fed with buffer depths and played sample counts) so that an hour of
300 ppm drift can be simulated in a unit test in milliseconds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import samplerate

from deskcast.media import AudioFormat, PcmBlock

MAX_PPM = 2000.0
"""Largest correction: 2‰ changes pitch by 3.5 cents, inaudible; 300 ppm drift needs 15 %."""


class DriftController:
    """PI controller: buffer depth error in, resampling ratio (output/input) out."""

    def __init__(self, rate: int, *, max_ppm: float = MAX_PPM, smoothing_s: float = 4.0,
                 kp_per_s: float = 0.1, ki_per_s2: float = 0.005,
                 deadband_ms: float = 8.0) -> None:
        # Gains (checked in tests/unit/test_drift.py): 10 ms beyond the deadband asks for
        # 1000 ppm at once; the integral learns a steady drift within a minute. 30 ms of
        # network jitter moves the ratio by < 700 ppm (1 cent), so the correction itself is
        # never heard.
        self.rate = rate
        self.max_dev = max_ppm / 1e6
        self.smoothing_s = smoothing_s
        self.kp = kp_per_s
        self.ki = ki_per_s2
        self.deadband_s = deadband_ms / 1000
        """Errors this small are left alone: packet steps and bursty devices (PipeWire's
        quantum) make the depth swing that much without any drift."""
        self.error_s = 0.0
        """Smoothed depth error in seconds (positive: more buffered than the target)."""
        self.integral = 0.0
        self.ratio = 1.0
        self._primed = False
        self._drift_avg = 0.0
        self.settle_s = 2.0
        """The first seconds of a stream only measure where the buffer sits: bursty senders
        and devices (PipeWire's 42 ms quantum) keep it above the start threshold on average,
        and that offset is not drift."""
        self.bias_samples: float | None = None
        self._settled_target = 0.0
        self._settle_sum = 0.0
        self._settle_time = 0.0

    @property
    def drift_ppm(self) -> float:
        """The sender's clock relative to ours as estimated (positive: sender is faster),
        averaged over about ten seconds (packet-sized steps make the integral wobble)."""
        return self._drift_avg * 1e6

    def update(self, depth_samples: float, target_samples: float, played_samples: int) -> float:
        """Account for ``played_samples`` of output with the buffer at ``depth_samples``."""
        dt = played_samples / self.rate
        if self.bias_samples is not None and \
                abs(target_samples - self._settled_target) > 0.005 * self.rate:
            # The jitter buffer moved its target: measure the new level instead of pulling
            # the buffer there by resampling (that would bend the pitch; the buffer adapts by
            # itself). The learnt drift stays applied meanwhile.
            self.reset()
        if self.bias_samples is None:
            self._settle_sum += depth_samples * dt
            self._settle_time += dt
            if self._settle_time < self.settle_s:
                return self.ratio
            mean = self._settle_sum / self._settle_time
            limit = 0.06 * self.rate
            self.bias_samples = max(-limit, min(limit, mean - target_samples))
            self._settled_target = target_samples
        error = (depth_samples - target_samples - self.bias_samples) / self.rate
        if not self._primed:
            self.error_s, self._primed = error, True
        alpha = min(1.0, dt / self.smoothing_s)
        self.error_s += alpha * (error - self.error_s)
        excess = max(0.0, abs(self.error_s) - self.deadband_s)
        beyond = excess if self.error_s > 0 else -excess
        # The integral learns the steady drift; the proportional part removes the offset.
        self.integral = _clamp(self.integral + self.ki * beyond * dt, self.max_dev)
        correction = _clamp(self.integral + self.kp * beyond, self.max_dev)
        self._drift_avg += min(1.0, dt / 10.0) * (self.integral - self._drift_avg)
        # Too much buffered -> consume input faster -> fewer output samples per input.
        self.ratio = 1.0 - correction
        return self.ratio

    def reset(self) -> None:
        """A new stream: measure its buffer offset again (the learnt drift stays: the clocks
        did not change)."""
        self.error_s = 0.0
        self._primed = False
        self.ratio = 1.0 - self.integral
        self.bias_samples = None
        self._settle_sum = self._settle_time = 0.0


def _clamp(x: float, limit: float) -> float:
    return max(-limit, min(limit, x))


class AdaptiveResampler:
    """Resamples PCM blocks by a ratio that may change from block to block."""

    def __init__(self, fmt: AudioFormat, converter: str = "sinc_fastest") -> None:
        self.fmt = fmt
        self._resampler = samplerate.Resampler(converter, channels=fmt.channels)

    def process(self, block: PcmBlock, ratio: float) -> PcmBlock:
        if ratio == 1.0 and not self.active:
            return block
        self.active = True
        x: npt.NDArray[np.float32] = block.as_float()
        y = np.asarray(self._resampler.process(x, ratio), dtype=np.float32)
        return PcmBlock.from_float(y.reshape(-1, self.fmt.channels), self.fmt, block.pts)

    active = False
    """Once resampling has started it stays on: switching it off would cut the filter's
    buffered samples out of the stream."""

    def reset(self) -> None:
        self._resampler.reset()
        self.active = False
