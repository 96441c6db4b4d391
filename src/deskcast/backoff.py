"""How long to wait before trying again, after a failure: one rule for everything that retries
(a lost device reopened, an Icecast connection, a route leg restarted). Pure logic."""

from __future__ import annotations

import math


class Backoff:
    """Waits of ``first_s``, doubled after each failure in a row, up to ``max_s``.

    :meth:`reset` after a good run starts again at ``first_s``. A caller that knows how long
    the failed attempt ran can say so to :meth:`next`: a run of at least ``stable_s`` counts as
    a good one (a leg that dies once an hour is not punished).
    """

    def __init__(self, first_s: float, max_s: float, *, stable_s: float = math.inf) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError("backoff needs 0 < first_s <= max_s")
        self.first_s = first_s
        self.max_s = max_s
        self.stable_s = stable_s
        self._next = first_s

    def next(self, ran_s: float = 0.0) -> float:
        """The wait before the next attempt, after one that failed having run ``ran_s``."""
        if ran_s >= self.stable_s:
            self.reset()
        delay = self._next
        self._next = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        """A good run: the next wait is ``first_s`` again."""
        self._next = self.first_s
