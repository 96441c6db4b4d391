"""IcecastPush without Icecast: URL parsing, refusals, the queue, and the wire protocol
against a scripted fake server on loopback (the real icecast2 is in tests/integration)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from deskcast.backoff import Backoff
from deskcast.errors import ConfigError
from deskcast.http.relay.icecast import (
    IcecastPush,
    IcecastTarget,
    explain_refusal,
    format_for_mount,
)

# -- URL parsing -------------------------------------------------------------------------------


def test_parse_icecast_url() -> None:
    t = IcecastTarget.parse("icecast://source:hackme@radio.example:8001/live.mp3")
    assert (t.host, t.port, t.mount, t.user, t.password) == (
        "radio.example", 8001, "/live.mp3", "source", "hackme")
    assert t.where == "radio.example:8001/live.mp3"
    assert t.authorization() == "Basic " + base64.b64encode(b"source:hackme").decode()


def test_parse_http_url_defaults_and_escapes() -> None:
    t = IcecastTarget.parse("http://pa%40ss%3Aword@127.0.0.1/a%20b.ogg")
    assert (t.user, t.password, t.port, t.mount) == ("source", "pa@ss:word", 8000, "/a b.ogg")
    t6 = IcecastTarget.parse("icecast://me:pw@[::1]:9000/m")
    assert (t6.host, t6.user, t6.where) == ("::1", "me", "[::1]:9000/m")


@pytest.mark.parametrize(("url", "says"), [
    ("https://source:pw@h/m", "TLS"),
    ("rtmp://source:pw@h/m", "must start with icecast:// or http://"),
    ("icecast://source:pw@h:port/m", "port must be a number"),
    ("icecast://source:pw@/m", "names no host"),
    ("icecast://source:pw@h", "names no mount point"),
    ("icecast://source:pw@h/", "names no mount point"),
    ("icecast://h:8000/m", "no source password"),
    ("icecast://source:@h/m", "no source password"),
    ("icecast://source:pw@h/m?x=1", "?query"),
])
def test_bad_urls_say_what_to_do_and_hide_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        IcecastTarget.parse(url)
    message = str(err.value)
    assert says in message
    # What to do: an example of a right URL, or what to take out.
    assert "e.g. icecast://source:PASSWORD@HOST:8000/stream.mp3" in message or \
        message.endswith("; remove it")
    assert ":pw@" not in message and "\n" not in message


def test_the_mount_name_picks_the_format() -> None:
    assert format_for_mount("/live.mp3") == ("mp3", "audio/mpeg")
    assert format_for_mount("/live") == ("mp3", "audio/mpeg")
    assert format_for_mount("/Radio.OGG") == ("opus", "audio/ogg")
    assert format_for_mount("/x.opus") == ("opus", "audio/ogg")


# -- messages ----------------------------------------------------------------------


def test_refusals_are_explained() -> None:
    assert explain_refusal(401, "Authentication Required", "You need to authenticate",
                           "/m").startswith("refused (401: wrong source password?")
    assert explain_refusal(403, "Forbidden", "Mountpoint in use", "/m").startswith(
        "mount /m is already in use by another source")
    assert "Icecast 2.4 or newer" in explain_refusal(405, "Method Not Allowed", "", "/m")
    assert "raise <sources>" in explain_refusal(403, "Forbidden", "too many sources connected",
                                                "/m")
    assert explain_refusal(500, "Internal Server Error", "", "/m") == (
        "refused (500: Internal Server Error)")


def test_queue_drops_the_oldest_and_counts() -> None:
    push = IcecastPush("icecast://source:pw@h/m", queue_bytes=10)
    for i in range(6):
        push.feed(bytes([i]) * 4)
    s = push.status()
    assert s["queued_bytes"] == 8 and s["dropped_chunks"] == 4 and s["dropped_bytes"] == 16
    assert list(push._queue) == [b"\x04" * 4, b"\x05" * 4]
    push.feed(b"x" * 50)  # one chunk bigger than the queue is still kept whole
    assert list(push._queue) == [b"x" * 50]
    assert "pw" not in str(push.status())


def test_default_queue_holds_two_seconds_of_the_bitrate() -> None:
    assert IcecastPush("icecast://source:pw@h/m", bitrate_kbps=128).queue_bytes == 32000


# -- the wire, against a scripted fake server --------------------------------------------------


@dataclass
class FakeIcecast:
    """Answers each source connection with the next scripted answer; records what it got.

    An answer of ``None`` means "200 OK, then read the stream until the client leaves";
    ``"close-after:N"`` accepts, reads N bytes, then hangs up (a crash or a kick).
    """

    answers: list[str | None]
    requests: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> FakeIcecast:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            if head.startswith("GET /admin/metadata"):
                self.admin.append(head)
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n<iceresponse/>")
                await writer.drain()
                return
            self.requests.append(head)
            answer = self.answers.pop(0) if self.answers else None
            body = bytearray()
            self.bodies.append(b"")
            if answer is not None and not answer.startswith("close-after:"):
                writer.write(answer.encode("latin-1"))
                await writer.drain()
                return
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
            await writer.drain()
            limit = int(answer.split(":")[1]) if answer else 1 << 62
            while len(body) < limit:
                data = await reader.read(4096)
                if not data:
                    break
                body += data
                self.bodies[-1] = bytes(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Sleeps:
    """A sleep that records the delays and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0.01)


async def chunks(n: int, size: int = 100, every_s: float = 0.005,
                 tag: bytes = b"") -> AsyncIterator[bytes]:
    if tag:
        yield tag
    for i in range(n):
        yield bytes([i % 256]) * size
        await asyncio.sleep(every_s)


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_source_request_headers_and_body() -> None:
    async def scenario() -> FakeIcecast:
        fake = await FakeIcecast([None]).start()
        push = IcecastPush(f"icecast://source:s3cret@127.0.0.1:{fake.port}/live.mp3",
                           content_type="mp3", name="My\r\nRadio", description="desk",
                           bitrate_kbps=128, sample_rate=48000, channels=2)
        await asyncio.wait_for(push.run(chunks(20)), 10)  # ends with its stream
        await until(lambda: len(fake.bodies[0]) == 2000)
        await fake.close()
        assert push.status()["state"] == "stopped" and push.status()["bytes_sent"] == 2000
        return fake

    fake = asyncio.run(scenario())
    lines = fake.requests[0].split("\r\n")
    assert lines[0] == "PUT /live.mp3 HTTP/1.1"
    assert "Content-Type: audio/mpeg" in lines
    assert "Ice-Public: 0" in lines
    assert "Ice-Name: My Radio" in lines  # no header injection
    assert "Ice-Description: desk" in lines
    assert "Ice-Bitrate: 128" in lines
    assert "Ice-Audio-Info: ice-bitrate=128;ice-channels=2;ice-samplerate=48000" in lines
    assert f"Authorization: Basic {base64.b64encode(b'source:s3cret').decode()}" in lines
    assert fake.bodies[0] == b"".join(bytes([i]) * 100 for i in range(20))


def test_refused_then_accepted_with_backoff_and_one_line_per_state(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deskcast.http.relay")
    refused = ("HTTP/1.0 401 Authentication Required\r\nConnection: Close\r\n\r\n"
               "You need to authenticate\r\n")
    sleeps = Sleeps()

    async def scenario() -> IcecastPush:
        fake = await FakeIcecast([refused, refused, refused, None]).start()
        push = IcecastPush(f"icecast://source:pw@127.0.0.1:{fake.port}/m.mp3",
                           backoff=Backoff(1.0, 4.0), sleep=sleeps)
        task = asyncio.create_task(push.run(chunks(1000)))
        await until(lambda: push.status()["state"] == "connected")
        await until(lambda: len(fake.bodies[-1]) > 500)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()
        return push

    push = asyncio.run(scenario())
    assert sleeps.delays == [1.0, 2.0, 4.0]
    s = push.status()
    assert (s["attempts"], s["connects"], s["reconnects"]) == (4, 1, 0)
    assert s["last_error"] == ""
    warnings = [m for m in caplog.messages if "401" in m]
    assert warnings == ["icecast: refused (401: wrong source password? check the password in the "
                        "--icecast URL against <source-password> in icecast.xml) — retrying in "
                        "1 s"]
    assert f"icecast: connected to 127.0.0.1:{push.target.port}/m.mp3" in caplog.messages


def test_a_dropped_connection_is_noticed_while_idle_and_reopened_with_fresh_headers() -> None:
    """Per-connection iterators: each connection starts with the stream's header (Ogg)."""
    sleeps = Sleeps()
    opened: list[int] = []

    def open_stream() -> AsyncIterator[bytes]:
        opened.append(len(opened))
        return chunks(10_000, size=10, every_s=0.01, tag=b"OggS-header")

    async def scenario() -> tuple[FakeIcecast, IcecastPush]:
        fake = await FakeIcecast(["close-after:200", None]).start()
        push = IcecastPush(f"http://source:pw@127.0.0.1:{fake.port}/m.ogg",
                           content_type="ogg", sleep=sleeps, backoff=Backoff(0.5, 8.0))
        task = asyncio.create_task(push.run(open_stream))
        await until(lambda: push.status()["connects"] == 2)
        await until(lambda: len(fake.bodies) == 2 and len(fake.bodies[1]) > 50)
        assert not await push.set_title("ignored for Ogg")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()
        return fake, push

    fake, push = asyncio.run(scenario())
    assert opened == [0, 1]
    assert all(body.startswith(b"OggS-header") for body in fake.bodies)
    assert "Content-Type: audio/ogg" in fake.requests[1]
    assert sleeps.delays == [0.5]
    assert push.status()["reconnects"] == 1
    assert fake.admin == []


def test_title_is_sent_now_and_again_after_a_reconnect() -> None:
    async def scenario() -> FakeIcecast:
        fake = await FakeIcecast(["close-after:300", None]).start()
        push = IcecastPush(f"icecast://source:pw@127.0.0.1:{fake.port}/m.mp3",
                           sleep=Sleeps(), backoff=Backoff(0.1, 0.1))
        assert not await push.set_title("too early")  # not connected yet: kept for later
        task = asyncio.create_task(push.run(chunks(10_000, every_s=0.01)))
        await until(lambda: push.status()["state"] == "connected")
        assert await push.set_title("Artist – Title & more")
        await until(lambda: push.status()["connects"] == 2 and len(fake.admin) >= 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()
        return fake

    fake = asyncio.run(scenario())
    queries = [urllib.parse.parse_qs(urllib.parse.urlsplit(h.split(" ")[1]).query)
               for h in fake.admin]
    assert queries[0]["song"] == ["too early"]  # sent on connect
    assert queries[1]["song"] == ["Artist – Title & more"]
    assert queries[-1]["song"] == ["Artist – Title & more"]  # and again after the reconnect
    assert all(q["mode"] == ["updinfo"] and q["mount"] == ["/m.mp3"] for q in queries)


def test_a_feeder_is_never_blocked_while_icecast_is_away() -> None:
    """Nobody listens on the port: the iterator is still drained at its own pace, and
    what cannot be sent is dropped (oldest first) and counted."""
    sleeps = Sleeps()

    async def scenario() -> IcecastPush:
        fake = await FakeIcecast([]).start()
        port = fake.port
        await fake.close()  # connection refused from now on
        push = IcecastPush(f"icecast://source:pw@127.0.0.1:{port}/m.mp3", queue_bytes=1000,
                           sleep=sleeps, backoff=Backoff(0.05, 0.05))
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(push.run(chunks(100, every_s=0.002)), 10)
        assert loop.time() - start < 5
        return push

    push = asyncio.run(scenario())
    s = push.status()
    assert s["connects"] == 0 and "connection refused" in str(s["last_error"])
    assert s["dropped_chunks"] >= 90 and s["queued_bytes"] <= 1000


def test_a_fresh_stream_that_ends_is_opened_again_on_a_new_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    """serve's subscribe() ends when its consumer fell too far behind: the push renews the
    connection with a fresh iterator (fresh Ogg headers) instead of stopping for good."""
    caplog.set_level(logging.INFO, logger="deskcast.http.relay")
    opened: list[int] = []

    def open_stream() -> AsyncIterator[bytes]:
        opened.append(len(opened))
        return chunks(5, size=10, every_s=0.001, tag=b"HEAD")

    async def scenario() -> FakeIcecast:
        fake = await FakeIcecast([]).start()
        push = IcecastPush(f"icecast://source:pw@127.0.0.1:{fake.port}/m.ogg",
                           content_type="audio/ogg", sleep=Sleeps(), backoff=Backoff(0.1, 0.1))
        task = asyncio.create_task(push.run(open_stream))
        await until(lambda: len(opened) >= 3 and len(fake.bodies) >= 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()
        return fake

    fake = asyncio.run(scenario())
    whole = b"HEAD" + b"".join(bytes([i]) * 10 for i in range(5))
    assert fake.bodies[:2] == [whole, whole]
    assert any("the stream to push ended" in m for m in caplog.messages)


def test_cancelling_run_always_ends_it_promptly() -> None:
    """A cancel that lands while a write drains or a wakeup fires must not be lost (Python
    3.11's asyncio.wait_for could swallow one: serve's shutdown then waited forever)."""

    async def scenario() -> list[float]:
        fake = await FakeIcecast([]).start()
        loop = asyncio.get_running_loop()
        took: list[float] = []
        for i in range(40):
            push = IcecastPush(f"icecast://source:pw@127.0.0.1:{fake.port}/m.mp3",
                               sleep=Sleeps())
            task = asyncio.create_task(push.run(chunks(100_000, size=4000, every_s=0)))
            await asyncio.sleep(0.002 * (i % 10))
            started = loop.time()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 3)
            took.append(loop.time() - started)
            assert task.done()
        await fake.close()
        return took

    took = asyncio.run(scenario())
    assert max(took) < 1.5
