"""Push: a broadcaster's batches written straight to its listeners' transports.

On :meth:`Broadcaster.publish` (or its timer), one batch is joined and framed once and written to
every listener in :meth:`Listener.stream_to` in one loop, with no coroutine step or future per
listener. A listener whose transport holds more than ``max_lag_s`` of audio unsent is cut as
too slow; nobody ever waits for it. Listeners with ICY metadata get the batch with their blocks
interleaved, built once for all those at the same point of their interval.
"""

from __future__ import annotations

import asyncio
from itertools import islice
from typing import TYPE_CHECKING, Protocol

from deskcast.http.icy import IcyCache

if TYPE_CHECKING:
    from deskcast.http.broadcaster import Broadcaster
    from deskcast.http.listener import Listener

_EPS = 1e-6
"""Slack for sums of float durations (as in :mod:`.broadcaster`)."""


class Transport(Protocol):
    """What :meth:`Listener.stream_to` writes to (an :class:`asyncio.WriteTransport`)."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


class Pusher:
    """The listeners of one broadcaster that are pushed to, and where the push has got to."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._b = broadcaster
        self.listeners: dict[Listener, None] = {}
        """Listeners in :meth:`Listener.stream_to`: written to by :meth:`flush`."""
        self._next = 0
        """Index of the first chunk not yet flushed to the pushed listeners."""
        self._timer: asyncio.TimerHandle | None = None

    def attach(self, listener: Listener) -> None:
        if not self.listeners:
            self._next = listener._next
        self.listeners[listener] = None
        self._b._busy.pop(listener, None)
        self.maybe_flush()

    def detach(self, listener: Listener) -> None:
        if listener in self.listeners:
            del self.listeners[listener]
            if not self.listeners:
                self.cancel_timer()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Flush if a whole batch is pending, or its oldest chunk waited a batch; else make
        sure a timer will."""
        b = self._b
        start = max(self._next, b._first)
        if start >= b._next or b.closed:
            return
        batch_s = b.current_batch_s
        if b._end_s - b._ring[start - b._first].start_s >= batch_s - _EPS:
            self.flush()
            return
        wait_s = b._ring[start - b._first].published_at + batch_s - b.clock()
        if wait_s <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait_s, self._on_timer)

    def _joined_from(self, index: int) -> bytes:
        """The data of the chunks from ring index ``index`` (>= the first kept) to the newest."""
        b = self._b
        return b"".join([e.chunk.data for e in islice(b._ring, index - b._first, None)])

    def flush(self) -> None:
        """Write everything pending to every pushed listener: joined and framed once, shared
        by all the listeners at the group's position (the rest get their own bytes)."""
        b = self._b
        self.cancel_timer()
        first, end = b._first, b._next
        start = self._next
        self._next = end
        start = max(start, first)  # below first only after a long stall: the oldest are gone
        data = self._joined_from(start)
        framed = http_chunk(data)
        limit_bytes = b.max_lag_s * b.bytes_per_s
        sent = 0
        slow: list[Listener] = []
        icy_cache: IcyCache = {}
        icy_framed: dict[bytes, bytes] = {}
        for listener in self.listeners:
            transport = listener._transport
            assert transport is not None
            if transport.is_closing():
                continue  # its handler is being cancelled and will close it
            if buffered_bytes(transport) > limit_bytes:
                slow.append(listener)
                continue
            at = listener._next
            icy = listener._icy
            if at == start:
                if icy is None:
                    transport.write(framed if listener._chunked else data)
                else:  # the same bytes for every ICY listener at the same point of its blocks
                    out = icy.feed_shared(data, listener._title(), icy_cache)
                    if listener._chunked:
                        framed_out = icy_framed.get(out)
                        if framed_out is None:
                            framed_out = icy_framed[out] = http_chunk(out)
                        out = framed_out
                    transport.write(out)
                listener.sent_bytes += len(data)
                sent += len(data)
            elif at < first:
                slow.append(listener)
                continue
            elif at < end:  # it joined at another position (rare): its own bytes
                own = self._joined_from(at)
                listener.sent_bytes += len(own)
                sent += len(own)
                if icy is not None:
                    own = icy.feed(own, listener._title())
                transport.write(http_chunk(own) if listener._chunked else own)
            listener._next = end
        b._sent_bytes += sent
        for listener in slow:
            b._cut_slow(listener)


def http_chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (size in hex, CRLF, data, CRLF)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def buffered_bytes(transport: Transport) -> int:
    """What ``transport`` still holds to send; 0 once it is closing. An SSL transport whose
    connection is gone raises from ``get_write_buffer_size`` (its protocol is None): seen when
    serve stopped with an HTTPS listener."""
    if transport.is_closing():
        return 0
    try:
        return transport.get_write_buffer_size()
    except (AttributeError, RuntimeError):
        return 0
