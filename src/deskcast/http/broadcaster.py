"""Fan one encoder's output out to any number of HTTP listeners; a slow one never stalls anyone.

The :class:`Broadcaster` keeps a bounded ring of recent :class:`Chunk` objects, each numbered by
a monotonically increasing index. A :class:`Listener` holds nothing but the index of the next
chunk it needs, so a chunk is stored once however many listeners there are, and
:meth:`Broadcaster.publish` never waits for anybody: it appends to the ring, wakes the listeners
that now have a whole batch to send, and cuts those that fell too far behind.

Timing is measured in *stream time* (the sum of ``Chunk.duration_s``), not on the wall clock, so a
paused encoder does not make its listeners look slow:

burst
    A new listener starts ``burst_s`` behind live: its first batch is the codec header followed by
    the most recent ``burst_s`` of audio, so a player can start playing at once.
lag
    The audio published but not yet taken by a listener. A listener whose lag exceeds
    ``max_lag_s`` is cut (``cut_reason == "too slow"``; its :meth:`Listener.next_batch` returns
    None): skipping it forward would hand the player a silent jump it cannot tell from a glitch,
    while a cut makes it reconnect cleanly (and be sent the header again).
batch
    :meth:`Listener.next_batch` returns once about a batch of audio is waiting, so a server
    writes ~10 times a second rather than once per codec frame. Less is returned once the oldest
    pending chunk has been published for a batch on ``clock`` (a listener that starts waiting
    with a partial batch is woken by a timer for that), so a batch is never held back long.
    A batch is ``batch_s``, growing with the number of listeners (``listeners / writes_per_s``)
    up to ``max_batch_s``: with many listeners each write costs more than the delay it saves.
push
    :meth:`Listener.stream_to` hands a listener's later batches straight to a transport: on
    :meth:`Broadcaster.publish` (or its timer), one batch is joined and framed once and written
    to every such listener in one loop, with no coroutine step or future per listener. A
    listener whose transport holds more than ``max_lag_s`` of audio unsent is cut as too slow;
    nobody ever waits for it. Listeners with ICY metadata get the batch with their blocks
    interleaved, built once for all those at the same point of their interval.

Everything here runs on the event loop thread. An encoder running in another thread must hand
its chunks over with ``loop.call_soon_threadsafe(broadcaster.publish, chunk)``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple, Protocol

from deskcast.http.icy import IcyCache, IcyInserter

logger = logging.getLogger(__name__)

CUT_TOO_SLOW = "too slow"
"""The listener fell more than ``max_lag_s`` behind live (or out of the ring)."""
CUT_CLOSED = "closed"
"""The broadcaster was closed."""
CUT_LEFT = "left"
"""The listener closed itself (its client went away)."""

_EPS = 1e-6
"""Slack for sums of float durations (50 x 0.02 s must count as 1.0 s)."""


class Transport(Protocol):
    """What :meth:`Listener.stream_to` writes to (an :class:`asyncio.WriteTransport`)."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


@dataclass(frozen=True)
class Chunk:
    """One or more whole codec frames, shared (never copied) by every listener."""

    data: bytes
    duration_s: float
    """Audio the chunk decodes to; must be > 0."""
    pts_s: float
    """Stream time of the chunk's first sample (informational)."""

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"chunk duration must be > 0 s, got {self.duration_s}")


@dataclass(frozen=True)
class BroadcasterStats:
    """A snapshot of a broadcaster's counters."""

    published_chunks: int
    published_bytes: int
    listeners_total: int
    """Listeners ever subscribed."""
    listeners_cut: int
    """Listeners cut for being too slow."""
    listeners_peak: int
    """Most listeners connected at once."""
    sent_bytes: int
    """Bytes handed out by :meth:`Listener.next_batch`, headers included."""
    ring_chunks: int
    ring_s: float
    """Audio held in the ring."""


class _Entry(NamedTuple):
    chunk: Chunk
    start_s: float
    """Stream time (sum of earlier durations) at which the chunk starts."""
    published_at: float
    """``clock()`` when the chunk was published."""


class Broadcaster:
    """One encoder's chunks, handed to any number of :class:`Listener` objects.

    ``header`` is sent to every new listener first (e.g. Ogg/Opus header pages; empty for MP3).
    The ring keeps ``max(burst_s, max_lag_s) + batch_s`` of audio: enough for a new listener's
    burst and for every listener that is not yet cut.
    """

    def __init__(self, *, header: bytes = b"", burst_s: float = 1.0, max_lag_s: float = 4.0,
                 batch_s: float = 0.1, max_batch_s: float | None = None,
                 writes_per_s: float = math.inf,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst_s < 0 or max_lag_s <= 0 or batch_s < 0:
            raise ValueError("need burst_s >= 0, max_lag_s > 0 and batch_s >= 0")
        max_batch_s = batch_s if max_batch_s is None else max_batch_s
        if max_batch_s < batch_s or not writes_per_s > 0:
            raise ValueError("need max_batch_s >= batch_s and writes_per_s > 0")
        if burst_s > max_lag_s:
            raise ValueError(f"burst_s ({burst_s}) cannot exceed max_lag_s ({max_lag_s}): "
                             "a new listener would be cut at once")
        self.header = header
        self.burst_s = burst_s
        self.max_lag_s = max_lag_s
        self.batch_s = batch_s
        self.max_batch_s = max_batch_s
        self.writes_per_s = writes_per_s
        self.clock = clock
        self._keep_s = max(burst_s, max_lag_s) + max_batch_s + 2 * _EPS
        self._ring_bytes = 0
        self._ring: deque[_Entry] = deque()
        self._first = 0
        """Index of ``_ring[0]``; ``_first + len(_ring)`` is the index of the next chunk."""
        self._end_s = 0.0
        """Stream time at the end of the newest chunk."""
        self._listeners: dict[Listener, None] = {}
        self._busy: dict[Listener, None] = {}
        """Listeners not waiting in :meth:`Listener.next_batch`: the only ones that can fall
        behind, so the only ones :meth:`publish` checks."""
        self._ready: list[float] = []
        """Heap of the stream times at which waiting listeners have a whole batch."""
        self._waiters: dict[float, list[tuple[int, Listener]]] = {}
        """Ready time -> (wait sequence, listener): listeners at one position share one entry,
        so waking all listeners that keep up costs one heap operation."""
        self._entries = 0
        """Entries in ``_waiters``."""
        self._stale = 0
        """Entries in ``_waiters`` whose listener no longer waits on them."""
        self._seq = 0
        self._pushed: dict[Listener, None] = {}
        """Listeners in :meth:`Listener.stream_to`: written to by :meth:`_flush`."""
        self._push_next = 0
        """Index of the first chunk not yet flushed to the pushed listeners."""
        self._flush_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._published_chunks = 0
        self._published_bytes = 0
        self._listeners_total = 0
        self._listeners_cut = 0
        self._listeners_peak = 0
        self._sent_bytes = 0

    # --- encoder side ---------------------------------------------------------------------

    def publish(self, chunk: Chunk) -> None:
        """Append a chunk and wake whoever now has a batch; never blocks. Ignored once closed.

        Costs O(1) per listener woken (plus O(log n) per distinct position they wait at) and O(1)
        per listener that is not waiting; listeners waiting for more data cost nothing.
        """
        if self._closed:
            return
        start = self._end_s
        self._ring.append(_Entry(chunk, start, self.clock()))
        self._end_s = start + chunk.duration_s
        self._published_chunks += 1
        self._published_bytes += len(chunk.data)
        self._ring_bytes += len(chunk.data)
        # wake the listeners that now have a whole batch
        ready = self._ready
        while ready and ready[0] <= self._end_s:
            bucket = self._waiters.pop(heapq.heappop(ready))
            self._entries -= len(bucket)
            for seq, listener in bucket:
                if listener._wait_seq == seq:
                    listener._wake()
                else:
                    self._stale -= 1
        # cut the listeners that fell behind (waiting ones are less than a batch behind)
        limit = self._end_s - self.max_lag_s - _EPS
        slow = [ls for ls in self._busy if self._start_s(ls._next) < limit]
        for listener in slow:
            self._cut_slow(listener)
        # trim the ring to the minimal suffix covering _keep_s
        ring = self._ring
        while len(ring) > 1 and self._end_s - ring[1].start_s >= self._keep_s - _EPS:
            self._ring_bytes -= len(ring.popleft().chunk.data)
            self._first += 1
        if self._pushed:
            self._maybe_flush()

    def close(self) -> None:
        """End every listener (their next_batch returns None); later subscribers end at once."""
        if self._closed:
            return
        self._closed = True
        for listener in list(self._listeners):
            listener._cut(CUT_CLOSED)
        self._cancel_flush_timer()
        self._ring.clear()
        self._ring_bytes = 0
        self._ready.clear()
        self._waiters.clear()
        self._entries = self._stale = 0

    # --- listener side --------------------------------------------------------------------

    def subscribe(self) -> Listener:
        """A new listener: it gets the header, then the last ``burst_s`` of audio, then live."""
        ring = self._ring
        index = self._first + len(ring)
        i = len(ring) - 1
        while i >= 0 and self._end_s - ring[i].start_s <= self.burst_s + _EPS:
            index -= 1
            i -= 1
        listener = Listener(self, index)
        self._listeners_total += 1
        if self._closed:
            listener._cut(CUT_CLOSED)
            return listener
        self._listeners[listener] = None
        self._busy[listener] = None
        self._listeners_peak = max(self._listeners_peak, len(self._listeners))
        return listener

    @property
    def listeners(self) -> int:
        """Listeners connected now."""
        return len(self._listeners)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def current_batch_s(self) -> float:
        """The batch now: ``batch_s``, or ``listeners / writes_per_s`` up to ``max_batch_s``."""
        grown = len(self._listeners) / self.writes_per_s
        return self.batch_s if grown <= self.batch_s else min(grown, self.max_batch_s)

    @property
    def bytes_per_s(self) -> float:
        """The stream's byte rate over the ring (0 while it holds no audio)."""
        ring_s = self._end_s - self._ring[0].start_s if self._ring else 0.0
        return self._ring_bytes / ring_s if ring_s > 0 else 0.0

    @property
    def stats(self) -> BroadcasterStats:
        ring_s = self._end_s - self._ring[0].start_s if self._ring else 0.0
        return BroadcasterStats(
            published_chunks=self._published_chunks, published_bytes=self._published_bytes,
            listeners_total=self._listeners_total, listeners_cut=self._listeners_cut,
            listeners_peak=self._listeners_peak, sent_bytes=self._sent_bytes,
            ring_chunks=len(self._ring), ring_s=ring_s)

    # --- internals used by Listener -------------------------------------------------------

    @property
    def _next(self) -> int:
        return self._first + len(self._ring)

    def _start_s(self, index: int) -> float:
        """Stream time at which chunk ``index`` starts (the oldest chunk's if it left the ring)."""
        if index >= self._next or not self._ring:
            return self._end_s
        return self._ring[max(index - self._first, 0)].start_s

    def _cut_slow(self, listener: Listener) -> None:
        logger.info("cutting a listener %.1f s behind live (limit %.1f s)",
                    listener.lag_s, self.max_lag_s)
        self._listeners_cut += 1
        listener._cut(CUT_TOO_SLOW)

    def _forget(self, listener: Listener) -> None:
        self._listeners.pop(listener, None)
        self._busy.pop(listener, None)
        self._detach(listener)
        if listener._wait_seq >= 0:
            listener._wait_seq = -1
            self._drop_waiter_entry()

    def _add_waiter(self, ready_s: float, listener: Listener) -> None:
        self._seq += 1
        listener._wait_seq = self._seq
        bucket = self._waiters.get(ready_s)
        if bucket is None:
            bucket = self._waiters[ready_s] = []
            heapq.heappush(self._ready, ready_s)
        bucket.append((self._seq, listener))
        self._entries += 1

    def _drop_waiter_entry(self) -> None:
        """A waiter entry went stale; rebuild the waiters once most of them are stale."""
        self._stale += 1
        if self._stale > 64 and self._stale * 2 > self._entries:
            waiters: dict[float, list[tuple[int, Listener]]] = {}
            for key, bucket in self._waiters.items():
                live = [(seq, ls) for seq, ls in bucket if ls._wait_seq == seq]
                if live:
                    waiters[key] = live
            self._waiters = waiters
            self._ready = list(waiters)
            heapq.heapify(self._ready)
            self._entries = sum(map(len, waiters.values()))
            self._stale = 0

    # --- push: batches written straight to transports ----------------------------------------

    def _attach(self, listener: Listener) -> None:
        if not self._pushed:
            self._push_next = listener._next
        self._pushed[listener] = None
        self._busy.pop(listener, None)
        self._maybe_flush()

    def _detach(self, listener: Listener) -> None:
        if listener in self._pushed:
            del self._pushed[listener]
            if not self._pushed:
                self._cancel_flush_timer()

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _on_flush_timer(self) -> None:
        self._flush_timer = None
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Flush if a whole batch is pending, or its oldest chunk waited a batch; else make
        sure a timer will."""
        start = max(self._push_next, self._first)
        if start >= self._next or self._closed:
            return
        batch_s = self.current_batch_s
        if self._end_s - self._ring[start - self._first].start_s >= batch_s - _EPS:
            self._flush()
            return
        wait_s = self._ring[start - self._first].published_at + batch_s - self.clock()
        if wait_s <= 0:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                wait_s, self._on_flush_timer)

    def _joined_from(self, index: int) -> bytes:
        """The data of the chunks from ring index ``index`` (>= the first kept) to the newest."""
        return b"".join([e.chunk.data for e in islice(self._ring, index - self._first, None)])

    def _flush(self) -> None:
        """Write everything pending to every pushed listener: joined and framed once, shared
        by all the listeners at the group's position (the rest get their own bytes)."""
        self._cancel_flush_timer()
        first, end = self._first, self._next
        start = self._push_next
        self._push_next = end
        start = max(start, first)  # below first only after a long stall: the oldest are gone
        data = self._joined_from(start)
        framed = http_chunk(data)
        limit_bytes = self.max_lag_s * self.bytes_per_s
        sent = 0
        slow: list[Listener] = []
        icy_cache: IcyCache = {}
        icy_framed: dict[bytes, bytes] = {}
        for listener in self._pushed:
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
        self._sent_bytes += sent
        for listener in slow:
            self._cut_slow(listener)

    def _take(self, listener: Listener) -> bytes:
        """Everything from the listener's next chunk up to live (header first if due)."""
        ring = self._ring
        parts = [entry.chunk.data for entry in
                 (ring[i] for i in range(listener._next - self._first, len(ring)))]
        if not listener._header_sent:
            listener._header_sent = True
            if self.header:
                parts.insert(0, self.header)
        listener._next = self._next
        data = b"".join(parts)
        listener.sent_bytes += len(data)
        self._sent_bytes += len(data)
        return data


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
        b._attach(self)
        try:
            await future
        finally:
            self._future = None
            self._transport = None
            self._icy = None
            b._detach(self)
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
