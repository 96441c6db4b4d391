"""The delay meter: how long the audio waits in the receiver, from when its packet arrived on
time to when the sink plays it (``delay_ms`` in the receiver's status)."""

from __future__ import annotations

import math


class DelayMeter:
    """What the listener hears: how long the audio waits in the receiver, per sample.

    A sample's wait is from when its packet arrives, on time, to when it is handed to the
    sink. "On time" is the packet's RTP timestamp mapped onto our clock through the upper
    envelope of the sender's timestamps against arrival (:attr:`ClockTrack.offset_s`), so a
    packet the network held back counts the time it was late as delay too, and the wait does
    not depend on when exactly a packet happened to arrive. Unlike the jitter buffer's depth,
    which steps by whole packets and, read against the sink's bursts, swings by a frame or
    more, the mean over all samples of a second moves only when the delay really does.

    Means are kept per ``window_s`` of our clock; :meth:`mean_ms` is the last complete one.
    """

    def __init__(self, rate: int, window_s: float = 1.0) -> None:
        self.rate = rate
        self.window_s = window_s
        self._window: int | None = None
        self._sum = self._sink_sum = 0.0
        self._samples = 0
        self._last: tuple[int, float, float] | None = None
        """(window, mean wait, mean of it in the sink; seconds) of the last complete window."""

    def add(self, now_s: float, offset_s: float | None, timestamp: int, samples: int,
            sink_s: float = 0.0) -> None:
        """``samples`` from (extended) ``timestamp`` on were handed to the sink at ``now_s``,
        which plays them ``sink_s`` later; ``offset_s``: the sender's clock minus ours for
        packets on time (None: not known)."""
        if offset_s is None or samples <= 0:
            return
        self._roll(now_s)
        wait = now_s + offset_s - timestamp / self.rate + sink_s
        self._sum += wait * samples
        self._sink_sum += sink_s * samples
        self._samples += samples

    def _roll(self, now_s: float) -> int:
        window = math.floor(now_s / self.window_s)
        if self._window is not None and window != self._window and self._samples:
            self._last = (self._window, self._sum / self._samples,
                          self._sink_sum / self._samples)
            self._sum, self._sink_sum, self._samples = 0.0, 0.0, 0
        self._window = window
        return window

    def mean_ms(self, now_s: float) -> tuple[float, float] | None:
        """Mean wait over the samples of the last complete window and the part of it in the
        sink, ms (None when nothing played in it: silence, rebuffering)."""
        window = self._roll(now_s)
        if self._last is None or self._last[0] != window - 1:
            return None
        return 1000 * self._last[1], 1000 * self._last[2]

    def reset(self) -> None:
        self._window, self._last = None, None
        self._sum = self._sink_sum = 0.0
        self._samples = 0
