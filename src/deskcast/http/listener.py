"""One client's position in a :class:`Broadcaster`'s stream (see :mod:`.broadcaster` for the
terms: burst, lag, batch, push)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from deskcast.http.icy import IcyInserter
from deskcast.http.push import Transport, buffered_bytes

if TYPE_CHECKING:
    from deskcast.http.broadcaster import Broadcaster

CUT_TOO_SLOW = "too slow"
"""The listener fell more than ``max_lag_s`` behind live (or out of the ring)."""
CUT_CLOSED = "closed"
"""The broadcaster was closed."""
CUT_LEFT = "left"
"""The listener closed itself (its client went away)."""

_EPS = 1e-6
"""Slack for sums of float durations (as in :mod:`.broadcaster`)."""


class Listener:
    """One client's position in a :class:`Broadcaster`'s stream. Use from the loop thread."""

    def __init__(self, broadcaster: Broadcaster, index: int) -> None:
        self._b = broadcaster
        self._next = index
        self._header_sent = False
        self._future: asyncio.Future[None] | None = None
        self._wait_seq = -1
        """Sequence number of this listener's live heap entry, -1 when it has none."""
        self.cut_reason: str | None = None
        """Why the listener ended: ``"too slow"``, ``"closed"``, ``"left"``; None while live."""
        self.sent_bytes = 0
        self._lag_at_cut = 0.0
        self._transport: Transport | None = None
        """Set while in :meth:`stream_to`."""
        self._chunked = False
        self._icy: IcyInserter | None = None
        self._title: Callable[[], str] = str

    @property
    def lag_s(self) -> float:
        """Audio published but not yet returned by :meth:`next_batch` (frozen once cut)."""
        if self.cut_reason is not None:
            return self._lag_at_cut
        b = self._b
        if self._next < b._first:
            return b._end_s - b._ring[0].start_s if b._ring else 0.0
        lag_s = b._end_s - b._start_s(self._next)
        if self._transport is not None:  # plus what its transport still holds
            rate = b.bytes_per_s
            if rate > 0:
                lag_s += buffered_bytes(self._transport) / rate
        return lag_s

    async def next_batch(self) -> bytes | None:
        """The next bytes to write: header and burst at once, then about ``batch_s`` at a time.

        None once the listener is cut or closed, or the broadcaster closed. Cancelling the call
        loses nothing: the next call returns the same data.
        """
        b = self._b
        while True:
            if self.cut_reason is not None:
                return None
            if self._next < b._first:  # fell out of the ring (only if publish was bypassed)
                b._cut_slow(self)
                return None
            available = b._end_s - b._start_s(self._next)
            if not self._header_sent and (b.header or available > 0):
                return b._take(self)
            batch_s = b.current_batch_s
            if available >= batch_s - _EPS and available > 0:
                return b._take(self)
            timeout: float | None = None
            if available > 0:
                published_at = b._ring[self._next - b._first].published_at
                timeout = published_at + batch_s - b.clock()
                if timeout <= 0:
                    return b._take(self)
            await self._wait(b._start_s(self._next) + batch_s - _EPS, timeout)

    async def stream_to(self, transport: Transport, *, chunked: bool,
                        icy: IcyInserter | None = None,
                        title: Callable[[], str] = str) -> None:
        """Write every later batch straight to ``transport`` until the listener ends.

        For a client that already has its response head and whatever :meth:`next_batch`
        returned. ``chunked`` frames each batch as an HTTP/1.1 chunk; ``icy`` (the inserter
        that already took the first batch) interleaves ICY blocks carrying ``title()``.
        Returns once the listener is cut (too slow: its transport held more than ``max_lag_s``
        of audio unsent), closed, or the broadcaster closes; cancelling it stops the writes,
        and :meth:`next_batch` then carries on from where they stopped.
        """
        b = self._b
        if self.cut_reason is not None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._future = future
        self._transport = transport
        self._chunked = chunked
        self._icy = icy
        self._title = title
        b._push.attach(self)
        try:
            await future
        finally:
            self._future = None
            self._transport = None
            self._icy = None
            b._push.detach(self)
            if self.cut_reason is None:
                b._busy[self] = None

    async def _wait(self, ready_s: float, timeout: float | None) -> None:
        """Sleep until the stream reaches ``ready_s``, ``timeout`` passes, or the listener ends."""
        b = self._b
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._future = future
        b._add_waiter(ready_s, self)
        b._busy.pop(self, None)
        timer = None if timeout is None else loop.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
            self._future = None
            if self._wait_seq >= 0:  # timed out or cancelled: the heap entry is stale now
                self._wait_seq = -1
                b._drop_waiter_entry()
            if self.cut_reason is None:
                b._busy[self] = None

    def _wake(self) -> None:
        """Called by publish with this listener's heap entry, just popped."""
        self._wait_seq = -1
        if self.cut_reason is None:
            self._b._busy[self] = None
        if self._future is not None:
            _resolve(self._future)

    def _cut(self, reason: str) -> None:
        if self.cut_reason is not None:
            return
        self._lag_at_cut = self.lag_s
        self.cut_reason = reason
        self._transport = None
        self._b._forget(self)
        if self._future is not None:
            _resolve(self._future)

    def close(self) -> None:
        """Leave the broadcast (e.g. the client disconnected); next_batch then returns None."""
        self._cut(CUT_LEFT)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
