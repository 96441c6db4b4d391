"""Playout on a schedule: every sample heard at the sender's capture time plus the route's
latency, the same instant in every room.

The sender answers each receiver's clock exchange with its timeline
(:class:`~deskcast.transport.timesync.TimelinePoint`: which RTP timestamp it captures when,
on its wall clock, and the route's latency); the exchange tells how the sender's clock reads
here (:class:`~deskcast.transport.timesync.SenderClock`). So at any moment of our clock the
sample that is due to be heard is known: :meth:`Schedule.due_timestamp`.

What the receiver plays next is heard after what the sink still has queued (as the sink
reports it) and ``output_offset_s`` (what the user says the speakers, a Bluetooth link or an
AV receiver add beyond that). The :class:`Schedule` compares the sample due then with the one
about to be played:

* **Locking.** When the stream starts (or after it was lost), it starts exactly at the
  sample due: silence first if the audio is early, the audio due now (the rest of a frame
  cut) if it is late. One jump, before anything is heard.
* **Locked.** From then on it never jumps: the error (samples played late, smoothed over
  ``smoothing_s``) is steered to zero by resampling, ``error / tau_s`` plus what an integral
  learns of our sink's drift, plus the clocks' rates as they are measured (the
  feed-forward), within ``max_ppm`` (2 permille: a 20 ms error is gone in
  10 s; below 1 ms in under a second). Only an error beyond ``relock_ms`` (a sink that
  stalled, a sender that restarted its clock) locks anew.

Pure: times and readings are passed in.
"""

from __future__ import annotations

import logging
import math

from deskcast.transport.timesync import SenderClock

logger = logging.getLogger(__name__)


class Schedule:
    """The sample due to be heard, and the ratio that keeps playout on it."""

    def __init__(self, rate: int, clock: SenderClock, *, output_offset_s: float = 0.0,
                 max_ppm: float = 2000.0, tau_s: float = 0.5, integral_s: float = 2.0,
                 smoothing_s: float = 0.25, relock_ms: float = 20.0) -> None:
        self.rate = rate
        self.clock = clock
        self.output_offset_s = output_offset_s
        self.max_dev = max_ppm / 1e6
        self.tau_s = tau_s
        self.integral_s = integral_s
        self.smoothing_s = smoothing_s
        self.relock = relock_ms * rate / 1000
        self.locked = False
        self.locks = 0
        """How often playout started on (or jumped back to) the timeline."""
        self.error: float | None = None
        """Samples played late, smoothed (negative: early); None while not locked."""
        self.integral = 0.0
        self.correction = 0.0
        """The last correction (1 - ratio)."""

    @property
    def latency_s(self) -> float | None:
        """The route's latency the sender keeps (None: it keeps no schedule, or we do not
        know its clock yet)."""
        point = self.clock.point
        if point is None or not point.latency_us or not self.clock.known:
            return None
        return point.latency_us / 1e6

    @property
    def ready(self) -> bool:
        return self.latency_s is not None

    def due_timestamp(self, heard_s: float) -> float | None:
        """The (extended) timestamp of the sample due to be heard at ``heard_s`` on our
        clock."""
        latency = self.latency_s
        point = self.clock.point
        if latency is None or point is None:
            return None
        captured = self.clock.to_sender(heard_s) - latency
        speed = self.rate * (1.0 + point.rate_ppb * 1e-9)
        return self.clock.point_ext + (captured - self.clock.point_sender_s) * speed

    def heard_s(self, now_s: float, queued_samples: float | None) -> float:
        """When what is written next will be heard."""
        return now_s + (queued_samples or 0.0) / self.rate + self.output_offset_s

    def lock(self) -> None:
        """Playout starts at the sample due (the caller aligned it)."""
        self.locked = True
        self.locks += 1
        self.error = None

    def unlock(self) -> None:
        self.locked = False
        self.error = None

    def steer(self, late_samples: float, dt_s: float) -> float | None:
        """The ratio (output/input) for the next ``dt_s`` of audio, the next sample being
        ``late_samples`` late; None if so far off that playout must lock anew."""
        if abs(late_samples) > self.relock:
            logger.info("playout is %.1f ms off the timeline: starting on it again",
                        1000 * late_samples / self.rate)
            self.unlock()
            return None
        a = min(1.0, dt_s / self.smoothing_s)
        self.error = late_samples if self.error is None else \
            self.error + a * (late_samples - self.error)
        error_s = self.error / self.rate
        self.integral = _clamp(self.integral + error_s * dt_s / (self.tau_s * self.integral_s),
                               self.max_dev)
        self.correction = _clamp(self.feed_forward + error_s / self.tau_s + self.integral,
                                 self.max_dev)
        return 1.0 - self.correction

    @property
    def feed_forward(self) -> float:
        """The correction the clocks ask for: the sender's audio runs at its timeline's rate
        against its wall clock, which runs at the exchange's rate against ours (what is
        left, our sink against our clock, the integral learns)."""
        point = self.clock.point
        return (0.0 if point is None else point.rate_ppb * 1e-9) + self.clock.rate

    def fields(self) -> dict[str, object]:
        """For --stats-json."""
        latency = self.latency_s
        return {"schedule_latency_ms": None if latency is None else round(1000 * latency, 2),
                "schedule_locks": self.locks,
                "schedule_error_ms": None if self.error is None or math.isnan(self.error)
                else round(1000 * self.error / self.rate, 3),
                "schedule_ppm": round(self.correction * 1e6, 1)}


def _clamp(x: float, limit: float) -> float:
    return max(-limit, min(limit, x))
