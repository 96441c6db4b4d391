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
    """PI controller: buffer depth error in, resampling ratio (output/input) out.

    The set-point is the level the buffer settled at, not the jitter buffer's target: the
    jitter buffer reaches its target by itself, in discrete steps (a concealed frame when it
    runs dry, dropped audio when far too much is queued), and tells us about each step with
    :meth:`shift`. Resampling only removes the slow slide that two clocks cause. Pulling the
    buffer to a target by resampling would bend the pitch for seconds after every step.
    """

    def __init__(self, rate: int, *, max_ppm: float = MAX_PPM, smoothing_s: float = 4.0,
                 kp_per_s: float = 0.1, ki_per_s2: float = 0.005,
                 deadband_ms: float = 8.0, settle_s: float = 2.0,
                 relax_ppm: float = 500.0) -> None:
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
        self.settle_s = settle_s
        """The first seconds of a stream only measure where the buffer sits: bursty senders
        and devices (PipeWire's 42 ms quantum) keep it above the start threshold on average,
        and that offset is not drift."""
        self.error_s = 0.0
        """Smoothed depth error in seconds (positive: more buffered than the set-point)."""
        self.integral = 0.0
        self.ratio = 1.0
        self.setpoint: float | None = None
        """Depth (samples) the controller holds; None while it is being measured."""
        self._primed = False
        self._drift_avg = 0.0
        self._settle_sum = 0.0
        self._settle_time = 0.0
        self._offset: float | None = None
        """Set-point minus the jitter target when the stream settled."""
        self.relax_ppm = relax_ppm
        """How fast audio added by the jitter buffer's steps is played out again (500 ppm:
        20 ms in 40 s, a quarter of the pitch change anyone could hear)."""
        self.relax_after_s = 60.0
        """... once no step came for this long (a network that was late once is often
        late again soon: keep the margin for a while; with a late burst every 20 s, 10 s here
        ran the buffer dry at every third burst in simulation)."""
        self._since_step = 0.0

    @property
    def drift_ppm(self) -> float:
        """The sender's clock relative to ours as estimated (positive: sender is faster),
        averaged over about ten seconds (packet-sized steps make the integral wobble)."""
        return self._drift_avg * 1e6

    def update(self, depth_samples: float, played_samples: int,
               target_samples: float | None = None) -> float:
        """Account for ``played_samples`` of output with the buffer at ``depth_samples``.

        With ``target_samples`` (the jitter buffer's target), audio that steps added beyond
        what the stream settled at relative to the target is played out again slowly, at
        ``relax_ppm``: after a burst of late packets the delay returns to where it was.
        """
        dt = played_samples / self.rate
        if self.setpoint is None:
            self._settle_sum += depth_samples * dt
            self._settle_time += dt
            if self._settle_time < self.settle_s:
                return self.ratio
            self.setpoint = self._settle_sum / self._settle_time
            self._offset = None if target_samples is None else self.setpoint - target_samples
        relax = 0.0
        if target_samples is not None and self._offset is not None:
            floor = target_samples + self._offset
            self._since_step += dt
            if self.setpoint - floor > 0.002 * self.rate and \
                    self._since_step >= self.relax_after_s:
                # Consuming relax_ppm faster drains exactly this much: the set-point follows,
                # so the error (and the learnt drift) is untouched.
                relax = self.relax_ppm / 1e6
                self.setpoint -= relax * played_samples
        error = (depth_samples - self.setpoint) / self.rate
        if not self._primed:
            self.error_s, self._primed = error, True
        alpha = min(1.0, dt / self.smoothing_s)
        self.error_s += alpha * (error - self.error_s)
        excess = max(0.0, abs(self.error_s) - self.deadband_s)
        beyond = excess if self.error_s > 0 else -excess
        # The integral learns the steady drift; the proportional part removes the offset.
        self.integral = _clamp(self.integral + self.ki * beyond * dt, self.max_dev)
        correction = _clamp(self.integral + self.kp * beyond + relax, self.max_dev)
        self._drift_avg += min(1.0, dt / 10.0) * (self.integral - self._drift_avg)
        # Too much buffered -> consume input faster -> fewer output samples per input.
        self.ratio = 1.0 - correction
        return self.ratio

    def shift(self, samples: float) -> None:
        """The buffer level was stepped on purpose by ``samples`` (positive: more audio
        queued, e.g. a frame concealed without consuming; negative: audio dropped). Follow it
        instead of correcting it."""
        if self.setpoint is None:
            self._restart_settling()
            return
        # Depth and set-point move together, so the (smoothed) error is unchanged.
        self.setpoint += samples
        self._since_step = 0.0

    def reset(self) -> None:
        """A new stream or a restart after silence: measure the buffer level again (the
        learnt drift stays applied: the clocks did not change)."""
        self.error_s = 0.0
        self._primed = False
        self.ratio = 1.0 - self.integral
        self.setpoint = None
        self._restart_settling()

    def _restart_settling(self) -> None:
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
