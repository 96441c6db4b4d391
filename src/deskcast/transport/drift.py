"""Clock drift compensation where the two clocks meet: the receiver.

The sender's sound card and our sink never run at exactly the same rate (tens to hundreds of
ppm). Left alone, the jitter buffer slowly fills (latency creeps up) or empties (underruns).
The :class:`DriftController` steers a resampling ratio within ``±max_ppm`` (2‰ by default,
far below what anyone can hear as pitch); the :class:`AdaptiveResampler` applies it with
libsamplerate, whose ratio may change between calls.

How it is steered (and why not from the buffer depth alone, as before: that controller
wound its integral up to the limit whenever the jitter buffer's own steps pinned the depth):

* **Rate, feed-forward.** Every packet is a reading of the sender's clock (its RTP timestamp)
  at its arrival time. A :class:`ClockTrack` fits a line through the upper envelope of those
  readings (delays only ever make a packet look late) over up to ten minutes: the sender's
  rate against our system clock, to a ppm or two within seconds. It does not depend on what
  the controller does, so nothing the jitter buffer does can wind it up.
* **The sink's rate, feed-forward too.** Our sink's own clock against the system clock (a
  sound card is off by tens of ppm; PulseAudio's null sink took audio ~100 ppm faster than
  ``CLOCK_MONOTONIC`` in the soak's traces) is read the same way when the sink tells what it
  has queued: what it was handed minus that is what it has played, a reading of its clock
  at each read (:meth:`DriftController.sink_clock`). Before, it showed only as a slow creep
  of the level that the integral learnt over many minutes, the delay creeping meanwhile.
* **Both at once, end to end.** When the sink tells what it has queued, the level plus that
  plus the input the corrections consumed is the delay the stream would have with no
  correction: its slope is the sender's clock against the sink's, within a minute
  (:attr:`DriftController.end_to_end`), and it replaces the two above once measured.
* **Integral, slow.** What is left (and a sink that cannot tell) shows only as a slow creep
  of the level; an integral learns it over minutes. It is clamped, and it waits while the
  level is being measured, for two minutes after a step or a stall of the device, while
  the level is being returned to where it settled, and whenever the error is larger than
  a clock could make it.
* **Level, proportional.** A small term pulls the level back to its set-point. The level is
  how far the sender's clock, mapped onto ours by the same envelope, is ahead of the frame
  being read (:meth:`DriftController.level`), averaged over ten seconds of reads. Not the
  jitter buffer's depth: that steps by whole packets, and read against a sink's bursts made
  a one-frame sawtooth (a minute long at 300 ppm) the controller chased; the level moves
  only when the delay does, and at each read it says how close that read is to running dry
  (0: the frame's packet, on time, just came).
* **Set-point.** Where the level settled, but at least high enough that the lowest read of
  the sink's bursts keeps room for the network's jitter and a guard. A packet that comes
  in time but within the guard of running dry raises it, slowly, before any dry run;
  running dry there for one frame raises it by that frame for good.
* **Time the device loses.** A sink that stops taking audio for a while (a sound server or
  our thread not scheduled in time; the listener hears a gap) leaves the audio that came in
  meanwhile waiting: the delay jumps. The level plus what the sink reports queued (the
  delay of the frame being read) moves by tenths of a ms from one second to the next, so a
  jump of a few ms is plain; its whole frames are dropped at once and the rest played out at
  the largest correction, back to where the delay was, within seconds.

The controller is pure (readings and times are passed in) so that an hour of 300 ppm drift
through a bursty sink can be simulated in a unit test in seconds.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import samplerate

from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.jitter import Frame

logger = logging.getLogger(__name__)

MAX_PPM = 2000.0
"""Largest correction: 2‰ changes pitch by 3.5 cents, inaudible; 300 ppm drift needs 15 %."""


@dataclass(frozen=True, slots=True)
class _Point:
    t_s: float
    offset_s: float
    segment: int


class ClockTrack:
    """One clock read against ours: the rate it runs at, and where it is now.

    Each reading is ``(now_s, reading_s)``; its offset is ``reading_s - now_s``. A reading
    can only look late (a packet queued in the network or behind a busy sender), never
    early, so per ``bin_s`` only the highest offset counts: the upper envelope, steady to a
    fraction of a ms where single readings swing by tens.

    * :attr:`offset_s` — the envelope over the current and the previous bin: where the clock
      is now (to tell a late network from a buffer that ran dry by itself).
    * :attr:`slope` — the clock's rate relative to ours minus one, a least-squares line
      through the bins of the last ``window_s``, once its standard error is below
      ``max_se_ppm``. A step in the offsets (a sender that restarted its pacing, a route that
      got slower) starts a new segment: the segments share one
      slope but each has its own intercept, so a step is never read as a rate. A lone bin off
      the line is ignored; two in a row that agree with each other are a step.
    """

    def __init__(self, *, bin_s: float = 1.0, window_s: float = 600.0,
                 step_ms: float = 8.0, min_span_s: float = 10.0,
                 max_se_ppm: float = 25.0) -> None:
        # 1 s bins: 50 packets each, enough that the highest is an on-time
        # one; ten minutes of them measure 300 ppm to a few ppm; a real clock's rate wanders
        # with temperature over hours, not minutes.
        self.bin_s = bin_s
        self.window_s = window_s
        self.step_s = step_ms / 1000
        """Bins further than this from the line are a step or an outlier: the envelope
        moves by < 1 ms between bins; a scheduling hiccup or a route change moves more."""
        self.min_span_s = min_span_s
        self.max_se = max_se_ppm / 1e6
        self.slope: float | None = None
        self.slope_se = math.inf
        self._points: deque[_Point] = deque()
        self._segment = 0
        self._bin: int | None = None
        self._bin_t = self._bin_v = 0.0
        self._prev_v: float | None = None
        self._pending: _Point | None = None
        self.latest_s: float | None = None
        """The highest reading so far (for a sender: the newest timestamp, in seconds)."""

    def add(self, now_s: float, reading_s: float) -> None:
        offset = reading_s - now_s
        if self.latest_s is None or reading_s > self.latest_s:
            self.latest_s = reading_s
        b = math.floor(now_s / self.bin_s)
        if self._bin is not None and b == self._bin:
            if offset > self._bin_v:
                self._bin_t, self._bin_v = now_s, offset
            return
        if self._bin is not None:
            self._close_bin(adjacent=b == self._bin + 1)
        self._bin, self._bin_t, self._bin_v = b, now_s, offset

    @property
    def offset_s(self) -> float | None:
        """The clock's reading minus ours, as the on-time readings of the last 1-2 bins
        show it; None before the first reading."""
        if self._bin is None:
            return None
        return self._bin_v if self._prev_v is None else max(self._bin_v, self._prev_v)

    def break_segment(self) -> None:
        """The clock may have jumped (a stream restarted): new intercept, same slope."""
        self._segment += 1
        self._pending = None
        self._bin = self._prev_v = self.latest_s = None

    def clear(self) -> None:
        """Another clock altogether (a new sender): forget its rate too."""
        self.break_segment()
        self._points.clear()
        self.slope, self.slope_se = None, math.inf

    def _close_bin(self, adjacent: bool) -> None:
        point = _Point(self._bin_t, self._bin_v, self._segment)
        self._prev_v = self._bin_v if adjacent else None
        if self._accept(point):
            while self._points and self._points[0].t_s < point.t_s - self.window_s:
                self._points.popleft()
            self._fit()

    def _accept(self, point: _Point) -> bool:
        """Add ``point`` to the line unless it is off it; True when the line changed."""
        last = self._points[-1] if self._points else None
        if last is None or last.segment != self._segment:
            self._points.append(point)
            self._pending = None
            return True
        slope = self.slope
        if slope is None:
            # No rate yet: the segment's own last two bins tell how the clock runs (a very
            # fast one moves further than a step between bins); the first ones go in as
            # they come.
            own = [p for p in list(self._points)[-2:] if p.segment == self._segment]
            if len(own) < 2:
                self._points.append(point)
                self._pending = None
                return True
            slope = (own[1].offset_s - own[0].offset_s) / (own[1].t_s - own[0].t_s)
        if abs(point.offset_s - (last.offset_s + slope * (point.t_s - last.t_s))) <= self.step_s:
            self._points.append(point)
            self._pending = None
            return True
        pending, self._pending = self._pending, point
        if pending is None:
            return False  # off the line: an outlier, unless the next bin agrees with it
        expected = pending.offset_s + slope * (point.t_s - pending.t_s)
        if abs(point.offset_s - expected) > self.step_s:
            return False
        self._segment += 1
        logger.debug("clock track: a step of %+.1f ms, new segment",
                     1000 * (pending.offset_s - last.offset_s - slope * (pending.t_s - last.t_s)))
        self._points.append(_Point(pending.t_s, pending.offset_s, self._segment))
        self._points.append(_Point(point.t_s, point.offset_s, self._segment))
        self._pending = None
        return True

    def _fit(self) -> None:
        """One slope through all segments, each with its own intercept (least squares)."""
        n = len(self._points)
        t = np.fromiter((p.t_s for p in self._points), np.float64, n)
        v = np.fromiter((p.offset_s for p in self._points), np.float64, n)
        seg = np.fromiter((p.segment for p in self._points), np.int64, n)
        _, index, counts = np.unique(seg, return_inverse=True, return_counts=True)
        dof = n - len(counts) - 1
        dt = t - (np.bincount(index, t) / counts)[index]
        dv = v - (np.bincount(index, v) / counts)[index]
        sxx = float(dt @ dt)
        if dof < 2 or sxx <= 0 or math.sqrt(12 * sxx / n) < self.min_span_s:
            return
        slope = float(dt @ dv) / sxx
        resid = dv - slope * dt
        # A floor under the residuals: a few lucky bins must not look exact.
        resid_var = max(float(resid @ resid) / dof, 1e-4 ** 2)
        se = math.sqrt(resid_var / sxx)
        if se <= self.max_se:
            self.slope, self.slope_se = slope, se


class LevelTrack(ClockTrack):
    """A :class:`ClockTrack` whose bins are the mean of their readings, every one on the
    line (no envelope, no outliers): for a quantity whose noise is symmetric. Its steps are
    told with :meth:`break_segment`."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self._sum_t = self._sum_v = 0.0
        self._n = 0

    def add(self, now_s: float, reading_s: float) -> None:
        b = math.floor(now_s / self.bin_s)
        if self._bin is not None and b != self._bin and self._n:
            self._bin_t, self._bin_v = self._sum_t / self._n, self._sum_v / self._n
            self._close_bin(adjacent=b == self._bin + 1)
            self._sum_t = self._sum_v = 0.0
            self._n = 0
        self._bin = b
        self._sum_t += now_s
        self._sum_v += reading_s - now_s
        self._n += 1

    def _accept(self, point: _Point) -> bool:
        self._points.append(point)
        return True

    def break_segment(self) -> None:
        super().break_segment()
        self._sum_t = self._sum_v = 0.0
        self._n = 0


class DriftController:
    """Resampling ratio (output/input) that holds the jitter buffer's level.

    ratio = 1 - correction; correction = the sender's drift (feed-forward, from
    :class:`ClockTrack`) + ``integral`` (what is left, mostly our sink's clock against the
    system clock) + ``kp`` x level error (+ ``relax_ppm`` while the level returns to where
    it settled), clamped to ``max_ppm``.

    The set-point is the level the buffer settled at, not the jitter buffer's target: the
    jitter buffer reaches its target by itself, in discrete steps (a concealed frame when it
    runs dry, dropped audio when far too much is queued), and tells us about each with
    :meth:`shift`. After a step the set-point is measured again where the buffer now sits,
    once the sender's envelope shows the network as it is now: a late burst's margin is kept
    rather than bent out, a route that got slower is not mistaken for margin, and the error
    never sits pinned against a step the jitter buffer made (the old controller's wind-up).
    A minute after the last late packet, audio that steps added beyond where the stream
    first settled relative to the jitter buffer's target is played out again at
    ``relax_ppm``; running dry there for a single frame (the level was too low for the
    sink's bursts or the usual jitter, not a burst of late packets) raises that place by
    the frame, up to ``max_raise_ms`` in all.

    The set-point is measured as the mean level of the reads (not of the smoothed level,
    which remembers a dropped backlog for tens of seconds), raised, if need be, so that the
    lowest read keeps the jitter buffer's allowance for jitter (or the latest packet seen
    while measuring, up to a frame) and a guard (:attr:`guard`). A packet that comes later
    than that allowance but in time raises it before any dry run (:meth:`_near_miss`).
    """

    def __init__(self, rate: int, *, max_ppm: float = MAX_PPM, kp_per_s: float = 1 / 60,
                 integral_s: float = 300.0, max_integral_ppm: float = 500.0,
                 integrate_after_s: float = 120.0, integrate_below_ms: float = 20.0,
                 max_level_ppm: float = 1000.0, smoothing_s: float = 10.0,
                 settle_s: float = 20.0, remeasure_after_s: float = 2.5,
                 relax_ppm: float = 500.0, relax_after_s: float = 60.0,
                 max_raise_ms: float = 20.0, guard_ms: float = 2.0,
                 guard_frames: float = 0.25,
                 stall_ms: float = 3.0, stall_factor: float = 1.5,
                 stall_history_s: int = 60) -> None:
        self.rate = rate
        self.max_dev = max_ppm / 1e6
        self.kp = kp_per_s
        """10 ms off the set-point asks for 167 ppm: a level error closes with a minute's time
        constant, and an estimate 10 ppm off leaves the level 0.6 ms away."""
        self.ki = kp_per_s / integral_s
        """The integral closes what the feed-forward misses within ~5 minutes (our sink's
        clock, which only a long look at the level can tell); that slow, the level's
        sawtooth (see ``smoothing_s``) moves it by ppm, not hundreds."""
        self.max_integral = max_integral_ppm / 1e6
        """Sound cards are within a few hundred ppm of the system clock."""
        self.integrate_after_s = integrate_after_s
        """After the set-point is measured the integral waits this long: what came before
        (a start, a stall, a late burst and the jitter buffer's steps) takes a while to
        settle, and clocks do not change in minutes."""
        self.integrate_below_s = integrate_below_ms / 1000
        """Errors beyond this (a frame) are transients, not drift: the integral waits."""
        self.max_level = max_level_ppm / 1e6
        """The level term's share: large errors are the jitter buffer's to fix (it drops a
        backlog within a second); we only trim."""
        self.smoothing_s = smoothing_s
        """The level is the depth of the reads averaged this long: a sink that takes several
        frames at once reads the buffer at the top and the bottom of each burst, and whole
        frames taken against a sink's steady clock make a one-frame sawtooth (its period is
        a frame over the drift: a minute at 300 ppm) that no controller should follow."""
        self.settle_s = settle_s
        """How long the set-point is measured (a mean of the level): long enough to take in
        a good part of the sawtooth, while the feed-forward alone holds the level."""
        self.remeasure_after_s = remeasure_after_s
        """At the start and after a step, wait this long before measuring: the sender's
        envelope spans up to two 1 s bins, and a late burst's packets must have come in."""
        self.relax_ppm = relax_ppm
        """How fast audio added by the jitter buffer's steps is played out again (500 ppm:
        20 ms in 40 s, a quarter of the pitch change anyone could hear)."""
        self.max_raise = max_raise_ms * rate / 1000
        """How far running dry at the settled level may raise it (a 20 ms frame: more and
        the level would meet the jitter buffer's limit, target + two frames, where it drops
        the backlog)."""
        self.relax_after_s = relax_after_s
        """... once no step came for this long (a network that was late once is often
        late again soon: keep the margin for a while; with a late burst every 20 s, 10 s here
        ran the buffer dry at every third burst in simulation)."""
        self.sender = ClockTrack()
        self.sink = ClockTrack(min_span_s=120.0, max_se_ppm=10.0)
        """Our sink's clock against the system clock, read from what it has played (what it
        was handed minus what it reports queued) when it can tell (:meth:`sink_clock`).
        Over two minutes at least, and only once its error is small: what a sound server
        reports queued is not a clock reading, and over half a minute it has wandered by
        6 ms (a soak read -191 ppm off a null sink that runs +100; the feed-forward that
        far off holds the level 11 ms away from its set-point until the integral learns
        it). Until then the sink is taken to run at the system clock, as before it was
        measured at all."""
        self.end_to_end = LevelTrack(min_span_s=30.0, max_se_ppm=10.0)
        """The sender's clock against our sink's, read where they meet, when the sink tells
        what it has queued: the level, plus what the sink has queued (the two move against
        each other with its bursts), plus the input the corrections consumed beyond what
        the sink played, is what the delay would be with no correction, and it grows by the
        drift between the two clocks, whatever each runs at against the system clock.
        Means of a second, a line through ten minutes of them; each step of the level (a
        dry run, a dropped backlog, time the device lost) starts a new segment. Before, the
        sink's own clock, read from what it reported queued alone, came after minutes when
        it came at all, and meanwhile the level sat ms under its set-point (a soak: 3.5 ms
        in 70 s, a null sink 100 ppm off the system clock, then a dry run; the integral took
        15 minutes to learn it)."""
        self._extra = 0.0
        """Input the corrections consumed beyond what the sink played, in samples."""
        self._e2e_reported = False
        self.feed_forward = 0.0
        """The sender's clock against our sink's: :attr:`end_to_end` once it is measured,
        before that as :attr:`sender` and :attr:`sink` measured them; kept through a restart
        of the stream until the new one is measured."""
        self._sink_reported = False
        self.integral = 0.0
        self.error_s = 0.0
        """Level minus the set-point, in seconds."""
        self.ratio = 1.0
        self.setpoint: float | None = None
        """Level (samples) the controller holds; None while it is being measured."""
        self.depth: float | None = None
        """The level now (samples)."""
        self._last_setpoint: float | None = None
        self._second_means: list[float] = []
        self._lowest = math.inf
        self._latest_late = 0.0
        """The latest packet (against the envelope) since the set-point was last measured,
        in samples."""
        self._allowance = 0.0
        """The jitter buffer's target beyond a frame: how late packets come (95 %)."""
        self.stall = stall_ms * rate / 1000
        """The smallest rise of a second's mean level over the seconds before that counts as
        the device losing time (3 ms: on a sound server that keeps time the means move by
        tenths of a ms from one second to the next)."""
        self.stall_factor = stall_factor
        """... and at least this many times the largest such move of the last
        ``stall_history_s`` seconds: a sink that takes whole frames at a fixed period makes
        the means wander by several ms, and that is no stall."""
        self._seconds: deque[float] = deque(maxlen=stall_history_s)
        """The mean level of each of the last seconds that had no stall or step."""
        self._half_checked = False
        """Whether the second being summed was looked at half-way (:meth:`_watch_stalls`)."""
        self._drain_to: float | None = None
        """While audio a stall piled up is being dropped: the level to return to."""
        self._drain_until = 0.0
        """... and when to give up (the level is held up by something this does not see)."""
        self._drop = 0
        """Whole frames of it to drop, for :meth:`take_drop`."""
        self._trim = 0
        """... and the rest, under a frame, to cut from the next frame, for :meth:`take_trim`."""
        self._dropping = 0
        """Taken by the receiver, not yet seen dropped."""
        self.stalls = 0
        """How often the device lost time (and the receiver played out what piled up)."""
        self._second_sum = self._second_level = self._second_time = 0.0
        self._dry_frames = 0
        """Frames expanded in a row, up to the last one."""
        self._may_raise = False
        self._frame = 0.0
        self.guard_min = guard_ms * rate / 1000
        self.guard_frames = guard_frames
        """Margin of the lowest read's level over the network's jitter (:attr:`guard`)."""
        self._offset: float | None = None
        """Where the level returns to, relative to the jitter buffer's target: where the
        stream first settled, raised when it ran dry there."""
        self._first_offset = 0.0
        self._target = 0.0
        self._spread = 0.0
        """How far the lowest read was below the mean when the level was last measured
        (a sink that takes several frames at once reads the top and the bottom of a burst)."""
        self._rise = 0.0
        """What the set-point is still to be raised by, at ``relax_ppm`` (:meth:`_near_miss`)."""
        self._now: float | None = None
        self._measure_from: float | None = None
        self._sum = self._time = 0.0
        self._integrate_from = 0.0
        self._since_step = 0.0
        self._drift_seconds: deque[float] = deque(maxlen=10)
        """The estimate's mean over each of the last ten seconds of input (:attr:`drift_ppm`)."""
        self._drift_sum = self._drift_time = 0.0
        self._reported = False
        self._silent = False

    @property
    def guard(self) -> float:
        """Margin (samples) the lowest read keeps over the latest packet the level allows
        for: a quarter of a frame, at least 2 ms. What running dry costs is a frame of delay
        for good (:meth:`_raise`); what the guard costs is itself, all the time. On a shared
        2-core VM a packet came 8-18 ms late once or twice in five minutes (the sender not
        scheduled), against under 1 ms for 99.9 % of them, and with 2 ms the first of
        those ran the buffer dry within minutes. The guard is also the margin
        :meth:`_near_miss` keeps over the latest packet that came in time."""
        return max(self.guard_min, self.guard_frames * self._frame)

    @property
    def drift(self) -> float:
        """Estimated drift (positive: the sender's clock is faster than our sink's)."""
        return self.feed_forward + self.integral

    @property
    def hold_samples(self) -> float | None:
        """The level the controller holds (the last set-point while a new one is being
        measured; None before the first): when the jitter buffer drops a backlog (a stall
        of the device piled audio up), it drops back to here rather than to its bare target,
        below which a sink that reads in bursts soon runs it dry."""
        hold = self.setpoint if self.setpoint is not None else self._last_setpoint
        # The depth counts the newest packet whole, up to a frame more than the level.
        return None if hold is None else hold + self._frame

    @property
    def dropping_stall(self) -> bool:
        """Whether what a stall of the device piled up is being dropped (for a second or
        three after it): the jitter buffer leaves the backlog to this."""
        return self._drain_to is not None

    @property
    def sink_ppm(self) -> float | None:
        """The sink's clock against the system clock (None: not known)."""
        return None if self.sink.slope is None else self.sink.slope * 1e6

    @property
    def drift_ppm(self) -> float:
        """:attr:`drift` in ppm, the mean of the last ten seconds (:attr:`drift` itself before
        the first second). A mean of ten seconds, not a smoothing with a ten-second time
        constant: that still read 9 ppm short 47 s after the estimate stepped to -1000 ppm."""
        if not self._drift_seconds:
            return self.drift * 1e6
        return statistics.fmean(self._drift_seconds) * 1e6

    def clock_fields(self) -> dict[str, float | None]:
        """What the controller believes, for --stats-json: the clocks as measured (ppm; None
        until measured), the parts of the correction, the level and its set-point (ms)."""
        def ppm(x: float | None) -> float | None:
            return None if x is None else round(x * 1e6, 1)

        def ms(x: float | None) -> float | None:
            return None if x is None else round(1000 * x / self.rate, 2)

        return {"sender_ppm": ppm(self.sender.slope), "e2e_ppm": ppm(self.end_to_end.slope),
                "feed_forward_ppm": ppm(self.feed_forward), "integral_ppm": ppm(self.integral),
                "level_ms": ms(self.depth), "setpoint_ms": ms(self.setpoint)}

    def sender_clock(self, timestamp: int, arrival_s: float) -> None:
        """A packet with (extended) RTP ``timestamp`` arrived at ``arrival_s``."""
        self.sender.add(arrival_s, timestamp / self.rate)
        envelope = self.sender.offset_s
        if envelope is not None:
            # How late it is against the packets on time: the set-point being measured
            # leaves room for the latest of them.
            late = (envelope - (timestamp / self.rate - arrival_s)) * self.rate
            self._latest_late = max(self._latest_late, late)
            self._near_miss(late)

    def _near_miss(self, late: float) -> None:
        """A packet ``late`` samples behind the envelope came in time, but within the guard
        of the lowest read of the settled level: the level goes up so that its lowest read
        keeps the guard over it, for good (up to ``max_raise`` in all, as a dry run raises
        it). How late packets come shows over minutes (a sender or a network thread not
        scheduled for a few ms now and then), not in the seconds the level was measured;
        raised before the first dry run, the level moves by a few ms, at ``relax_ppm``
        (inaudible); a dry run instead conceals a frame and adds all of it to the delay at
        once. A packet later than the lowest read (it may have run the buffer dry, or a
        burst after a network stall did) is left to the dry run."""
        if self.setpoint is None or self._offset is None or self._drain_to is not None:
            return
        aim = self.setpoint + self._rise
        if late >= aim - self._spread:
            return
        need = min(self._spread + late + self.guard,
                   self._target + self._first_offset + self.max_raise)
        if need > self._target + self._offset:
            self._offset = need - self._target
        if need > aim:
            logger.debug("drift: a packet %.1f ms late: level raised to %.1f ms (from %.1f)",
                         1000 * late / self.rate, 1000 * need / self.rate,
                         1000 * aim / self.rate)
            self._rise = need - self.setpoint

    def sink_clock(self, now_s: float, played_samples: float) -> None:
        """At ``now_s`` the sink has played ``played_samples`` of what it was handed (what
        was written minus what it reports queued)."""
        self.sink.add(now_s, played_samples / self.rate)

    def steer(self, frame: Frame | None, *, depth: int | None, target_samples: int,
              skipped_samples: int, now_s: float, queued_samples: float | None = None
              ) -> float:
        """One read of the sink, as the receiver does it: ``frame`` popped from the jitter
        buffer (None: silence while rebuffering), the buffer's depth (None while it was not
        playing) and target before the pop, the backlog the pop dropped, the time the
        sink asked for this block and, when the sink can tell, what it still had queued
        then. Returns the ratio to resample ``frame`` with."""
        if frame is None:
            self._silent = True
            return self.ratio
        if self._silent:
            self._silent = False
            self.reset()
        self._now = now_s
        level = self.level(frame.timestamp, now_s)
        self._allowance = max(0.0, target_samples - frame.samples)
        if skipped_samples:
            own = min(skipped_samples, self._dropping)
            self._dropping = 0
            if skipped_samples > own:  # the jitter buffer dropped a backlog by itself
                self.shift(-(skipped_samples - own))
        if frame.expand:
            if not self._dry_frames:
                self._may_raise = self._dry_at_settled_level(frame.samples)
            self._dry_frames += 1
            self.shift(frame.samples)
            return self.ratio
        if self._dry_frames:
            if self._dry_frames == 1 and self._may_raise:
                self._raise(frame.samples)
            self._dry_frames = 0
        if depth is None:  # the first frame after (re)buffering
            return self.ratio
        if level is None:
            # No envelope yet: the depth, which was read before the pop; what the pop
            # dropped is not there any more.
            level = max(0, depth - skipped_samples)
        elif queued_samples is not None:
            self.end_to_end.add(
                now_s, now_s + (level + queued_samples + self._extra) / self.rate)
        ratio = self.update(level, frame.samples, now_s, target_samples, queued_samples)
        self._extra += (1.0 - ratio) * frame.samples
        return ratio

    def level(self, timestamp: int, now_s: float) -> float | None:
        """How far ahead of the frame at ``timestamp`` the sender is at ``now_s``, in
        samples, as the envelope of its packets maps its clock onto ours: the level the
        controller holds. Unlike the jitter buffer's depth it does not step by whole
        packets (read against a sink's bursts that made a one-frame sawtooth), and it
        tells how close a read is to running dry: the frame's packet, on time, is there
        from level 0 on, one that is ``x`` late from ``x``."""
        offset = self.sender.offset_s
        if offset is None:
            return None
        return (now_s + offset) * self.rate - timestamp

    def update(self, depth: float, played_samples: int, now_s: float,
               target_samples: float | None = None,
               queued_samples: float | None = None) -> float:
        """The ratio for ``played_samples`` of input taken at ``now_s`` with ``depth`` buffered
        (before this frame).

        With ``target_samples`` (the jitter buffer's target), audio that steps added beyond
        where the stream settled relative to the target is played out again slowly, at
        ``relax_ppm``, a minute after the last late packet: after a burst of late packets
        the delay returns to where it was.
        """
        self._update_feed_forward()
        self._now = now_s
        dt = played_samples / self.rate
        relax = level = 0.0
        self._observe(depth, dt)
        # What the listener hears of this frame: the level plus what the sink has queued
        # ahead of it. Where the audio waits, here or in the sink, moves with the sink's
        # bursts (a frame's worth, against a sink with a period of its own); the sum moves
        # only when the device loses time.
        self._watch_stalls(depth, queued_samples or 0.0, dt, now_s)
        # While what a stall of the device piled up is being dropped, the level term waits
        # (its smoothed level has the stall in it), and so does the integral.
        drain = self._drain_to is not None
        if self.depth is not None and \
                self._settled(depth, played_samples, now_s, target_samples):
            assert self.setpoint is not None
            if not drain:
                relax = self._move_setpoint(played_samples, target_samples)
            self.error_s = (self.depth - self.setpoint) / self.rate
            if not drain:
                level = _clamp(self.kp * self.error_s, self.max_level)
            wanted = self.feed_forward + self.integral + level + relax
            # Anti-windup: the integral only moves while its output can act, and only on
            # the small, slow errors a clock makes (a stall or a late burst is the jitter
            # buffer's to settle, and the level being played out is ours, not the clocks').
            if not relax and not drain and now_s >= self._integrate_from and \
                    abs(self.error_s) < self.integrate_below_s and \
                    (abs(wanted) < self.max_dev or (wanted > 0) != (self.error_s > 0)):
                self.integral = _clamp(self.integral + self.ki * self.error_s * dt,
                                       self.max_integral)
        # Too much buffered -> consume input faster -> fewer output samples per input.
        self.ratio = 1.0 - _clamp(self.drift + level + relax, self.max_dev)
        self._drift_sum += self.drift * dt
        self._drift_time += dt
        if self._drift_time >= 1.0:
            self._drift_seconds.append(self._drift_sum / self._drift_time)
            self._drift_sum = self._drift_time = 0.0
        return self.ratio

    def _move_setpoint(self, played_samples: int, target_samples: float | None) -> float:
        """Raise the set-point towards where a near miss asked for, or play out what steps
        added above where the stream settled; the extra correction that does it (ratio
        units, negative: consume slower), the set-point moving with the level so that the
        level error is untouched (nothing for the integral to take)."""
        assert self.setpoint is not None
        if target_samples is not None:
            self._target = target_samples
        if self._rise > 0:
            # Raised for a packet that came near running dry (:meth:`_near_miss`):
            # consuming relax_ppm slower adds exactly this much.
            step = min(self._rise, self.relax_ppm / 1e6 * played_samples)
            self.setpoint += step
            self._rise -= step
            if self._last_setpoint is not None:
                self._last_setpoint = max(self._last_setpoint, self.setpoint)
            return -step / played_samples
        if target_samples is None or self._offset is None:
            return 0.0
        self._since_step += played_samples / self.rate
        above = self.setpoint - (target_samples + self._offset)
        if above > 0.002 * self.rate and self._since_step >= self.relax_after_s:
            # Consuming relax_ppm faster drains exactly this much.
            relax = self.relax_ppm / 1e6
            self.setpoint -= relax * played_samples
            return relax
        return 0.0

    def _watch_stalls(self, level: float, queued: float, dt: float, now_s: float) -> None:
        """Find the device losing time, and play out what piled up meanwhile.

        With the packets on time, a second's mean level rises over the seconds before it
        only when the device stopped taking audio for a while (it stalled and played
        silence, or our thread was not scheduled): the audio that came in meanwhile waits,
        and unless it is played out, everything after it is that much later. A rise of more
        than :attr:`stall` (and :attr:`stall_factor` times the largest move of the last
        minute's means) is one: what piled up is dropped at once, whole frames from the
        jitter buffer and the rest cut from the next frame (the listener heard the device's
        gap already; holding it would delay all that follows, and playing it out at the
        largest correction, 2 ms a second, takes up to 10 s for a frame's worth). A second's
        mean may have caught only part of the stall: the next seconds' excess is dropped
        too, until what is left is under half of :attr:`stall` (a mean's noise). The
        integral waits ``integrate_after_s`` after each (it would take the tail for a
        clock)."""
        self._second_sum += (level + queued) * dt
        self._second_level += level * dt
        self._second_time += dt
        if self._second_time < 1.0:
            if self._second_time >= 0.5 and not self._half_checked:
                # Half a second in, once: a stall late in the last second showed there too
                # little to tell, and the jitter buffer drops what is over its limit after
                # a second of it, by its own depth, blind to what the sink lost from its
                # queue (simulated: 20 ms too much dropped, and the stall not counted).
                self._half_checked = True
                jump = None if self._drain_to is not None else \
                    self._jump(self._second_sum / self._second_time)
                if jump is not None:
                    self._stalled(*jump, now_s)
                    self._drop_frames(jump[1])
                    # The rest of what piled up shows in the next second's mean (this one
                    # began before the stall): it is drained as usual.
                    self._second_sum = self._second_level = self._second_time = 0.0
                    self._half_checked = False
            return
        self._half_checked = False
        mean = self._second_sum / self._second_time
        level_mean = self._second_level / self._second_time
        self._second_sum = self._second_level = self._second_time = 0.0
        if self._drain_to is not None:
            excess = mean - self._drain_to
            if excess > self.stall / 2 and now_s < self._drain_until:
                logger.debug("drift: %.1f ms more of the stall to drop", 1000 * excess / self.rate)
                self._drop_frames(excess)
                return
            if excess > self.stall / 2:
                logger.debug("drift: %.1f ms of a stall not dropped; left to the level term",
                             1000 * excess / self.rate)
                # Where the level is now is the new baseline: the seconds move up to it
                # (cleared, they left the watch blind for the next ten seconds).
                self._seconds = deque((m + excess for m in self._seconds),
                                      maxlen=self._seconds.maxlen)
            self._drain_to = None
            self.depth = level_mean  # the smoothed level took the stall in: start it anew
            return
        jump = self._jump(mean)
        if jump is not None:
            self._stalled(*jump, now_s)
            self._drop_frames(jump[1])
            return
        self._seconds.append(mean)

    def _jump(self, mean: float) -> tuple[float, float] | None:
        """(baseline, rise) if a second's mean ``mean`` rose over the last ten seconds' by
        more than :attr:`stall` (and :attr:`stall_factor` times the largest move of the
        seconds kept) in a jump, not a ramp (a drift not yet measured moves the level
        steadily); None if not, or while fewer than ten seconds are kept."""
        if len(self._seconds) < 10:
            return None
        recent = list(self._seconds)
        baseline = statistics.median(recent[-10:])
        moves = max(abs(b - a) for a, b in itertools.pairwise(recent))
        rise = mean - baseline
        threshold = max(self.stall, self.stall_factor * moves)
        if rise > threshold and mean - recent[-1] > threshold / 2:
            return baseline, rise
        return None

    def _stalled(self, baseline: float, rise: float, now_s: float) -> None:
        """The device lost time: count it and drain back to ``baseline``."""
        self.stalls += 1
        self._drain_to = baseline
        # Three seconds' means (the level may be held where it is by what this does not
        # see, e.g. a sink that keeps losing time).
        self._drain_until = now_s + 3.0
        self._integrate_from = max(self._integrate_from, now_s + self.integrate_after_s)
        logger.debug("drift: the device lost %.1f ms (or more): playing it out",
                     1000 * rise / self.rate)

    def _drop_frames(self, excess: float) -> None:
        self.end_to_end.break_segment()   # what the device lost, then what is dropped
        if self._frame:
            self._drop = int(excess // self._frame * self._frame)
            self._trim = int(excess - self._drop)

    def take_drop(self) -> int:
        """Samples (whole frames) the jitter buffer is to drop before the next read: audio
        that piled up while the device lost time. The receiver calls it before each pop."""
        drop, self._drop = self._drop, 0
        self._dropping += drop
        return drop

    def take_trim(self) -> int:
        """Samples (under a frame) to cut from the start of the next frame decoded: the rest
        of what piled up while the device lost time."""
        trim, self._trim = self._trim, 0
        return trim

    def _observe(self, depth: float, dt: float) -> None:
        self._frame = float(dt * self.rate)
        """The level: the depth of the reads, averaged over ``smoothing_s``."""
        if self.depth is None:
            self.depth = depth
        self.depth += min(1.0, dt / self.smoothing_s) * (depth - self.depth)

    def _update_feed_forward(self) -> None:
        e2e = self.end_to_end.slope
        if e2e is not None:
            if not self._e2e_reported:
                self._e2e_reported = True
                logger.info("sender's clock measured against our sink's: %+.0f ppm", e2e * 1e6)
                self.integral = 0.0  # what it learnt is in this measurement already
            self.feed_forward = _clamp(e2e, self.max_dev)
            return
        slope = self.sender.slope
        if slope is None:
            return
        sink = self.sink.slope
        if sink is not None and not self._sink_reported:
            self._sink_reported = True
            logger.info("sink's clock measured: %+.0f ppm against the system clock",
                        sink * 1e6)
        # Both against the system clock: the sender's against the sink's is their ratio.
        self.feed_forward = _clamp((1 + slope) / (1 + (sink or 0.0)) - 1, self.max_dev)
        if not self._reported:
            self._reported = True
            logger.info("sender's clock measured: %+.0f ppm against ours", slope * 1e6)

    def _settled(self, depth: float, played_samples: int, now_s: float,
                 target_samples: float | None) -> bool:
        """Measure the set-point when there is none: the lowest of the one-second means of
        the levels read (not of the smoothed level, which takes tens of seconds to forget
        what came before a step; and not the mean of all: a stall of the device while it
        is measured piles audio up, which would be held from then on); True once there is
        one."""
        if self.setpoint is not None:
            return True
        if self._measure_from is None:
            self._measure_from = now_s + self.remeasure_after_s
        if now_s < self._measure_from:
            return False
        dt = played_samples / self.rate
        self._sum += depth * dt
        self._time += dt
        self._lowest = min(self._lowest, depth)
        if self._time >= 1.0:
            self._second_means.append(self._sum / self._time)
            self._sum = self._time = 0.0
        if len(self._second_means) < self.settle_s:
            return False
        mean = min(self._second_means)
        # Where the level settled, but high enough that its lowest reads (the last frame of
        # a burst the sink takes at once) keep what the network's jitter needs: the jitter
        # buffer's target beyond a frame or the latest packet while measuring (up to a
        # frame), and a guard.
        allowance = max(self._allowance, min(self._latest_late, self._frame))
        floor = (mean - self._lowest) + (allowance if target_samples is not None
                                         else 0.0) + self.guard
        if floor > mean:
            logger.debug("drift: level %.1f ms, lowest %.1f ms: held at %.1f ms",
                         1000 * mean / self.rate, 1000 * self._lowest / self.rate,
                         1000 * floor / self.rate)
        self.setpoint = self._last_setpoint = max(mean, floor)
        self._spread = mean - self._lowest
        self.depth = mean
        # The integral waits until what came before (a start, a stall, a late burst and
        # what the jitter buffer did about it) has settled: clocks do not change in minutes.
        self._integrate_from = now_s + self.integrate_after_s
        if target_samples is not None:
            self._target = target_samples
            if self._offset is None:
                self._offset = self._first_offset = self.setpoint - target_samples
        return True

    def shift(self, samples: float) -> None:
        """The buffer level was stepped on purpose by ``samples`` (positive: more audio
        queued, e.g. a frame concealed without consuming; negative: audio dropped). The
        set-point is measured again, a moment later, where the buffer then sits; except
        after a backlog dropped while there was one: the jitter buffer dropped back to it
        (:attr:`hold_samples`), and measured again each time, it crept up by whatever the
        next stall piled up while it was being measured."""
        self.end_to_end.break_segment()   # a step, not the clocks
        self._shift_seconds(samples)
        if samples < 0:
            # A dropped backlog: the smoothed level had taken in only part of it; start it
            # again from what the reads show.
            self.depth = None
            if self.setpoint is not None:
                return
        elif self.depth is not None:
            self.depth += samples  # the level steps with the buffer
        self._remeasure()
        if samples > 0:
            # Ran dry: the network was late (or the level too low); keep the margin a while.
            # A dropped backlog (our thread or the sink stalled, a burst after a network
            # stall) says nothing about the network: what it left above the settled level is
            # played out as usual.
            self._since_step = 0.0

    def _dry_at_settled_level(self, samples: int) -> bool:
        """Whether a dry run of ``samples`` starts while settled at the level the stream
        settled at (not while it is being measured after a step, nor above it)."""
        return self.setpoint is not None and self._offset is not None and \
            self.depth is not None and self.depth - (self._target + self._offset) < samples

    def _raise(self, samples: int) -> None:
        """The buffer ran dry for one frame at the settled level: that level is too low,
        for the sink's bursts or for the network's usual jitter (a packet later than any
        seen while the level was measured). It goes up by the frame, within a bound, and
        stays there: played out again a minute later (as before), the frame made a bump of
        its length in the delay, and soon the next dry run. A burst of late packets (more
        than a frame expanded) is the network's: all of it is played out again."""
        assert self._offset is not None
        raised = min(self._offset + samples, self._first_offset + self.max_raise)
        if raised > self._offset:
            logger.debug("drift: ran dry for a frame at the settled level: %+.1f ms on it",
                         1000 * (raised - self._offset) / self.rate)
            self._offset = raised

    def reset(self, new_sender: bool = False) -> None:
        """A restart after silence (``new_sender``: another stream, maybe another clock):
        measure the level again; the learnt drift stays applied until it is measured anew."""
        if new_sender:
            self.sender.clear()
            self.end_to_end.clear()
            self._e2e_reported = False
        else:
            self.sender.break_segment()
            self.end_to_end.break_segment()
        self.ratio = 1.0 - self.drift
        self.depth = None
        self._offset = None
        self._forget_seconds()
        self._remeasure()

    def _forget_seconds(self) -> None:
        """A new start (after silence, another sender): the seconds before are no baseline
        for the stall watch."""
        self._seconds.clear()
        self._drain_to = None
        self._drop = self._trim = 0
        self._second_sum = self._second_level = self._second_time = 0.0
        self._half_checked = False

    def _shift_seconds(self, samples: float) -> None:
        """The jitter buffer stepped the level by ``samples`` (a frame expanded, a backlog
        dropped): every second's mean the stall watch keeps steps with it (the level is how
        far the sender is ahead of the frame played, and the step moves exactly that), and
        so does the second being summed. Forgetting them instead left the watch blind until
        ten new seconds were in: a device stall 3-9 s after a late burst was not counted,
        and the jitter buffer dropped its backlog a second later down to its own level,
        the margin the burst had earned with it (simulated, 60 random cases of a stall 3-20 s
        after a burst or another stall: 19 uncounted before, none now). A drain under way
        ends: the buffer ran dry under it, or the backlog is gone."""
        self._seconds = deque((m + samples for m in self._seconds),
                              maxlen=self._seconds.maxlen)
        self._second_sum += samples * self._second_time
        self._second_level += samples * self._second_time
        self._drain_to = None
        self._drop = self._trim = 0

    def _remeasure(self) -> None:
        self.setpoint = None
        self._measure_from = None
        self._sum = self._time = 0.0
        self._second_means = []
        self._lowest = math.inf
        self._latest_late = 0.0
        self._rise = 0.0
        self.error_s = 0.0


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
