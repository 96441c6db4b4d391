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

The parts: this module (the ring, publishing, waking waiting listeners), :mod:`.listener` (one
client's position, :meth:`Listener.next_batch` and :meth:`Listener.stream_to`) and :mod:`.push`
(the batches written straight to transports).

Everything here runs on the event loop thread. An encoder running in another thread must hand
its chunks over with ``loop.call_soon_threadsafe(broadcaster.publish, chunk)``.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from deskcast.http.listener import CUT_CLOSED, CUT_LEFT, CUT_TOO_SLOW, Listener
from deskcast.http.push import Pusher, Transport, buffered_bytes, http_chunk

__all__ = ["CUT_CLOSED", "CUT_LEFT", "CUT_TOO_SLOW", "Broadcaster", "BroadcasterStats", "Chunk",
           "Listener", "Transport", "buffered_bytes", "http_chunk"]

logger = logging.getLogger(__name__)

_EPS = 1e-6
"""Slack for sums of float durations (50 x 0.02 s must count as 1.0 s)."""


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
        self._push = Pusher(self)
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
        if self._push.listeners:
            self._push.maybe_flush()

    def close(self) -> None:
        """End every listener (their next_batch returns None); later subscribers end at once."""
        if self._closed:
            return
        self._closed = True
        for listener in list(self._listeners):
            listener._cut(CUT_CLOSED)
        self._push.cancel_timer()
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

    # --- internals used by Listener and Pusher ---------------------------------------------

    @property
    def _pushed(self) -> dict[Listener, None]:
        """Listeners in :meth:`Listener.stream_to`."""
        return self._push.listeners

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
        self._push.detach(listener)
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
