"""The playout stage: the jitter buffer and the controller through one Hold/Taken per read,
and the set-point as the place a schedule plugs in."""

from __future__ import annotations

import numpy as np
import pytest

from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.jitter import Hold, JitterBuffer
from deskcast.transport.playout import DriftController, Playout

RATE = 48000
F = 960


def test_take_drops_what_the_hold_asks_and_tells_what_it_held_before() -> None:
    jb = JitterBuffer(RATE, target_ms=20, adaptive=False)
    for i in range(6):
        jb.put(i * F, bytes([i]), F, 0.0)
    first = jb.take(Hold(drop_samples=2 * F))     # not playing yet: nothing to drop
    assert first.frame is not None and first.frame.timestamp == 0
    assert (first.depth_samples, first.target_samples, first.skipped_samples) == (None, F, 0)
    taken = jb.take(Hold(drop_samples=2 * F))
    assert taken.frame is not None and taken.frame.timestamp == 3 * F   # 1 and 2 dropped
    assert (taken.depth_samples, taken.skipped_samples) == (5 * F, 2 * F)


class Stream:
    """A sender at our rate, packets 1 ms in the network, read through :meth:`Playout.read`
    by a sink that keeps a frame queued: it asks for the next frame when it has played what
    the last one came to (resampled, and less what was cut from it)."""

    def __init__(self, playout: Playout) -> None:
        self.playout, self.jitter = playout, playout.jitter
        self.now = 0.0
        self.sent = 0
        self.trims: list[int] = []
        self._last_s = F / RATE

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += self._last_s
            while self.sent * F / RATE + 0.001 <= self.now:
                arrival = self.sent * F / RATE + 0.001
                self.jitter.put(self.sent * F, b"x", F, arrival)
                self.playout.sender_clock(self.sent * F, arrival)
                self.sent += 1
            read = self.playout.read(self.now, queued_samples=float(F))
            self.trims.append(read.trim)
            samples = read.frame.samples if read.frame is not None else F
            self._last_s = (samples - read.trim) * read.ratio / RATE


def test_a_stall_the_controller_finds_is_dropped_by_the_jitter_buffer_through_the_hold() -> None:
    """Nothing read for 70 ms (the device stalled): the controller finds it and the jitter
    buffer drops what piled up, whole frames, the rest cut from a frame: 70 ms in all, none
    of it taken for a backlog of the buffer's own (the set-point stays), nothing run dry."""
    ctl = DriftController(RATE)
    stream = Stream(Playout(JitterBuffer(RATE, target_ms=20), AudioFormat(), ctl))
    stream.run(30.0)
    setpoint = ctl.setpoint
    assert setpoint is not None
    skipped, underruns = stream.jitter.stats.skipped_samples, stream.jitter.stats.underruns
    stream.trims.clear()
    stream.now += 0.07
    stream.run(5.0)
    dropped = stream.jitter.stats.skipped_samples - skipped
    assert ctl.stalls == 1
    assert dropped % F == 0 and dropped > 0
    assert dropped + sum(stream.trims) == pytest.approx(0.07 * RATE, abs=0.001 * RATE)
    assert ctl.setpoint == setpoint
    assert stream.jitter.stats.underruns == underruns


def test_without_drift_correction_the_buffer_plays_by_itself() -> None:
    fmt = AudioFormat()
    jb = JitterBuffer(RATE, target_ms=20)
    playout = Playout(jb, fmt, None)
    jb.put(0, b"x", F, 0.0)
    playout.sender_clock(0, 0.0)
    read = playout.read(0.02)
    assert read.frame is not None and (read.trim, read.ratio) == (0, 1.0)
    block = PcmBlock.from_float(np.zeros((F, fmt.channels), np.float32), fmt)
    assert playout.resample(block, 0.999) is block
    assert playout.sender.offset_s is not None
    assert playout.status_fields() == {"device_stalls": 0, "drift_ppm": 0.0,
                                       "correction_ppm": None, "sink_ppm": None}


class Schedule:
    """A set-point that plays every frame ``delay_s`` after the sender's clock: the level at
    which a read's audio, with what the sink has queued ahead of it, is heard at its time
    (the shape of issue 18's scheduler; here the sender's clock is the timeline)."""

    def __init__(self, delay_s: float) -> None:
        self.delay = delay_s * RATE
        self.setpoint: float | None = None

    def measure(self, level: float, played_samples: int, now_s: float, *,
                target_samples: float | None, queued_samples: float | None,
                frame: float) -> float | None:
        first = self.setpoint is None
        self.setpoint = self.delay - (queued_samples or 0.0)
        # The first read: the smoothed level starts here, the integral waits its two minutes.
        return level if first else None

    def move(self, played_samples: int, target_samples: float | None) -> float:
        return 0.0

    def hold(self) -> float | None:
        return self.setpoint

    def packet(self, late_samples: float, draining: bool) -> None:
        pass

    def allow(self, target_samples: int, frame_samples: int) -> None:
        pass

    def expanded(self, samples: int, level: float | None) -> None:
        pass

    def played(self, samples: int) -> None:
        pass

    def shift(self, samples: float) -> bool:
        return False

    def restart(self) -> None:
        pass


def test_a_schedule_plugs_in_as_the_set_point_and_the_delay_goes_to_its_time() -> None:
    """The level 40 ms and 20 ms queued in the sink: 60 ms from the sender to the listener.
    A schedule asks for 50 ms: within five minutes the controller has consumed the 10 ms more
    (never faster than its level term's 167 ppm for 10 ms), and the delay is 50 ms."""
    ctl = DriftController(RATE, aim=Schedule(0.050))
    queued = 0.020 * RATE
    position = -0.030 * RATE                     # at the first read, 40 ms ahead of it
    ratios, delays_ms = [], []
    for step in range(30_000):                   # 300 s of 10 ms reads
        now = (step + 1) * 0.01
        ctl.sender_clock(round(now * RATE), now)
        level = now * RATE - position
        delays_ms.append(1000 * (level + queued) / RATE)
        ratio = ctl.update(level, 480, now, 960, queued)
        ratios.append(ratio)
        position += 480 / ratio
    assert delays_ms[0] == pytest.approx(60.0, abs=0.2)
    assert delays_ms[-1] == pytest.approx(50.0, abs=0.5)
    assert max(1 - r for r in ratios) == pytest.approx(167e-6, abs=5e-6)
