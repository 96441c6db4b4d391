"""Clock estimation: the sender's clock against our sink's, the feed-forward of the control.

Three readings, each a :class:`~deskcast.transport.playout.clocktrack.ClockTrack`:

* **The sender's clock** against the system clock: every packet is a reading of it (its RTP
  timestamp) at its arrival time. The upper envelope of those readings (delays only ever make
  a packet look late) gives its rate to a ppm or two within seconds, and where it is now
  (:meth:`Clocks.level`). It does not depend on what the controller does, so nothing the
  jitter buffer does can wind it up.
* **Our sink's clock** against the system clock (a sound card is off by tens of ppm;
  PulseAudio's null sink took audio ~100 ppm faster than ``CLOCK_MONOTONIC`` in the soak's
  traces), read the same way when the sink tells what it has queued: what it was handed minus
  that is what it has played, a reading of its clock at each read (:meth:`Clocks.sink_played`).
* **Both at once, end to end.** When the sink tells what it has queued, the level plus that
  plus the input the corrections consumed is the delay the stream would have with no
  correction: its slope is the sender's clock against the sink's, within a minute
  (:attr:`Clocks.end_to_end`), and it replaces the two above once measured.

:meth:`Clocks.update` turns them into :attr:`Clocks.feed_forward`, the correction the
clocks alone ask for.
"""

from __future__ import annotations

import logging

from deskcast.transport.playout.clocktrack import ClockTrack, LevelTrack

logger = logging.getLogger(__name__)


class Clocks:
    """The sender's clock, our sink's and the two against each other, in samples of ``rate``.

    Pure: readings and times are passed in.
    """

    def __init__(self, rate: int, max_dev: float) -> None:
        self.rate = rate
        self.max_dev = max_dev
        """Largest feed-forward, as a fraction (the controller's whole correction's limit)."""
        self.sender = ClockTrack()
        self.sink = ClockTrack(min_span_s=120.0, max_se_ppm=10.0)
        """Our sink's clock against the system clock, read from what it has played (what it
        was handed minus what it reports queued) when it can tell (:meth:`sink_played`).
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
        self.feed_forward = 0.0
        """The sender's clock against our sink's: :attr:`end_to_end` once it is measured,
        before that as :attr:`sender` and :attr:`sink` measured them (:meth:`_provisional`);
        kept through a restart of the stream until the new one is measured."""
        self._e2e_reported = self._sink_reported = self._reported = False

    def sender_packet(self, timestamp: int, arrival_s: float) -> float | None:
        """A packet with (extended) RTP ``timestamp`` arrived at ``arrival_s``: how late it is
        against the packets on time, in samples (None before the envelope is known)."""
        self.sender.add(arrival_s, timestamp / self.rate)
        envelope = self.sender.offset_s
        if envelope is None:
            return None
        return (envelope - (timestamp / self.rate - arrival_s)) * self.rate

    def sink_played(self, now_s: float, played_samples: float) -> None:
        """At ``now_s`` the sink has played ``played_samples`` of what it was handed (what
        was written minus what it reports queued)."""
        self.sink.add(now_s, played_samples / self.rate)

    def level(self, timestamp: int, now_s: float) -> float | None:
        """How far ahead of the frame at ``timestamp`` the sender is at ``now_s``, in
        samples, as the envelope of its packets maps its clock onto ours. Unlike the jitter
        buffer's depth it does not step by whole packets (read against a sink's bursts that
        made a one-frame sawtooth), and it tells how close a read is to running dry: the
        frame's packet, on time, is there from level 0 on, one that is ``x`` late from
        ``x``."""
        offset = self.sender.offset_s
        if offset is None:
            return None
        return (now_s + offset) * self.rate - timestamp

    def delay_read(self, now_s: float, level: float, queued_samples: float) -> None:
        """One read's level and what the sink had queued then: a reading of
        :attr:`end_to_end`."""
        self.end_to_end.add(now_s, now_s + (level + queued_samples + self._extra) / self.rate)

    def consumed(self, samples: int, ratio: float) -> None:
        """``samples`` of input were resampled by ``ratio``."""
        self._extra += (1.0 - ratio) * samples

    def step(self) -> None:
        """The level stepped (a dry run, a dropped backlog, time the device lost): a new
        segment of :attr:`end_to_end`, not a rate."""
        self.end_to_end.break_segment()

    def restart(self, new_sender: bool) -> None:
        """The stream restarted after silence (``new_sender``: another stream, maybe another
        clock, whose rate is measured anew); :attr:`feed_forward` stays until it is."""
        if new_sender:
            self.sender.clear()
            self.end_to_end.clear()
            self._e2e_reported = False
        else:
            self.sender.break_segment()
            self.end_to_end.break_segment()

    def update(self) -> bool:
        """Bring :attr:`feed_forward` up to date; True the first time the end-to-end rate
        is known (what a controller's integral learnt is in that measurement already)."""
        e2e = self.end_to_end.slope
        if e2e is not None:
            first = not self._e2e_reported
            if first:
                self._e2e_reported = True
                logger.info("sender's clock measured against our sink's: %+.0f ppm", e2e * 1e6)
            self.feed_forward = _clamp(e2e, self.max_dev)
            return first
        provisional = self._provisional()
        if provisional is not None:
            self.feed_forward = provisional
        return False

    def _provisional(self) -> float | None:
        """The feed-forward before the end-to-end rate is measured (None: keep it as it is):
        the sender's clock against the sink's as each was measured against the system clock,
        the sink taken to run at the system clock until its own rate is known (minutes).

        Known weakness: with the sink not yet measured this is the sender against
        ``CLOCK_MONOTONIC`` alone; on a null sink it read +104..+131 ppm with the truth 0
        and drained the default one-frame buffer's ~7.4 ms margin (RELIABILITY.md, "Where
        gaps and wander come from"). Its fix belongs here: what to apply while the sink's
        clock is unknown."""
        slope = self.sender.slope
        if slope is None:
            return None
        sink = self.sink.slope
        if sink is not None and not self._sink_reported:
            self._sink_reported = True
            logger.info("sink's clock measured: %+.0f ppm against the system clock",
                        sink * 1e6)
        if not self._reported:
            self._reported = True
            logger.info("sender's clock measured: %+.0f ppm against ours", slope * 1e6)
        # Both against the system clock: the sender's against the sink's is their ratio.
        return _clamp((1 + slope) / (1 + (sink or 0.0)) - 1, self.max_dev)

    @property
    def sink_ppm(self) -> float | None:
        """The sink's clock against the system clock (None: not known)."""
        return None if self.sink.slope is None else self.sink.slope * 1e6


def _clamp(x: float, limit: float) -> float:
    return max(-limit, min(limit, x))
