"""Push an already-encoded stream to an Icecast server as a source (``serve --icecast URL``).

Icecast then fans the stream out to as many listeners (and relays) as it can hold, so one
deskcast can feed thousands. The source connection is one long HTTP ``PUT`` (Icecast >= 2.4)
whose body is the stream itself and never ends, written here by hand over asyncio streams (an
HTTP client library expects a body that ends and a response after it; Icecast answers right
after the headers).

:class:`IcecastPush` never blocks the code that feeds it: chunks go through a bounded queue and,
when Icecast cannot keep up (or is unreachable), the oldest are dropped and counted. A lost or
refused connection is retried with backoff, forever, with one log line per change of state.

URL: ``icecast://[USER:]PASSWORD@HOST[:PORT]/MOUNT`` (``http://`` is accepted as a synonym;
user defaults to ``source``, port to 8000).

Wiring into ``serve`` (a fresh ``Server.subscribe`` per connection, so an Ogg stream starts
every connection with its header pages)::

    fmt, ctype = format_for_mount(IcecastTarget.parse(url).mount)
    push = IcecastPush(url, content_type=ctype, name=stream_name,
                       bitrate_kbps=server.bitrates[fmt], sample_rate=rate, channels=channels)
    tasks.append(lambda stop: push.run(lambda: server.subscribe(fmt)))
    server.on_now_playing(lambda track: asyncio.ensure_future(push.set_title(TITLE)))
    # push.status() -> /api/status and /metrics
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from deskcast import __version__
from deskcast.backoff import Backoff
from deskcast.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8000
"""Icecast's stock port."""
DEFAULT_USER = "source"
"""Icecast's source user name (only ``source`` works unless a mount has its own)."""
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

CONTENT_TYPES = {"mp3": "audio/mpeg", "mpeg": "audio/mpeg", "ogg": "audio/ogg",
                 "opus": "audio/ogg", "aac": "audio/aac"}

ChunkSource = AsyncIterator[bytes] | Callable[[], AsyncIterator[bytes]]
"""What :meth:`IcecastPush.run` takes: one iterator for the whole run, or a function that opens
a fresh iterator per connection (needed for Ogg, whose header pages must start each one)."""


@dataclass(frozen=True)
class IcecastTarget:
    """Where and as whom to push: parsed from an ``icecast://`` or ``http://`` URL."""

    host: str
    port: int
    mount: str
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> IcecastTarget:
        """Parse ``icecast://[USER:]PASSWORD@HOST[:PORT]/MOUNT``; ConfigError says what's wrong."""
        example = "icecast://source:PASSWORD@HOST:8000/stream.mp3"
        parts = urllib.parse.urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme == "https":
            raise ConfigError(f"Icecast URL {_redact(url)}: TLS (https) is not supported; use "
                              f"http:// or icecast:// (e.g. {example}) through a local Icecast "
                              "or a TLS tunnel")
        if scheme not in ("icecast", "http"):
            raise ConfigError(f"Icecast URL {_redact(url)!r} must start with icecast:// or "
                              f"http://, e.g. {example}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"Icecast URL {_redact(url)}: the port must be a number "
                              f"1-65535, e.g. {example}") from None
        host = parts.hostname or ""
        if not host:
            raise ConfigError(f"Icecast URL {_redact(url)} names no host, e.g. {example}")
        mount = urllib.parse.unquote(parts.path)
        if not mount or mount == "/":
            raise ConfigError(f"Icecast URL {_redact(url)} names no mount point: add one "
                              f"after the host, e.g. {example}")
        if parts.query or parts.fragment:
            raise ConfigError(f"Icecast URL {_redact(url)}: a mount point cannot have ?query "
                              "or #fragment; remove it")
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        if parts.password is None:  # icecast://PASSWORD@host/mount: the user part is the password
            user, password = DEFAULT_USER, user
        if not password:
            raise ConfigError(f"Icecast URL {_redact(url)} has no source password: put it "
                              f"before the host, e.g. {example}")
        return cls(host=host, port=port or DEFAULT_PORT, mount=mount, user=user or DEFAULT_USER,
                   password=password)

    @property
    def where(self) -> str:
        """``host:port/mount`` for log lines (no password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{self.mount}"

    def authorization(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def format_for_mount(mount: str) -> tuple[str, str]:
    """(serve format, Content-Type) a mount's name asks for: ``.ogg``/``.opus`` -> Ogg/Opus,
    anything else (``.mp3``, no extension) -> MP3."""
    name = mount.rsplit("/", 1)[-1].lower()
    if name.endswith((".ogg", ".opus", ".oga")):
        return "opus", "audio/ogg"
    return "mp3", "audio/mpeg"


def _redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.password is not None else f"***@{host}"
    with contextlib.suppress(ValueError):
        if parts.port:
            netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class SourceRefused(Exception):  # noqa: N818 - it is a state, not a bug
    """Icecast answered the source request with an error; ``str()`` is the log message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def explain_refusal(status: int, reason: str, body: str, mount: str) -> str:
    """One line for an Icecast answer other than 200 to a source ``PUT``."""
    text = body.strip().splitlines()[0][:200] if body.strip() else reason
    low = text.lower()
    if status == 401:
        return ("refused (401: wrong source password? check the password in the --icecast URL "
                "against <source-password> in icecast.xml)")
    if status == 403 and "in use" in low:
        return (f"mount {mount} is already in use by another source: stop it or choose "
                "another mount")
    if status == 403 and "content-type" in low:
        return f"refused (403: Icecast does not take this stream type: {text})"
    if status == 403 and "too many" in low:
        return f"refused (403: {text}; raise <sources> in icecast.xml)"
    if status == 405:
        return ("refused (405: this server does not take HTTP PUT sources; Icecast 2.4 or "
                "newer is needed)")
    return f"refused ({status}: {text})"


@dataclass
class _Stats:
    bytes_sent: int = 0
    chunks_sent: int = 0
    connects: int = 0
    reconnects: int = 0
    attempts: int = 0
    dropped_chunks: int = 0
    dropped_bytes: int = 0
    connected_since: float | None = None


class IcecastPush:
    """Pushes an encoded stream to one Icecast mount, reconnecting forever.

    ``run()`` consumes the stream until it ends or the task is cancelled. The consumer side never
    waits for the network: chunks wait in a queue of at most ``queue_bytes`` (default
    :data:`DEFAULT_QUEUE_S` of audio), the oldest dropped when it is full. Chunks should be
    whole frames or pages, so that dropping keeps the stream decodable.
    """

    def __init__(
        self,
        url: str,
        *,
        content_type: str = "audio/mpeg",
        name: str = "deskcast",
        description: str = "",
        genre: str = "",
        bitrate_kbps: float | None = None,
        sample_rate: int | None = None,
        channels: int | None = None,
        public: bool = False,
        queue_bytes: int | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        write_stall_s: float = WRITE_STALL_S,
        stable_after_s: float = STABLE_AFTER_S,
    ) -> None:
        self.target = IcecastTarget.parse(url)
        self.content_type = CONTENT_TYPES.get(content_type.lower(), content_type)
        self.name = name
        self.description = description
        self.genre = genre
        self.bitrate_kbps = bitrate_kbps
        self.sample_rate = sample_rate
        self.channels = channels
        self.public = public
        if queue_bytes is None:
            kbps = bitrate_kbps or 320
            queue_bytes = int(kbps * 1000 / 8 * DEFAULT_QUEUE_S)
        self.queue_bytes = max(1, queue_bytes)
        self.backoff = backoff or Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S)
        self._sleep = sleep
        self.connect_timeout_s = connect_timeout_s
        self.write_stall_s = write_stall_s
        self.stable_after_s = stable_after_s
        self.state = "idle"
        self.last_error = ""
        self.title = ""
        self._stats = _Stats()
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._online = False
        self._last_message = ""

    # -- public ----------------------------------------------------------------------------
    async def run(self, chunks: ChunkSource) -> None:
        """Push ``chunks`` to Icecast, reconnecting as needed.

        A plain iterator is read for the whole run, also while Icecast is away; when it ends the
        source disconnects and ``run`` returns. A function returning a new iterator is called for
        every connection (Ogg: its header pages must open each one), its iterator closed when
        the connection ends; if it ends by itself, the connection is renewed with a fresh one,
        so ``run`` goes on until it is cancelled.
        """
        if callable(chunks):
            await self._run_per_connection(chunks)
        else:
            await self._run_shared(chunks)

    def feed(self, chunk: bytes) -> None:
        """Queue one chunk (never blocks; drops the oldest when the queue is full)."""
        if not chunk:
            return
        self._queue.append(chunk)
        self._queued_bytes += len(chunk)
        while self._queued_bytes > self.queue_bytes and len(self._queue) > 1:
            old = self._queue.popleft()
            self._queued_bytes -= len(old)
            self._stats.dropped_chunks += 1
            self._stats.dropped_bytes += len(old)
        self._wakeup.set()

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
        if not self._online:
            return False
        return await self._send_title(title)

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
            "dropped_chunks": s.dropped_chunks,
            "dropped_bytes": s.dropped_bytes,
            "queued_bytes": self._queued_bytes,
            "last_error": self.last_error,
            "title": self.title,
        }

    # -- the two feeding modes -------------------------------------------------------------
    async def _run_shared(self, chunks: AsyncIterator[bytes]) -> None:
        done = asyncio.Event()

        async def pump() -> None:
            try:
                async for chunk in chunks:
                    self.feed(chunk)
            finally:
                done.set()
                self._wakeup.set()

        pump_task = asyncio.create_task(pump(), name="icecast-pump")
        try:
            await self._connection_loop(done)
        finally:
            error = await _stop_task(pump_task)
            self._set_state("stopped", "")
        if error is not None:
            raise error  # the stream handed to run() failed: a bug, not a network problem

    async def _run_per_connection(self, open_chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        done = asyncio.Event()
        try:
            await self._connection_loop(done, open_chunks)
        finally:
            self._set_state("stopped", "")

    # -- connection handling ---------------------------------------------------------------
    async def _connection_loop(
        self, done: asyncio.Event,
        open_chunks: Callable[[], AsyncIterator[bytes]] | None = None,
    ) -> None:
        ever_connected = False
        while True:
            if done.is_set() and not self._queue:
                return
            self._stats.attempts += 1
            self._set_state("connecting", "")
            try:
                reader, writer = await self._connect()
            except SourceRefused as err:
                self._fail(str(err))
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as err:
                self._fail(self._describe_os_error(err))
            else:
                if ever_connected:
                    self._stats.reconnects += 1
                ever_connected = True
                self._stats.connects += 1
                started = time.monotonic()
                ended = await self._stream(reader, writer, done, open_chunks)
                if ended:
                    return
                if time.monotonic() - started >= self.stable_after_s:
                    self.backoff.reset()
            if done.is_set():  # the stream ended while Icecast was away: nothing to wait for
                self._stats.dropped_chunks += len(self._queue)
                self._stats.dropped_bytes += self._queued_bytes
                self._clear_queue()
                return
            delay = self.backoff.next()
            self._log_retry(delay)
            await self._sleep(delay)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.target
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(t.host, t.port)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                writer.write(self._request_head())
                await writer.drain()
                status, reason, body = await self._read_answer(reader)
            if status != 200:
                raise SourceRefused(explain_refusal(status, reason, body, t.mount), status)
        except BaseException:
            await _close(writer)
            raise
        return reader, writer

    def _request_head(self) -> bytes:
        t = self.target
        host = f"[{t.host}]" if ":" in t.host else t.host
        headers = [
            f"PUT {urllib.parse.quote(t.mount)} HTTP/1.1",
            f"Host: {host}:{t.port}",
            f"Authorization: {t.authorization()}",
            f"User-Agent: deskcast/{__version__}",
            f"Content-Type: {self.content_type}",
            f"Ice-Public: {1 if self.public else 0}",
            f"Ice-Name: {_header_text(self.name)}",
        ]
        if self.description:
            headers.append(f"Ice-Description: {_header_text(self.description)}")
        if self.genre:
            headers.append(f"Ice-Genre: {_header_text(self.genre)}")
        info = []
        if self.bitrate_kbps:
            headers.append(f"Ice-Bitrate: {round(self.bitrate_kbps)}")
            info.append(f"ice-bitrate={round(self.bitrate_kbps)}")
        if self.channels:
            info.append(f"ice-channels={self.channels}")
        if self.sample_rate:
            info.append(f"ice-samplerate={self.sample_rate}")
        if info:
            headers.append(f"Ice-Audio-Info: {';'.join(info)}")
        return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1", errors="replace")

    @staticmethod
    async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, str, str]:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = lines[0].split(" ", 2)
            if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
                raise SourceRefused(f"refused (not an Icecast answer: {lines[0][:80]!r}; "
                                    "is this URL an Icecast server?)", 0)
            status = int(fields[1])
            reason = fields[2] if len(fields) > 2 else ""
            if status == 100:
                continue
            body = b""
            if status != 200:
                with contextlib.suppress(asyncio.TimeoutError, OSError):
                    async with asyncio.timeout(1.0):
                        body = await reader.read(1024)
            return status, reason, body.decode("utf-8", errors="replace")

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, done: asyncio.Event,
        open_chunks: Callable[[], AsyncIterator[bytes]] | None,
    ) -> bool:
        """Write queued chunks until the connection fails (False) or the stream ends (True)."""
        self._online = True
        self._stats.connected_since = time.monotonic()
        self._set_state("connected", "")
        title_task = (asyncio.create_task(self._send_title(self.title))
                      if self.title and self.content_type != "audio/ogg" else None)
        pump_task: asyncio.Task[None] | None = None
        if open_chunks is not None:
            self._clear_queue()
            pump_task = asyncio.create_task(self._pump_fresh(open_chunks()))
        watch = asyncio.create_task(_wait_eof(reader))
        try:
            while True:
                if not self._queue:
                    if done.is_set():
                        return True
                    if pump_task is not None and pump_task.done():
                        pump_task.result()  # an error opening the stream is a bug: raise it
                        self._fail("the stream to push ended (did it fall too far behind?); "
                                   "opening it again")
                        return False
                    self._wakeup.clear()
                    waiter = asyncio.create_task(self._wakeup.wait())
                    try:
                        finished, _ = await asyncio.wait({waiter, watch},
                                                         return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        await _stop_task(waiter)
                    if watch in finished:
                        self._fail("connection lost (Icecast closed it; was the source kicked "
                                   "or the server restarted?)")
                        return False
                    continue
                chunk = self._queue.popleft()
                self._queued_bytes -= len(chunk)
                writer.write(chunk)
                try:
                    async with asyncio.timeout(self.write_stall_s):
                        await writer.drain()
                except TimeoutError:
                    self._fail(f"Icecast took no data for {self.write_stall_s:.0f} s; "
                               "reconnecting")
                    return False
                except OSError as err:
                    self._fail(self._describe_os_error(err))
                    return False
                self._stats.bytes_sent += len(chunk)
                self._stats.chunks_sent += 1
        finally:
            self._online = False
            self._stats.connected_since = None
            for task in (watch, title_task, pump_task):
                if task is not None:
                    await _stop_task(task)
            await _close(writer)

    async def _pump_fresh(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                self.feed(chunk)
        finally:
            self._wakeup.set()
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def _clear_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0

    async def _send_title(self, title: str) -> bool:
        t = self.target
        query = urllib.parse.urlencode({"mode": "updinfo", "mount": t.mount, "song": title,
                                        "charset": "UTF-8"})
        host = f"[{t.host}]" if ":" in t.host else t.host
        request = (f"GET /admin/metadata?{query} HTTP/1.0\r\nHost: {host}:{t.port}\r\n"
                   f"Authorization: {t.authorization()}\r\n"
                   f"User-Agent: deskcast/{__version__}\r\n\r\n").encode("ascii")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(t.host, t.port)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    writer.write(request)
                    status, _, body = await self._read_answer(reader)
            finally:
                await _close(writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, SourceRefused) as err:
            logger.warning("icecast: could not set the title on %s (%s); it is sent again on "
                           "the next change or reconnect", t.where, err)
            return False
        if status != 200:
            logger.warning("icecast: title update on %s refused (%d%s); check the source "
                           "password", t.where, status, f": {body.strip()[:100]}" if body else "")
            return False
        logger.debug("icecast: title on %s is now %r", t.where, title)
        return True

    # -- logging ---------------------------------------------------------------------------
    def _set_state(self, state: str, error: str) -> None:
        if state == self.state and not error:
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

    def _log_retry(self, delay: float) -> None:
        self._log(logging.WARNING, f"icecast: {self.last_error} — retrying in {delay:g} s",
                  key=self.last_error)

    def _log(self, level: int, message: str, key: str | None = None) -> None:
        """Log a state change once; the same failure again is only logged at debug level."""
        key = key if key is not None else message
        if key == self._last_message:
            logger.debug("%s", message)
            return
        self._last_message = key
        logger.log(level, "%s", message)

    def _describe_os_error(self, err: BaseException) -> str:
        where = f"{self.target.host}:{self.target.port}"
        if isinstance(err, asyncio.TimeoutError):
            return f"no answer from {where} within {self.connect_timeout_s:.0f} s"
        if isinstance(err, ConnectionRefusedError):
            return f"cannot connect to {where} (connection refused: is Icecast running there?)"
        if isinstance(err, asyncio.IncompleteReadError):
            return f"{where} closed the connection before answering (is it Icecast?)"
        if isinstance(err, (ConnectionResetError, BrokenPipeError)):
            return f"connection to {where} lost ({err.strerror or type(err).__name__})"
        if isinstance(err, OSError) and err.strerror:
            return f"cannot reach {where} ({err.strerror})"
        return f"cannot reach {where} ({err})"


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


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection without waiting long for a peer that does not read (then abort)."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    """Returns when the peer closes (Icecast never sends anything after its 200 answer)."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass


def _header_text(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())[:200]
