"""The wire of an Icecast source: the request head of the long ``PUT`` (written by hand over
asyncio streams: an HTTP client library expects a body that ends and an answer after it, while
Icecast answers right after the headers and the body never ends), reading Icecast's answer,
and the title update (an ordinary GET, through :class:`aiohttp.ClientSession`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from dataclasses import dataclass

import aiohttp

from deskcast import __version__
from deskcast.http.relay.icecast_target import IcecastTarget, SourceRefused, explain_refusal

logger = logging.getLogger(__name__)

USER_AGENT = f"deskcast/{__version__}"


@dataclass(frozen=True)
class StreamInfo:
    """What the source tells Icecast about its stream (``Ice-*`` headers)."""

    content_type: str
    name: str
    description: str = ""
    genre: str = ""
    bitrate_kbps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    public: bool = False

    def request_head(self, t: IcecastTarget) -> bytes:
        headers = [
            f"PUT {urllib.parse.quote(t.mount)} HTTP/1.1",
            f"Host: {t.host_port}",
            f"Authorization: {t.authorization()}",
            f"User-Agent: {USER_AGENT}",
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


async def open_source(t: IcecastTarget, head: bytes, timeout_s: float
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, send ``head`` and wait for Icecast's 200; raises SourceRefused, TimeoutError,
    OSError or IncompleteReadError."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(t.host, t.port)
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(head)
            await writer.drain()
            status, reason, body = await _read_answer(reader)
        if status != 200:
            raise SourceRefused(explain_refusal(status, reason, body, t.mount), status)
    except BaseException:
        await close(writer)
        raise
    return reader, writer


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


async def send_title(session: aiohttp.ClientSession, t: IcecastTarget, title: str,
                     timeout_s: float) -> bool:
    """Set the mount's title (Icecast's ``/admin/metadata?mode=updinfo``); failures are
    logged, never raised. Returns whether Icecast took it."""
    query = urllib.parse.urlencode({"mode": "updinfo", "mount": t.mount, "song": title,
                                    "charset": "UTF-8"})
    timeout = aiohttp.ClientTimeout(connect=timeout_s, sock_read=timeout_s)
    try:
        async with session.get(f"http://{t.host_port}/admin/metadata?{query}", timeout=timeout,
                               headers={"Authorization": t.authorization(),
                                        "User-Agent": USER_AGENT}) as resp:
            status = resp.status
            body = "" if status == 200 else \
                (await resp.content.read(1024)).decode("utf-8", errors="replace")
    except (TimeoutError, OSError, aiohttp.ClientError) as err:
        logger.warning("icecast: could not set the title on %s (%s); it is sent again on "
                       "the next change or reconnect", t.where, err)
        return False
    if status != 200:
        logger.warning("icecast: title update on %s refused (%d%s); check the source "
                       "password", t.where, status, f": {body.strip()[:100]}" if body else "")
        return False
    logger.debug("icecast: title on %s is now %r", t.where, title)
    return True


def describe_os_error(err: BaseException, t: IcecastTarget, timeout_s: float) -> str:
    """One line for a failure to reach Icecast or a lost connection."""
    where = f"{t.host}:{t.port}"
    if isinstance(err, asyncio.TimeoutError):
        return f"no answer from {where} within {timeout_s:.0f} s"
    if isinstance(err, ConnectionRefusedError):
        return f"cannot connect to {where} (connection refused: is Icecast running there?)"
    if isinstance(err, asyncio.IncompleteReadError):
        return f"{where} closed the connection before answering (is it Icecast?)"
    if isinstance(err, (ConnectionResetError, BrokenPipeError)):
        return f"connection to {where} lost ({err.strerror or type(err).__name__})"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot reach {where} ({err.strerror})"
    return f"cannot reach {where} ({err})"


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a connection without waiting long for a peer that does not read (then abort)."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass


async def wait_eof(reader: asyncio.StreamReader) -> None:
    """Returns when the peer closes (Icecast never sends anything after its 200 answer)."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass


def _header_text(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())[:200]
