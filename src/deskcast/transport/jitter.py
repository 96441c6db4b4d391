"""The receiver's jitter buffer: packets in, in any order; frames out, in order, on time.

Pure logic (no sockets, no clocks): arrival times are passed in, and the playout side calls
:meth:`JitterBuffer.pop` once each time it needs the next frame. Timestamps are *extended*
(never wrap) and counted in samples of the stream rate.

* Reorders and drops duplicates and packets that come after their playout time.
* Starts once ``target`` of audio is buffered.
* Reports a gap as a frame to conceal, of the missing duration exactly, and hands over the
  next packet so its inband FEC can rebuild the lost one.
* Runs dry gracefully: when nothing is there to play it asks for one frame of concealment
  *without* consuming (an "expand"), so the late packet still plays next and the buffer has
  grown by exactly what the network needed. Only after ``max_expand`` of continuous
  expansion (the sender stopped) does it fall silent and rebuffer to the target.
* Adapts ``target`` to the measured delay variation between ``min`` and ``max`` once
  ``LEARN_PACKETS`` have been measured (the first few often come in a burst, a sender's
  start-up: a target raised to their spread was dropped again as a backlog, audio lost).
* Waits for a missing packet (expands) while the measured jitter says it may still come, and
  conceals it only once it is later than that: a packet that jitter reordered plays late
  rather than being lost, even before the buffer has grown to the target.
* Never lets latency creep: when more than ``target + slack`` is buffered it drops the
  oldest audio to get back to the target (drift correction by resampling keeps this rare).

A playout controller steers it through one narrow interface, once per read
(:meth:`JitterBuffer.take`): a :class:`Hold` in (drop this much first, keep this level, leave a
backlog to me) and a :class:`Taken` out (the frame, and what the buffer held and did).
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field

from deskcast.transport.jitterio import NO_HOLD, Frame, Hold, JitterStats, Taken

__all__ = ["LEARN_PACKETS", "NO_HOLD", "Frame", "Hold", "JitterBuffer", "JitterStats", "Taken"]

logger = logging.getLogger(__name__)

LEARN_PACKETS = 8
"""Transit times measured before the target adapts. Until then the spread seen is a poor
estimate of the jitter: too small (the next packet falls outside the range of ``n`` with
probability 2 / (n + 1): waiting for a missing packet allows twice that spread), or far too
large when the first packets came in a burst."""


@dataclass(order=True)
class _Entry:
    timestamp: int
    samples: int = field(compare=False)
    payload: bytes = field(compare=False)


class JitterBuffer:
    def __init__(self, rate: int = 48000, *, target_ms: float = 20.0, min_ms: float = 5.0,
                 max_ms: float = 250.0, adaptive: bool = True, window: int = 250,
                 max_packets: int = 2000) -> None:
        if not 0 <= min_ms <= target_ms <= max_ms:
            raise ValueError("need min_ms <= target_ms <= max_ms")
        self.rate = rate
        self.min_samples = round(min_ms * rate / 1000)
        self.max_samples = round(max_ms * rate / 1000)
        self.target_samples = round(target_ms * rate / 1000)
        self.adaptive = adaptive
        self.max_packets = max_packets
        self.stats = JitterStats()
        self._entries: list[_Entry] = []
        self._play_ts: int | None = None
        self._playing = False
        self._frame_samples = 0
        self._transit: deque[float] = deque(maxlen=window)
        self._excess_samples = 0
        self.catch_up_after_s = 1.0
        """How long more than ``target + slack`` may stay buffered before the excess is
        dropped (a burst after a network stall; steady drift is the resampler's job)."""
        self._jitter_samples = 0.0
        self._last_arrival = 0.0
        self._popped_since = 0
        """Audio handed out since the last packet arrived: ``pop`` is called at the sink's
        pace, so this is the time since then (the buffer has no clock of its own)."""
        self.max_expand_samples = rate // 5
        """Continuous expansion beyond this (200 ms: far more than any jitter we follow)
        means the sender stopped: fall silent and rebuffer."""
        self._expanding = 0
        self._grow_samples = 0
        self._just_expanded = False

    # --- input ----------------------------------------------------------------------------

    def put(self, timestamp: int, payload: bytes, samples: int, arrival: float) -> str:
        """Add a packet; returns 'ok', 'duplicate', 'late' or 'overflow'."""
        if samples <= 0:
            raise ValueError("a packet must carry audio")
        self._frame_samples = samples
        if self._play_ts is not None and timestamp + samples <= self._play_ts:
            self.stats.late += 1
            return "late"
        i = bisect.bisect_left(self._entries, _Entry(timestamp, 0, b""))
        if i < len(self._entries) and self._entries[i].timestamp == timestamp:
            self.stats.duplicates += 1
            return "duplicate"
        if len(self._entries) >= self.max_packets:
            self.stats.overflows += 1
            return "overflow"
        self._entries.insert(i, _Entry(timestamp, samples, payload))
        self.stats.received += 1
        self._observe(timestamp, arrival)
        return "ok"

    def _observe(self, timestamp: int, arrival: float) -> None:
        """Delay variation: spread of (arrival - send time) over the recent window."""
        self._transit.append(arrival - timestamp / self.rate)
        self._last_arrival = arrival
        self._popped_since = 0
        if not self.adaptive or len(self._transit) < LEARN_PACKETS:
            return
        ordered = sorted(self._transit)
        low = ordered[0]
        high = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        self._jitter_samples = (high - low) * self.rate
        want = self._jitter_samples + self._frame_samples
        self.target_samples = int(min(self.max_samples, max(self.min_samples, want)))

    # --- output ---------------------------------------------------------------------------

    @property
    def depth_samples(self) -> int:
        """Audio buffered ahead of the playout position (0 when empty)."""
        if not self._entries:
            return 0
        start = self._play_ts if self._playing and self._play_ts is not None else \
            self._entries[0].timestamp
        end = self._entries[-1].timestamp + self._entries[-1].samples
        return max(0, end - start)

    @property
    def position(self) -> int | None:
        """Timestamp of the next sample to play; None while (re)buffering."""
        return self._play_ts if self._playing else None

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def jitter_ms(self) -> float:
        return 1000 * self._jitter_samples / self.rate

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    def take(self, hold: Hold = NO_HOLD) -> Taken:
        """One read of a playout controller: drop what ``hold`` asks, pop the next frame as
        it says, and tell what the buffer held before and dropped."""
        depth = self.depth_samples if self._playing else None
        target = self.target_samples
        skipped = self.stats.skipped_samples
        self.skip(hold.drop_samples)
        frame = self.pop(hold)
        return Taken(frame, depth, target, self.stats.skipped_samples - skipped)

    def pop(self, hold: Hold = NO_HOLD) -> Frame | None:
        """The next frame to play, or None while (re)buffering; a backlog is dropped as
        ``hold`` says."""
        frame = self._next_frame(hold)
        if frame is not None:
            self._popped_since += frame.samples
        return frame

    def _next_frame(self, hold: Hold) -> Frame | None:
        if hold.on_time:
            return self._next_on_time() if self._playing else None
        if not self._playing:
            if not self._entries or self.depth_samples < self.target_samples:
                return None
            self._playing = True
            self._play_ts = self._entries[0].timestamp
            self._excess_samples = 0
        assert self._play_ts is not None
        self._catch_up(hold)
        while self._entries and self._entries[0].timestamp + self._entries[0].samples \
                <= self._play_ts:
            self._entries.pop(0)  # arrived before its slot passed, but we skipped past it
        if not self._entries:
            return self._run_dry()
        head = self._entries[0]
        if self._grow_samples > 0 and not self._just_expanded:
            # Growing towards a raised floor: one concealed frame between real ones.
            return self._expand(min(self._grow_samples, self._frame_samples))
        # Expansion that real audio follows stretched the stream (a sender that stopped is
        # not counted: nothing was delayed).
        self.stats.expanded_samples += self._expanding
        self._expanding = 0
        self._just_expanded = False
        if head.timestamp <= self._play_ts:
            self._entries.pop(0)
            self._play_ts = head.timestamp + head.samples
            self.stats.played += 1
            return Frame(head.timestamp, head.samples, head.payload)
        if self._may_still_come():
            # Not lost yet, only later than the packets after it: wait for it (the buffer
            # grows by a frame, as when it runs dry) rather than conceal it and then drop it.
            return self._expand(self._frame_samples)
        gap = head.timestamp - self._play_ts
        missing = min(gap, self._frame_samples or gap)
        ts = self._play_ts
        self._play_ts += missing
        self.stats.concealed_samples += missing
        nxt = head.payload if head.timestamp == self._play_ts else None
        return Frame(ts, missing, None, nxt)

    def _next_on_time(self) -> Frame | None:
        """The frame due next on a schedule: the packet, or its time concealed."""
        assert self._play_ts is not None
        while self._entries and self._entries[0].timestamp + self._entries[0].samples \
                <= self._play_ts:
            self._entries.pop(0)
        head = self._entries[0] if self._entries else None
        if head is not None and head.timestamp <= self._play_ts:
            self._entries.pop(0)
            self._play_ts = head.timestamp + head.samples
            self._expanding = 0
            self.stats.played += 1
            return Frame(head.timestamp, head.samples, head.payload)
        frame = self._frame_samples
        if head is None:
            if self._expanding == 0:
                self.stats.underruns += 1
            if self._expanding >= self.max_expand_samples or not frame:
                self._playing = False  # the sender stopped: a schedule starts anew
                self._expanding = 0
                return None
            self._expanding += frame
        missing = frame if head is None else min(head.timestamp - self._play_ts, frame)
        ts = self._play_ts
        self._play_ts += missing
        self.stats.concealed_samples += missing
        nxt = head.payload if head is not None and head.timestamp == self._play_ts else None
        return Frame(ts, missing, None, nxt)

    @property
    def first_timestamp(self) -> int | None:
        """The oldest packet's timestamp (None: empty)."""
        return self._entries[0].timestamp if self._entries else None

    @property
    def newest_timestamp(self) -> int | None:
        """The newest packet's timestamp (None: empty)."""
        return self._entries[-1].timestamp if self._entries else None

    def seek(self, timestamp: int) -> int:
        """Play on from sample ``timestamp`` (a schedule starts there, or jumps back to its
        time): older audio is dropped; returns the samples to cut from the start of the next
        frame, which begins that much before ``timestamp``."""
        start = self._play_ts if self._playing and self._play_ts is not None else None
        while self._entries and self._entries[0].timestamp + self._entries[0].samples \
                <= timestamp:
            self._entries.pop(0)
        head = self._entries[0] if self._entries else None
        trim = 0
        if head is not None and head.timestamp <= timestamp:
            trim = timestamp - head.timestamp
            self._play_ts = head.timestamp
        else:
            self._play_ts = timestamp
        if start is not None and timestamp > start:
            self.stats.skipped_samples += timestamp - start
        self._playing = True
        self._expanding = self._grow_samples = self._excess_samples = 0
        self._just_expanded = False
        return trim

    def _may_still_come(self) -> bool:
        """Whether the packet due now, missing while later ones are here, may still arrive:
        had it come now, its transit would still be within the spread of the recent
        packets' (twice that while fewer than ``LEARN_PACKETS`` were measured, a spread that
        few packets show is too small). Not a threshold on the depth: a buffer already
        playing that far behind the earliest packets conceals a loss at once, so waiting
        only grows it towards what the jitter needs, not by a frame at every loss."""
        assert self._play_ts is not None
        if not self.adaptive or not self._transit or \
                self._expanding >= self.max_expand_samples:
            return False
        now = self._last_arrival + self._popped_since / self.rate
        low = min(self._transit)
        spread = max(self._transit) - low
        if len(self._transit) < LEARN_PACKETS:
            spread *= 2
        return now - self._play_ts / self.rate - low < spread

    def _run_dry(self) -> Frame | None:
        """Nothing to play: conceal without consuming, or after too long, rebuffer."""
        if self._expanding == 0:
            self.stats.underruns += 1
        if self._expanding >= self.max_expand_samples or not self._frame_samples:
            self._playing = False
            self._expanding = 0
            return None
        return self._expand(self._frame_samples)

    def _expand(self, samples: int) -> Frame:
        assert self._play_ts is not None
        self._expanding += samples
        self._grow_samples = max(0, self._grow_samples - samples)
        self._just_expanded = True
        return Frame(self._play_ts, samples, None, None, expand=True)

    def raise_floor(self, floor_samples: int) -> None:
        """Never run below ``floor_samples`` from now on (e.g. FEC needs a whole group
        buffered); a playing buffer grows there by expanding one frame at a time."""
        floor_samples = min(floor_samples, self.max_samples)
        if floor_samples <= self.min_samples:
            return
        self.min_samples = floor_samples
        if self._playing:
            self._grow_samples = max(0, floor_samples - self.depth_samples)
        self.target_samples = max(self.target_samples, floor_samples)

    def _catch_up(self, hold: Hold) -> None:
        """Drop the oldest audio when far more than the target (or the level ``hold``
        keeps) has stayed buffered."""
        assert self._play_ts is not None
        # Two frames (40 ms at the default 20 ms frames; 10 ms at 5 ms frames, where the
        # user asked for low latency), at least 10 ms.
        slack = max(2 * self._frame_samples, self.rate // 100)
        if hold.leave_backlog:
            self._excess_samples = 0
            return
        keep = self.target_samples
        if hold.level_samples is not None:
            keep = max(keep, min(round(hold.level_samples), self.target_samples + slack))
        if self.depth_samples <= keep + slack:
            self._excess_samples = 0
            return
        self._excess_samples += self._frame_samples
        if self._excess_samples < self.catch_up_after_s * self.rate:
            return
        self._excess_samples = 0
        end = self._entries[-1].timestamp + self._entries[-1].samples
        self._skip_to(end - keep)

    def skip(self, samples: int) -> None:
        """Drop ``samples`` of the oldest audio (whole packets), keeping at least a frame
        buffered: what piled up while the device lost time (the drift controller asks)."""
        if samples <= 0 or not self._playing or self._play_ts is None or not self._entries:
            return
        samples = min(samples, self.depth_samples - self._frame_samples)
        if samples > 0:
            self._skip_to(self._play_ts + samples)

    def _skip_to(self, new_start: int) -> None:
        assert self._play_ts is not None
        while self._entries and self._entries[0].timestamp < new_start:
            self._entries.pop(0)
        if self._entries:
            new_start = self._entries[0].timestamp
        self.stats.skipped_samples += max(0, new_start - self._play_ts)
        logger.debug("jitter buffer: dropped %d samples to stay at the target/held level",
                     new_start - self._play_ts)
        self._play_ts = new_start

    def reset(self) -> None:
        """Forget everything (a new sender or a restart)."""
        self._entries.clear()
        self._play_ts = None
        self._playing = False
        self._transit.clear()
        self._popped_since = 0
        self._expanding = self._grow_samples = 0
        self._just_expanded = False
