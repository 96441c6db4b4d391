"""The drift controller: the parts of playout control put together, one read at a time.

The sender's sound card and our sink never run at exactly the same rate (tens to hundreds of
ppm). Left alone, the jitter buffer slowly fills (latency creeps up) or empties (underruns).
The :class:`DriftController` steers a resampling ratio within ``±max_ppm`` from

* the clocks (:class:`~deskcast.transport.playout.clocks.Clocks`): the sender's rate against
  our sink's, applied as it is measured (feed-forward), and the level: how far the sender's
  clock, mapped onto ours, is ahead of the frame being read, averaged over ten seconds of
  reads. Not the jitter buffer's depth: that steps by whole packets, and read against a sink's
  bursts made a one-frame sawtooth (a minute long at 300 ppm) the controller chased;
* the set-point (:class:`~deskcast.transport.playout.setpoint.SetPoint`): the level to hold;
* the stall watch (:class:`~deskcast.transport.playout.stalls.StallWatch`): time the device
  lost, dropped rather than played out;
* the control law (:class:`~deskcast.transport.playout.law.ControlLaw`).

The controller is pure (readings and times are passed in) so that an hour of 300 ppm drift
through a bursty sink can be simulated in a unit test in seconds.
"""

from __future__ import annotations

from deskcast.transport.jitter import Frame, Hold
from deskcast.transport.playout.clocks import Clocks
from deskcast.transport.playout.law import MAX_PPM, ControlLaw
from deskcast.transport.playout.setpoint import SetPoint, SettledLevel
from deskcast.transport.playout.stalls import StallWatch


class DriftController:
    """Resampling ratio (output/input) that holds the level at its set-point.

    The jitter buffer reaches its target by itself, in discrete steps (a concealed frame when
    it runs dry, dropped audio when far too much is queued); each is told here (:meth:`steer`
    sees them, :meth:`shift` takes them) and the set-point is measured again rather than the
    step bent out. What the controller asks of the jitter buffer in turn is one
    :class:`~deskcast.transport.jitter.Hold` per read (:meth:`hold`).
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
                 stall_history_s: int = 60, aim: SetPoint | None = None) -> None:
        self.rate = rate
        self.law = ControlLaw(rate, max_ppm=max_ppm, kp_per_s=kp_per_s, integral_s=integral_s,
                              max_integral_ppm=max_integral_ppm,
                              integrate_after_s=integrate_after_s,
                              integrate_below_ms=integrate_below_ms,
                              max_level_ppm=max_level_ppm)
        self.clocks = Clocks(rate, self.law.max_dev)
        self.settled = SettledLevel(rate, settle_s=settle_s,
                                    remeasure_after_s=remeasure_after_s, relax_ppm=relax_ppm,
                                    relax_after_s=relax_after_s, max_raise_ms=max_raise_ms,
                                    guard_ms=guard_ms, guard_frames=guard_frames)
        self.aim: SetPoint = self.settled if aim is None else aim
        """The set-point: where the level settled by default; a schedule (issue 18) is
        another :class:`~deskcast.transport.playout.setpoint.SetPoint`."""
        self.watch = StallWatch(rate, stall_ms=stall_ms, stall_factor=stall_factor,
                                stall_history_s=stall_history_s)
        self.smoothing_s = smoothing_s
        """The level is the depth of the reads averaged this long: a sink that takes several
        frames at once reads the buffer at the top and the bottom of each burst, and whole
        frames taken against a sink's steady clock make a one-frame sawtooth (its period is
        a frame over the drift: a minute at 300 ppm) that no controller should follow."""
        self.depth: float | None = None
        """The level now (samples), smoothed."""
        self.ratio = 1.0
        self._frame = 0.0
        self._silent = False

    # --- what the parts know, for the receiver and its report ------------------------------

    @property
    def setpoint(self) -> float | None:
        """Level (samples) the controller holds; None while it is being measured."""
        return self.aim.setpoint

    @property
    def integral(self) -> float:
        return self.law.integral

    @property
    def error_s(self) -> float:
        """Level minus the set-point, in seconds."""
        return self.law.error_s

    @property
    def stalls(self) -> int:
        """How often the device lost time (and the receiver played out what piled up)."""
        return self.watch.stalls

    @property
    def drift(self) -> float:
        """Estimated drift (positive: the sender's clock is faster than our sink's)."""
        return self.clocks.feed_forward + self.law.integral

    @property
    def drift_ppm(self) -> float:
        """:attr:`drift` in ppm, the mean of the last ten seconds."""
        return self.law.drift_ppm(self.drift)

    @property
    def sink_ppm(self) -> float | None:
        """The sink's clock against the system clock (None: not known)."""
        return self.clocks.sink_ppm

    def clock_fields(self) -> dict[str, float | None]:
        """What the controller believes, for --stats-json: the clocks as measured (ppm; None
        until measured), the parts of the correction, the level and its set-point (ms)."""
        def ppm(x: float | None) -> float | None:
            return None if x is None else round(x * 1e6, 1)

        def ms(x: float | None) -> float | None:
            return None if x is None else round(1000 * x / self.rate, 2)

        return {"sender_ppm": ppm(self.clocks.sender.slope),
                "e2e_ppm": ppm(self.clocks.end_to_end.slope),
                "feed_forward_ppm": ppm(self.clocks.feed_forward),
                "integral_ppm": ppm(self.law.integral),
                "level_ms": ms(self.depth), "setpoint_ms": ms(self.setpoint)}

    # --- the jitter buffer's side ----------------------------------------------------------

    def hold(self) -> Hold:
        """What the jitter buffer is to do at the next pop: drop the whole frames a stall of
        the device piled up (taken: asked once), leave any other backlog to us while we drop
        one, and otherwise drop a backlog back to the level held (the last set-point while a
        new one is measured), not to its bare target, below which a sink that reads in
        bursts soon runs it dry. The depth counts the newest packet whole, up to a frame
        more than the level."""
        level = self.aim.hold()
        return Hold(level_samples=None if level is None else level + self._frame,
                    leave_backlog=self.watch.draining, drop_samples=self.watch.take_drop())

    def take_trim(self) -> int:
        """Samples (under a frame) to cut from the start of the next frame decoded: the rest
        of what piled up while the device lost time."""
        return self.watch.take_trim()

    # --- readings --------------------------------------------------------------------------

    def sender_clock(self, timestamp: int, arrival_s: float) -> None:
        """A packet with (extended) RTP ``timestamp`` arrived at ``arrival_s``."""
        late = self.clocks.sender_packet(timestamp, arrival_s)
        if late is not None:
            self.aim.packet(late, draining=self.watch.draining)

    def sink_clock(self, now_s: float, played_samples: float) -> None:
        """At ``now_s`` the sink has played ``played_samples`` of what it was handed."""
        self.clocks.sink_played(now_s, played_samples)

    def level(self, timestamp: int, now_s: float) -> float | None:
        """How far ahead of the frame at ``timestamp`` the sender is at ``now_s``, in
        samples: the level the controller holds (:meth:`Clocks.level`)."""
        return self.clocks.level(timestamp, now_s)

    def steer(self, frame: Frame | None, *, depth: int | None, target_samples: int,
              skipped_samples: int, now_s: float, queued_samples: float | None = None
              ) -> float:
        """One read of the sink, as the receiver does it: ``frame`` popped from the jitter
        buffer (None: silence while rebuffering), the buffer's depth (None while it was not
        playing) and target before the pop, what the pop dropped, the time the sink asked
        for this block and, when the sink can tell, what it still had queued then. Returns
        the ratio to resample ``frame`` with."""
        if frame is None:
            self._silent = True
            return self.ratio
        if self._silent:
            self._silent = False
            self.reset()
        level = self.level(frame.timestamp, now_s)
        self.aim.allow(target_samples, frame.samples)
        if skipped_samples:
            backlog = self.watch.skipped(skipped_samples)
            if backlog:  # the jitter buffer dropped a backlog by itself
                self.shift(-backlog)
        if frame.expand:
            self.aim.expanded(frame.samples, self.depth)
            self.shift(frame.samples)
            return self.ratio
        self.aim.played(frame.samples)
        if depth is None:  # the first frame after (re)buffering
            return self.ratio
        if level is None:
            # No envelope yet: the depth, which was read before the pop; what the pop
            # dropped is not there any more.
            level = max(0, depth - skipped_samples)
        elif queued_samples is not None:
            self.clocks.delay_read(now_s, level, queued_samples)
        ratio = self.update(level, frame.samples, now_s, target_samples, queued_samples)
        self.clocks.consumed(frame.samples, ratio)
        return ratio

    def update(self, depth: float, played_samples: int, now_s: float,
               target_samples: float | None = None,
               queued_samples: float | None = None) -> float:
        """The ratio for ``played_samples`` of input taken at ``now_s`` with ``depth`` buffered
        (before this frame), ``target_samples`` the jitter buffer's target."""
        if self.clocks.update():
            self.law.integral = 0.0  # what it learnt is in the end-to-end measurement
        dt = played_samples / self.rate
        self._frame = float(dt * self.rate)
        if self.depth is None:
            self.depth = depth
        self.depth += min(1.0, dt / self.smoothing_s) * (depth - self.depth)
        # What the listener hears of this frame: the level plus what the sink has queued
        # ahead of it. Where the audio waits, here or in the sink, moves with the sink's
        # bursts (a frame's worth, against a sink with a period of its own); the sum moves
        # only when the device loses time.
        seen = self.watch.add(depth, queued_samples or 0.0, dt, now_s, self._frame)
        if seen.stall:
            self.law.stalled(now_s)
        if seen.dropped:
            self.clocks.step()   # what the device lost, then what is dropped
        if seen.level is not None:
            self.depth = seen.level  # the smoothed level took the stall in: start it anew
        # While what a stall of the device piled up is being dropped, the level term waits
        # (its smoothed level has the stall in it), and so does the integral.
        drain = self.watch.draining
        settled_at = self.aim.measure(depth, played_samples, now_s,
                                      target_samples=target_samples,
                                      queued_samples=queued_samples, frame=self._frame)
        if settled_at is not None:
            self.depth = settled_at
            self.law.settled(now_s)
        relax = 0.0
        error = None
        setpoint = self.aim.setpoint
        if setpoint is not None:
            if not drain:
                relax = self.aim.move(played_samples, target_samples)
                setpoint = self.aim.setpoint
                assert setpoint is not None
            error = self.depth - setpoint
        self.ratio = self.law.correct(self.clocks.feed_forward, error, relax=relax, wait=drain,
                                      dt=dt, now_s=now_s)
        return self.ratio

    def shift(self, samples: float) -> None:
        """The buffer level was stepped on purpose by ``samples`` (positive: more audio
        queued, e.g. a frame concealed without consuming; negative: audio dropped): the
        clocks take it for a step, the stall watch steps with it, and the set-point decides
        whether to measure itself again (:meth:`SetPoint.shift`)."""
        self.clocks.step()
        self.watch.shift(samples)
        if samples < 0:
            # A dropped backlog: the smoothed level had taken in only part of it; start it
            # again from what the reads show.
            self.depth = None
        elif self.depth is not None:
            self.depth += samples  # the level steps with the buffer
        if self.aim.shift(samples):
            self.law.error_s = 0.0

    def reset(self, new_sender: bool = False) -> None:
        """A restart after silence (``new_sender``: another stream, maybe another clock):
        measure the level again; the learnt drift stays applied until it is measured anew."""
        self.clocks.restart(new_sender)
        self.ratio = 1.0 - self.drift
        self.depth = None
        self.watch.forget()
        self.aim.restart()
        self.law.error_s = 0.0
