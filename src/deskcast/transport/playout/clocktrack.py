"""A clock read against ours through noisy readings: its rate and where it is now.

The sender's clock is read from its packets' timestamps at their arrival times, our sink's
from what it has played, and the two against each other from the delay where they meet
(:mod:`deskcast.transport.playout.clocks` holds the three).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


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

