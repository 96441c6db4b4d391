"""Push an already-encoded stream to an Icecast server as a source (``serve --icecast URL``).

Icecast then fans the stream out to as many listeners (and relays) as it can hold, so one
deskcast can feed thousands. The source connection is one long HTTP ``PUT`` (Icecast >= 2.4)
whose body is the stream itself and never ends (:mod:`.icecast_wire`).

:class:`IcecastPush` never blocks the code that feeds it: chunks go through a bounded queue and,
when Icecast cannot keep up (or is unreachable), the oldest are dropped and counted. A lost or
refused connection is retried with backoff, forever, with one log line per change of state.
:class:`IcecastRelay` is the push as one of serve's relays: a fresh :meth:`Server.subscribe`
per connection (so an Ogg stream starts every connection with its header pages), and the
now-playing title passed on.

URL: ``icecast://[USER:]PASSWORD@HOST[:PORT]/MOUNT`` (:mod:`.icecast_target`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from deskcast.backoff import Backoff
from deskcast.http.relay.dropping import DropOldest
from deskcast.http.relay.icecast_target import (
    CONTENT_TYPES,
    IcecastTarget,
    SourceRefused,
    explain_refusal,
    format_for_mount,
)
from deskcast.http.relay.icecast_wire import (
    StreamInfo,
    close,
    describe_os_error,
    open_source,
    send_title,
    wait_eof,
)

if TYPE_CHECKING:
    from deskcast.http.nowplaying import Track
    from deskcast.http.server import Server

__all__ = ["IcecastPush", "IcecastRelay", "IcecastTarget", "explain_refusal",
           "format_for_mount"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
"""TCP connect plus Icecast's answer to the request headers."""
WRITE_STALL_S = 10.0
"""A write that cannot drain for this long means Icecast is stuck: reconnect."""
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
"""Retry delays double from 1 s to at most 30 s; a connection that stayed up resets them."""
STABLE_AFTER_S = 10.0
"""A connection that lasted this long counts as healthy: the next retry starts at 1 s again."""
DEFAULT_QUEUE_S = 2.0
"""Audio held while Icecast is slow or away; older chunks are dropped."""

ChunkSource = AsyncIterator[bytes] | Callable[[], AsyncIterator[bytes]]
"""What :meth:`IcecastPush.run` takes: one iterator for the whole run, or a function that opens
a fresh iterator per connection (needed for Ogg, whose header pages must start each one)."""


@dataclass
class _Stats:
    bytes_sent: int = 0
    chunks_sent: int = 0
    connects: int = 0
    reconnects: int = 0
    attempts: int = 0
    connected_since: float | None = None


class IcecastPush:
    """Pushes an encoded stream to one Icecast mount, reconnecting forever.

    ``run()`` consumes the stream until it ends or the task is cancelled. The consumer side never
    waits for the network: chunks wait in a queue of at most ``queue_bytes`` (default
    :data:`DEFAULT_QUEUE_S` of audio), the oldest dropped when it is full. Chunks should be
    whole frames or pages, so that dropping keeps the stream decodable.
    """

    def __init__(self, url: str, *, content_type: str = "audio/mpeg", name: str = "deskcast",
                 description: str = "", genre: str = "", bitrate_kbps: float | None = None,
                 sample_rate: int | None = None, channels: int | None = None,
                 public: bool = False, queue_bytes: int | None = None,
                 backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 write_stall_s: float = WRITE_STALL_S,
                 stable_after_s: float = STABLE_AFTER_S) -> None:
        self.target = IcecastTarget.parse(url)
        self.content_type = CONTENT_TYPES.get(content_type.lower(), content_type)
        self.info = StreamInfo(self.content_type, name, description, genre, bitrate_kbps,
                               sample_rate, channels, public)
        if queue_bytes is None:
            queue_bytes = int((bitrate_kbps or 320) * 1000 / 8 * DEFAULT_QUEUE_S)
        self._queue = DropOldest(queue_bytes)
        self.backoff = backoff or Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S)
        self._sleep = sleep
        self.connect_timeout_s = connect_timeout_s
        self.write_stall_s = write_stall_s
        self.stable_after_s = stable_after_s
        self.state = "idle"
        self.last_error = ""
        self.title = ""
        self._stats = _Stats()
        self._session: aiohttp.ClientSession | None = None
        self._last_message = ""

    @property
    def queue_bytes(self) -> int:
        return self._queue.limit_bytes

    # -- public ----------------------------------------------------------------------------
    async def run(self, chunks: ChunkSource) -> None:
        """Push ``chunks`` to Icecast, reconnecting as needed.

        A plain iterator is read for the whole run, also while Icecast is away; when it ends the
        source disconnects and ``run`` returns. A function returning a new iterator is called for
        every connection (Ogg: its header pages must open each one), its iterator closed when
        the connection ends; if it ends by itself, the connection is renewed with a fresh one,
        so ``run`` goes on until it is cancelled.
        """
        done = asyncio.Event()
        feeding: asyncio.Task[None] | None = None
        if not callable(chunks):
            feeding = asyncio.create_task(self._feed_all(chunks, done), name="icecast-pump")
        error: BaseException | None = None
        self._session = aiohttp.ClientSession()  # for the title updates
        try:
            await self._connection_loop(done, chunks if callable(chunks) else None)
        finally:
            if feeding is not None:
                error = await _stop_task(feeding)
            self._set_state("stopped")
            session, self._session = self._session, None
            await session.close()
        if error is not None:
            raise error  # the stream handed to run() failed: a bug, not a network problem

    def feed(self, chunk: bytes) -> None:
        """Queue one chunk (never blocks; drops the oldest when the queue is full)."""
        if chunk:
            self._queue.put(chunk)

    async def set_title(self, title: str) -> bool:
        """Set the stream title ("Artist - Title") shown by Icecast and its listeners' players.

        Sent at once if connected, and again after every reconnect. Icecast takes titles this way
        for MP3 (and AAC) mounts; an Ogg stream carries its titles in-stream. Returns whether
        Icecast accepted it now; failures are logged, never raised.
        """
        self.title = title
        if self.content_type == "audio/ogg":
            logger.debug("icecast: %s is Ogg; Icecast takes its title from the stream itself",
                         self.target.mount)
            return False
        if self._stats.connected_since is None or self._session is None:
            return False
        return await send_title(self._session, self.target, title, self.connect_timeout_s)

    def status(self) -> dict[str, Any]:
        """For ``/api/status`` and ``/metrics`` (no password in it).

        ``state``: idle, connecting, connected, retrying or stopped; ``reconnects``: successful
        connections after the first; ``attempts``: every try; ``dropped_*``: audio that never
        reached Icecast because it was slow or away; ``last_error``: why the last try failed
        ("" while connected)."""
        s = self._stats
        up = (time.monotonic() - s.connected_since) if s.connected_since is not None else 0.0
        return {
            "url": f"icecast://{self.target.where}",
            "state": self.state,
            "connected_s": round(up, 1),
            "bytes_sent": s.bytes_sent,
            "connects": s.connects,
            "reconnects": s.reconnects,
            "attempts": s.attempts,
            "dropped_chunks": self._queue.dropped_chunks,
            "dropped_bytes": self._queue.dropped_bytes,
            "queued_bytes": self._queue.bytes,
            "last_error": self.last_error,
            "title": self.title,
        }

    # -- connection handling ---------------------------------------------------------------
    async def _connection_loop(self, done: asyncio.Event,
                               open_chunks: Callable[[], AsyncIterator[bytes]] | None) -> None:
        ever_connected = False
        while True:
            if done.is_set() and not self._queue:
                return
            self._stats.attempts += 1
            self._set_state("connecting")
            try:
                reader, writer = await open_source(self.target,
                                                   self.info.request_head(self.target),
                                                   self.connect_timeout_s)
            except SourceRefused as err:
                self._fail(str(err))
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as err:
                self._fail(describe_os_error(err, self.target, self.connect_timeout_s))
            else:
                if ever_connected:
                    self._stats.reconnects += 1
                ever_connected = True
                self._stats.connects += 1
                started = time.monotonic()
                if await self._stream(reader, writer, done, open_chunks):
                    return
                if time.monotonic() - started >= self.stable_after_s:
                    self.backoff.reset()
            if done.is_set():  # the stream ended while Icecast was away: nothing to wait for
                self._queue.clear(dropped=True)
                return
            delay = self.backoff.next()
            self._log(logging.WARNING, f"icecast: {self.last_error} — retrying in {delay:g} s",
                      key=self.last_error)
            await self._sleep(delay)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      done: asyncio.Event,
                      open_chunks: Callable[[], AsyncIterator[bytes]] | None) -> bool:
        """Write queued chunks until the connection fails (False) or the stream ends (True)."""
        self._stats.connected_since = time.monotonic()
        self._set_state("connected")
        title_task = (asyncio.create_task(self.set_title(self.title))
                      if self.title and self.content_type != "audio/ogg" else None)
        feeding: asyncio.Task[None] | None = None
        if open_chunks is not None:
            self._queue.clear()
            feeding = asyncio.create_task(self._feed_all(open_chunks(), None))
        watch = asyncio.create_task(wait_eof(reader))
        try:
            while True:
                if not self._queue:
                    if done.is_set():
                        return True
                    if feeding is not None and feeding.done():
                        feeding.result()  # an error opening the stream is a bug: raise it
                        self._fail("the stream to push ended (did it fall too far behind?); "
                                   "opening it again")
                        return False
                    if not await self._wait_for_chunks(watch):
                        self._fail("connection lost (Icecast closed it; was the source kicked "
                                   "or the server restarted?)")
                        return False
                    continue
                chunk = self._queue.get()
                writer.write(chunk)
                try:
                    async with asyncio.timeout(self.write_stall_s):
                        await writer.drain()
                except TimeoutError:
                    self._fail(f"Icecast took no data for {self.write_stall_s:.0f} s; "
                               "reconnecting")
                    return False
                except OSError as err:
                    self._fail(describe_os_error(err, self.target, self.connect_timeout_s))
                    return False
                self._stats.bytes_sent += len(chunk)
                self._stats.chunks_sent += 1
        finally:
            self._stats.connected_since = None
            for task in (watch, title_task, feeding):
                if task is not None:
                    await _stop_task(task)
            await close(writer)

    async def _wait_for_chunks(self, watch: asyncio.Task[None]) -> bool:
        """Wait for a chunk (True) or the connection's end (False)."""
        self._queue.wakeup.clear()
        waiter = asyncio.create_task(self._queue.wakeup.wait())
        try:
            finished, _ = await asyncio.wait({waiter, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _stop_task(waiter)
        return watch not in finished

    async def _feed_all(self, chunks: AsyncIterator[bytes], done: asyncio.Event | None) -> None:
        """Queue every chunk of ``chunks``; at its end set ``done`` or, for a per-connection
        iterator (``done`` None), close it."""
        try:
            async for chunk in chunks:
                self.feed(chunk)
        finally:
            if done is not None:
                done.set()
            self._queue.wakeup.set()
            close_it = getattr(chunks, "aclose", None)
            if done is None and close_it is not None:
                with contextlib.suppress(Exception):
                    await close_it()

    # -- logging ---------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "connected":
            self.last_error = ""
            self._log(logging.INFO, f"icecast: connected to {self.target.where}")
        elif state == "stopped" and self._stats.attempts:
            self._log(logging.INFO, f"icecast: stopped pushing to {self.target.where}")

    def _fail(self, message: str) -> None:
        self.state = "retrying"
        self.last_error = message

    def _log(self, level: int, message: str, key: str | None = None) -> None:
        """Log a state change once; the same failure again is only logged at debug level."""
        key = key if key is not None else message
        if key == self._last_message:
            logger.debug("%s", message)
            return
        self._last_message = key
        logger.log(level, "%s", message)


class IcecastRelay:
    """An :class:`IcecastPush` as one of serve's relays: it pushes ``fmt``, a fresh
    subscription per connection (Ogg starts with its headers), and passes titles on."""

    name = "icecast"

    def __init__(self, push: IcecastPush, fmt: str) -> None:
        self.push = push
        self.fmt = fmt

    def status(self) -> dict[str, Any]:
        return self.push.status()

    async def relay(self, server: Server, stopping: asyncio.Event) -> None:
        titles: set[asyncio.Task[Any]] = set()

        def on_track(track: Track) -> None:
            task = asyncio.ensure_future(self.push.set_title(track.text))
            titles.add(task)
            task.add_done_callback(titles.discard)

        unwatch = server.on_now_playing(on_track)
        try:
            await self.push.run(lambda: server.subscribe(self.fmt))
        finally:
            unwatch()
            for task in list(titles):
                await _stop_task(task)


async def _stop_task(task: asyncio.Task[Any]) -> BaseException | None:
    """Cancel ``task``, wait for it and return its exception (None if none or cancelled).

    Unlike ``with suppress(CancelledError): await task`` this never swallows a cancellation
    of the task that calls it."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.exception()
