"""The receiver's playout path without sockets or codecs, with a fake clock, for the tests.

A sender whose clock runs ``ppm`` off sends 20 ms packets through a network with seeded jitter
(and, on request, bursts of late packets); the real :class:`JitterBuffer` takes them; a sink
whose device runs ``sink_ppm`` off our system clock wakes every 40 ms, give or take a few ms,
and, like ``pa_simple_write``, the pump writes what fits and blocks on the rest, reading the
next frame only when the last one is in. :meth:`Playout.read` is called exactly as the
receiver calls it. An hour of it takes about ten seconds of a core: the tests that simulate
are ``cpu_heavy`` (under pytest-xdist never beside a test that judges audio in real time).

:class:`Reads` and :class:`Level` drive the controller more directly: a sender at our rate
whose packets come on time, and a level set at will.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass, field

from deskcast.media import AudioFormat
from deskcast.transport.jitter import Frame, JitterBuffer
from deskcast.transport.playout import DriftController, Playout

RATE = 48000
PACKET = 960          # the sender's 20 ms packets
SETTLE_S = 120        # the first two minutes are left out of the checks


@dataclass
class Run:
    truth_ppm: float
    """The sender's clock against the sink's."""
    drift_ppm: list[float] = field(default_factory=list)
    """The controller's estimate, once a second."""
    depth_ms: list[float] = field(default_factory=list)
    """Mean depth of the jitter buffer over the reads of each second."""
    total_ms: list[float] = field(default_factory=list)
    """What the listener hears, each second: how far the device plays behind the sender."""
    dry_at: list[float] = field(default_factory=list)
    """When the jitter buffer ran dry."""
    skipped_at: list[float] = field(default_factory=list)
    """When it dropped a backlog."""
    correction_ppm: list[float] = field(default_factory=list)
    """The correction applied (1 - ratio, in ppm; positive: consumed faster), mean of the reads
    of each second."""
    extremes_ppm: list[tuple[float, float]] = field(default_factory=list)
    """The smallest and the largest correction of the reads of each second."""
    device_underruns: int = 0
    stalls: int = 0
    """How often the controller found the device losing time."""

    def mean_over(self, values: list[float], window_s: int, start_s: int = SETTLE_S,
                  skip: tuple[tuple[float, float], ...] = ()) -> list[float]:
        """Means of ``values`` over consecutive windows from ``start_s``, leaving out windows
        that touch a ``skip`` interval."""
        out = []
        for i in range(start_s, len(values) - window_s + 1, window_s):
            if not any(i < b and i + window_s > a for a, b in skip):
                out.append(statistics.mean(values[i:i + window_s]))
        return out


def simulate(ppm: float, seconds: float, *, sink_ppm: float = 0.0, seed: int = 1,
             jitter_ms: float = 2.0, late_at: tuple[float, ...] = (),
             stall_at: tuple[float, ...] = (), compensate: bool = True,
             period_ms: float = 40.0, device_ms: float = 60.0,
             wake_jitter_ms: float = 4.0, stall_s: float = 0.15,
             sink_tells: bool = True, ctls: list[DriftController] | None = None) -> Run:
    rng = random.Random(seed)
    jb = JitterBuffer(RATE, target_ms=20, min_ms=5, max_ms=250)   # receive's defaults
    ctl = DriftController(RATE)
    playout = Playout(jb, AudioFormat(), ctl)
    if ctls is not None:
        ctls.append(ctl)
    f_sender, f_sink = 1 + ppm / 1e6, 1 + sink_ppm / 1e6
    run = Run(truth_ppm=(f_sender / f_sink - 1) * 1e6)
    arrivals: list[tuple[float, int]] = []
    sent = 0
    stalls = sorted(stall_at)

    def send_until(t: float) -> None:
        nonlocal sent
        while (t_sent := sent * PACKET / (RATE * f_sender)) <= t:
            delay = 0.001 + rng.expovariate(1000 / jitter_ms)
            if any(a <= t_sent < a + 0.1 for a in late_at):
                delay += 0.08            # a burst of late packets: 100 ms of them, 80 ms late
            heapq.heappush(arrivals, (t_sent + delay, sent * PACKET))
            sent += 1

    device = device_ms * RATE / 1000     # the sound server's buffer, in output samples
    fill = pending = pending_in = carry = written = played = 0.0
    t_wake = t_last = 0.0
    depths: list[int] = []
    totals: list[float] = []
    corrections: list[float] = []
    next_report = 1.0
    while t_wake < seconds:
        t_wake += period_ms / 1000 / f_sink
        if stalls and t_wake >= stalls[0]:
            t_wake += stall_s            # our audio thread stalls: the device runs dry
            stalls.pop(0)
        t = t_wake + rng.uniform(0, wake_jitter_ms / 1000)
        send_until(t)
        while arrivals and arrivals[0][0] <= t:
            arrival, ts = heapq.heappop(arrivals)
            jb.put(ts, b"x", PACKET, arrival)
            ctl.sender_clock(ts, arrival)
        fill -= (t - t_last) * RATE * f_sink
        if fill < 0:
            run.device_underruns += 1
            fill = 0.0
        played = written - fill
        t_last = t
        while True:
            if pending:                  # the rest of the block being written
                room = device - fill
                if room < pending:
                    pending_in *= 1 - room / pending
                    written += room
                    fill, pending = device, pending - room
                    break
                fill += pending
                written += pending
                pending = pending_in = 0.0
            depths.append(jb.depth_samples)
            dry, skipped = jb.stats.underruns, jb.stats.skipped_samples
            read = playout.read(t, queued_samples=fill / f_sink if sink_tells else None,
                                played_samples=played if sink_tells else None)
            frame, trim, ratio = read.frame, read.trim, read.ratio  # as the receiver reads
            if jb.stats.underruns > dry:
                run.dry_at.append(t)
            if jb.stats.skipped_samples > skipped:
                run.skipped_at.append(t)
            if not compensate:
                ratio = 1.0
            corrections.append((1 - ratio) * 1e6)
            pending_in = frame.samples - trim if frame is not None else PACKET
            carry += pending_in * ratio
            pending = float(int(carry))
            carry -= pending
            if jb.position is not None:
                # the sender's position now minus the device's, in the sender's samples
                totals.append(t * RATE * f_sender - jb.position + pending_in + fill / ratio)
        if t >= next_report:
            next_report += 1.0
            run.drift_ppm.append(ctl.drift_ppm)
            run.depth_ms.append(1000 * statistics.mean(depths) / RATE)
            run.total_ms.append(1000 * statistics.mean(totals) / RATE if totals else 0.0)
            run.correction_ppm.append(statistics.mean(corrections) if corrections else 0.0)
            run.extremes_ppm.append((min(corrections, default=0.0),
                                     max(corrections, default=0.0)))
            depths, totals, corrections = [], [], []
    run.stalls = ctl.stalls
    return run


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def beyond_drift(run: Run, start_s: int = SETTLE_S, end_s: int | None = None) -> float:
    """The largest correction of any read from ``start_s`` to ``end_s`` beyond what the
    drift needs (either way), in ppm."""
    return max(max(abs(lo - run.truth_ppm), abs(hi - run.truth_ppm))
               for lo, hi in run.extremes_ppm[start_s:end_s])


RELAX_PPM = DriftController(RATE).settled.relax_ppm
"""How fast the controller moves the level on purpose (a near miss raises it, audio a late
burst added is played out): the correction goes this far beyond the drift then."""



class Level:
    """A stream at our own rate whose jitter buffer level a test sets at will."""

    def __init__(self, ctl: DriftController, depth_ms: float) -> None:
        self.ctl, self.depth = ctl, round(depth_ms * RATE / 1000)
        self.now = 0.0

    def run(self, seconds: float, target_ms: float = 20.0) -> list[float]:
        ratios = []
        for _ in range(round(seconds * 100)):
            self.now += 0.01
            self.ctl.sender_clock(round(self.now * RATE), self.now)
            ratios.append(self.ctl.update(self.depth, 480, self.now, target_ms * RATE / 1000))
        return ratios



class Reads:
    """A sender at our rate whose packets come on time, and a sink that takes ``burst``
    frames at once every ``burst`` x 20 ms, read through :meth:`DriftController.steer`
    (the ratio is not applied: the level only moves when a test moves it)."""

    def __init__(self, ctl: DriftController, level_ms: float, burst: int = 1,
                 follow: bool = False) -> None:
        self.ctl, self.burst, self.follow = ctl, burst, follow
        """follow: the ratio is applied (a frame lasts ratio x 20 ms of the sink's time)."""
        self.now = 0.0
        self.sent = 0
        # packet k (timestamps from k x 960) arrives at (k + 1) x 20 ms; the first read of
        # each burst finds the level at level_ms
        self.position = (burst - 1) * PACKET - round(level_ms * RATE / 1000)
        self.levels: list[float] = []

    def run(self, seconds: float, target: int = PACKET + 240, skipped: int = 0) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += self.burst * PACKET / RATE * (self.ctl.ratio if self.follow else 1.0)
            while (self.sent + 1) * PACKET / RATE <= self.now + 1e-9:
                self.ctl.sender_clock(self.sent * PACKET, (self.sent + 1) * PACKET / RATE)
                self.sent += 1
            for _ in range(self.burst):
                # What the controller drops after a stall, as the receiver does: whole
                # frames (reported as skipped) and the rest cut from the frame.
                drop = self.ctl.hold().drop_samples
                skipped += drop
                self.position += skipped + self.ctl.take_trim()
                level = self.ctl.level(self.position, self.now)
                assert level is not None
                self.levels.append(level)
                self.ctl.steer(Frame(self.position, PACKET, b"x"), depth=PACKET,
                               target_samples=target, skipped_samples=skipped,
                               now_s=self.now)
                skipped = 0
                self.position += PACKET

    def expand(self, frames: int, target: int = PACKET + 240) -> None:
        """The next ``frames`` reads find the buffer dry (the level grows by as much)."""
        for _ in range(frames):
            self.now += PACKET / RATE
            self.ctl.steer(Frame(self.position, PACKET, None, expand=True), depth=0,
                           target_samples=target, skipped_samples=0, now_s=self.now)



def late_packet(ctl: DriftController, reads: Reads, late_ms: float) -> None:
    """The newest packet comes again, ``late_ms`` after it was due (its first copy set the
    envelope: a late packet never does)."""
    k = reads.sent - 1
    ctl.sender_clock(k * PACKET, (k + 1) * PACKET / RATE + late_ms / 1000)

