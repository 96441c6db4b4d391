from __future__ import annotations

import asyncio
import math
import time

import pytest

from deskcast.http.broadcaster import (
    CUT_CLOSED,
    CUT_LEFT,
    CUT_TOO_SLOW,
    Broadcaster,
    Chunk,
    Listener,
)
from deskcast.http.icy import IcyInserter, split_icy
from deskcast.http.streams import FORMATS, FormatStream, Running

FRAME_S = 0.02


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chunk(i: int, size: int = 4) -> Chunk:
    """Chunk number ``i``: its data starts with the number, so the order can be checked."""
    return Chunk(i.to_bytes(4, "big") + bytes(size - 4), FRAME_S, i * FRAME_S)


def indices(data: bytes, size: int = 4) -> list[int]:
    assert len(data) % size == 0
    return [int.from_bytes(data[k:k + 4], "big") for k in range(0, len(data), size)]


async def drain(listener: Listener, into: list[bytes]) -> None:
    while (batch := await listener.next_batch()) is not None:
        into.append(batch)


def test_new_listener_gets_header_then_burst_then_live_in_order() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.2, batch_s=0.1, clock=clock)
        for i in range(30):
            b.publish(chunk(i))
            clock.now += FRAME_S
        listener = b.subscribe()
        assert math.isclose(listener.lag_s, 0.2)
        first = await listener.next_batch()
        assert first is not None and first.startswith(b"HEAD")
        assert indices(first[4:]) == list(range(20, 30))  # the last 0.2 s
        batches: list[bytes] = []
        reader = asyncio.create_task(drain(listener, batches))
        for i in range(30, 130):
            b.publish(chunk(i))
            clock.now += FRAME_S
            await asyncio.sleep(0)
        b.close()
        await reader
        assert indices(b"".join(batches)) == list(range(30, 130))  # no gap, no duplicate
        assert all(not batch.startswith(b"HEAD") for batch in batches)
        assert listener.cut_reason == CUT_CLOSED

    asyncio.run(main())


def test_first_listener_of_an_empty_stream_gets_the_header_at_once() -> None:
    async def main() -> None:
        b = Broadcaster(header=b"OggS..", clock=FakeClock())
        listener = b.subscribe()
        assert await listener.next_batch() == b"OggS.."
        b.publish(chunk(0))
        b.close()
        assert await listener.next_batch() is None

    asyncio.run(main())


def test_keeping_up_listener_gets_batches_of_batch_s() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(batch_s=0.1, clock=clock)
        listener = b.subscribe()
        batches: list[bytes] = []
        reader = asyncio.create_task(drain(listener, batches))
        await asyncio.sleep(0)
        for i in range(200):
            b.publish(chunk(i))
            clock.now += FRAME_S
            await asyncio.sleep(0)
        b.close()
        await reader
        assert [len(indices(batch)) for batch in batches] == [5] * 40
        assert indices(b"".join(batches)) == list(range(200))

    asyncio.run(main())


def test_a_partial_batch_goes_out_once_its_oldest_chunk_waited_batch_s() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(batch_s=0.1, clock=clock)
        listener = b.subscribe()
        b.publish(chunk(0))
        b.publish(chunk(1))
        clock.now += 0.15  # the encoder stalled: send what there is without waiting
        assert indices(await listener.next_batch() or b"") == [0, 1]

    asyncio.run(main())


def test_a_partial_batch_is_sent_by_the_timer_when_nothing_more_comes() -> None:
    async def main() -> None:
        b = Broadcaster(batch_s=0.05)  # real clock: the timer fires after ~50 ms
        listener = b.subscribe()
        b.publish(chunk(0))
        started = time.monotonic()
        batch: bytes | None = await asyncio.wait_for(listener.next_batch(), 2.0)
        assert indices(batch or b"") == [0]
        assert time.monotonic() - started < 1.0

    asyncio.run(main())


def test_one_stuck_listener_among_1000_neither_stalls_publish_nor_the_others() -> None:
    chunks = [chunk(i, size=16) for i in range(500)]  # 10 s of 20 ms chunks
    expected = b"".join(c.data for c in chunks)
    results: dict[str, float] = {}

    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(burst_s=1.0, max_lag_s=4.0, batch_s=0.1, clock=clock)
        stuck = b.subscribe()  # never reads
        listeners = [b.subscribe() for _ in range(999)]
        received: list[list[bytes]] = [[] for _ in listeners]
        readers = [asyncio.create_task(drain(ls, into))
                   for ls, into in zip(listeners, received, strict=True)]
        await asyncio.sleep(0)
        publish_s = 0.0
        max_publish_s = 0.0
        max_ring = 0
        cut_at: int | None = None
        for i, c in enumerate(chunks):
            t0 = time.perf_counter()
            b.publish(c)
            dt = time.perf_counter() - t0
            publish_s += dt
            max_publish_s = max(max_publish_s, dt)
            clock.now += FRAME_S
            max_ring = max(max_ring, b.stats.ring_chunks)
            if cut_at is None and stuck.cut_reason is not None:
                cut_at = i
            await asyncio.sleep(0)
        assert b.listeners == 999
        b.close()
        await asyncio.gather(*readers)
        results.update(publish_s=publish_s, max_publish_s=max_publish_s, max_ring=max_ring,
                       cut_at=-1 if cut_at is None else cut_at, lag=stuck.lag_s)
        assert stuck.cut_reason == CUT_TOO_SLOW
        # cut on the first chunk that takes it past 4 s behind: chunk 200 ends at 4.02 s
        assert cut_at == 200
        assert 4.0 < stuck.lag_s <= 4.0 + FRAME_S + 1e-6
        assert await stuck.next_batch() is None
        assert b.stats.listeners_cut == 1
        for into in received:
            assert b"".join(into) == expected
        # the ring never holds more than max(burst, max lag) + batch (+1 chunk)
        assert max_ring <= math.ceil((4.0 + 0.1) / FRAME_S) + 1
        # ~0.2 s here when the machine is quiet; only a publish that waited for the stuck
        # listener (or did work growing with the backlog) would take seconds. The tight
        # figures are bench/fanout.py's; a shared 2-core machine once needed 0.53 s.
        assert publish_s < 2.0

    asyncio.run(main())
    print("\n1000 listeners:", {k: round(v, 6) for k, v in results.items()})


def test_subscribe_close_churn_leaves_nothing_behind() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(clock=clock)
        for i in range(100):
            b.publish(chunk(i))
        for _ in range(10_000):
            b.subscribe().close()
        assert b.listeners == 0
        assert not b._listeners and not b._busy and not b._waiters
        # listeners that close while waiting leave stale heap entries; they are compacted
        for _ in range(2_000):
            listener = b.subscribe()
            await listener.next_batch()  # the burst
            task = asyncio.create_task(listener.next_batch())
            await asyncio.sleep(0)
            listener.close()
            assert await task is None
            assert listener.cut_reason == CUT_LEFT
        assert b.listeners == 0
        assert not b._busy
        assert b._entries <= 130 and len(b._ready) == len(b._waiters)
        assert b._entries == sum(map(len, b._waiters.values()))
        stats = b.stats
        assert stats.listeners_total == 12_000 and stats.listeners_cut == 0
        assert stats.ring_chunks == 100

    asyncio.run(main())


def test_close_ends_every_waiting_listener_with_none() -> None:
    async def main() -> None:
        b = Broadcaster(clock=FakeClock())
        listeners = [b.subscribe() for _ in range(50)]
        tasks = [asyncio.create_task(ls.next_batch()) for ls in listeners]
        await asyncio.sleep(0)
        b.close()
        assert await asyncio.gather(*tasks) == [None] * 50
        assert all(ls.cut_reason == CUT_CLOSED for ls in listeners)
        assert b.listeners == 0
        late = b.subscribe()
        assert await late.next_batch() is None and late.cut_reason == CUT_CLOSED
        b.publish(chunk(0))  # ignored after close
        assert b.stats.published_chunks == 0

    asyncio.run(main())


def test_cancelled_wait_loses_nothing() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(batch_s=0.1, clock=clock)
        listener = b.subscribe()
        task = asyncio.create_task(listener.next_batch())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for i in range(5):
            b.publish(chunk(i))
        assert indices(await listener.next_batch() or b"") == [0, 1, 2, 3, 4]

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duration"):
        Chunk(b"x", 0.0, 0.0)
    with pytest.raises(ValueError, match="burst_s"):
        Broadcaster(burst_s=5.0, max_lag_s=4.0)
    with pytest.raises(ValueError, match="max_batch_s"):
        Broadcaster(batch_s=0.2, max_batch_s=0.1)


# --- push: batches written straight to transports ---------------------------------------

class FakeTransport:
    """Records writes; ``buffered`` plays the bytes a slow client left in the write buffer."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def dechunk(writes: list[bytes]) -> bytes:
    """The payload of HTTP/1.1 chunks, checking each write is exactly one whole chunk."""
    out = b""
    for w in writes:
        size_line, _, rest = w.partition(b"\r\n")
        size = int(size_line, 16)
        assert size > 0 and len(rest) == size + 2 and rest.endswith(b"\r\n"), w
        out += rest[:size]
    return out


async def pushed(b: Broadcaster, *, chunked: bool = True
                 ) -> tuple[Listener, FakeTransport, bytes, asyncio.Task[None]]:
    """A listener that took its first batch (the header, at least) and then streams to a fake
    transport."""
    listener = b.subscribe()
    first = await listener.next_batch() or b""
    assert first.startswith(b"HEAD")
    transport = FakeTransport()
    task = asyncio.create_task(listener.stream_to(transport, chunked=chunked))
    await asyncio.sleep(0)
    return listener, transport, first, task


def test_pushed_listeners_share_one_framed_batch_and_miss_nothing() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.1, batch_s=0.1, clock=clock)
        for i in range(5):
            b.publish(chunk(i))
        clients = [await pushed(b) for _ in range(3)]
        plain = await pushed(b, chunked=False)
        for i in range(5, 105):
            b.publish(chunk(i))
            clock.now += FRAME_S
        for listener, transport, first, _task in [*clients, plain]:
            assert first.startswith(b"HEAD")
            body = dechunk(transport.writes) if transport is not plain[1] else \
                b"".join(transport.writes)
            assert indices(first[4:] + body) == list(range(105))
            assert len(transport.writes) == 20  # 5 frames = 0.1 s per write
            assert listener.sent_bytes == len(first) + len(body)
        # one bytes object for all chunked listeners of a batch: built once, not per listener
        assert all(w is clients[0][1].writes[7] for w in (c[1].writes[7] for c in clients))
        assert b.stats.sent_bytes == sum(c[0].sent_bytes for c in [*clients, plain])
        b.close()
        for *_rest, task in [*clients, plain]:
            await asyncio.wait_for(task, 1.0)
        assert all(c[0].cut_reason == CUT_CLOSED for c in clients)

    asyncio.run(main())


def test_the_batch_grows_with_the_listeners_up_to_max_batch_s() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.0, batch_s=0.1, max_batch_s=0.3,
                        writes_per_s=10, clock=clock)
        assert b.current_batch_s == pytest.approx(0.1)
        listener, transport, _first, task = await pushed(b)
        for _ in range(1):
            b.subscribe()
        assert b.current_batch_s == pytest.approx(0.2)  # 2 listeners at 10 writes/s
        for _ in range(10):
            b.subscribe()
        assert b.current_batch_s == pytest.approx(0.3)  # capped
        for i in range(150):
            b.publish(chunk(i))
            clock.now += FRAME_S
        assert [len(indices(w[w.index(b"\r\n") + 2:-2])) for w in transport.writes] == [15] * 10
        listener.close()
        await asyncio.wait_for(task, 1.0)
        assert listener.cut_reason == CUT_LEFT and not b._pushed

    asyncio.run(main())


def test_a_partial_batch_is_pushed_by_the_timer() -> None:
    async def main() -> None:
        # real clock: the timer fires after ~50 ms
        b = Broadcaster(header=b"HEAD", burst_s=0.0, batch_s=0.05)
        _listener, transport, _first, task = await pushed(b)
        b.publish(chunk(0))
        assert transport.writes == []
        await asyncio.sleep(0.3)
        assert indices(dechunk(transport.writes)) == [0]
        task.cancel()

    asyncio.run(main())


def test_a_pushed_listener_whose_transport_fills_is_cut_and_nobody_waits() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.0, max_lag_s=1.0, batch_s=0.1, clock=clock)
        slow, slow_t, _f, slow_task = await pushed(b)
        fast, fast_t, _f, _fast_task = await pushed(b)
        for i in range(100):  # 2 s of 4-byte 20 ms chunks: 200 bytes/s
            b.publish(chunk(i))
            clock.now += FRAME_S
            slow_t.buffered += 4 * (i < 70)  # the slow client's buffer holds what it was sent
        await asyncio.wait_for(slow_task, 1.0)
        assert slow.cut_reason == CUT_TOO_SLOW and b.stats.listeners_cut == 1
        assert slow.lag_s > 1.0
        assert len(dechunk(slow_t.writes)) <= 4 * 60
        assert indices(dechunk(fast_t.writes)) == list(range(100))
        assert fast.cut_reason is None and b.listeners == 1

    asyncio.run(main())


def test_a_listener_that_joins_mid_batch_gets_its_own_bytes_once_then_shares() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.0, batch_s=0.1, clock=clock)
        _a, a_t, _f, _ta = await pushed(b)
        b.publish(chunk(0))
        b.publish(chunk(1))  # 2 of 5 chunks pending for the group
        late = b.subscribe()  # joins at live (no burst): chunk 2
        first = await late.next_batch() or b""
        assert first == b"HEAD"
        late_t = FakeTransport()
        task = asyncio.create_task(late.stream_to(late_t, chunked=True))
        await asyncio.sleep(0)
        for i in range(2, 20):
            b.publish(chunk(i))
        assert indices(dechunk(a_t.writes)) == list(range(20))
        assert indices(dechunk(late_t.writes)) == list(range(2, 20))
        assert indices(dechunk(late_t.writes[:1])) == [2, 3, 4]
        assert all(x is y for x, y in zip(late_t.writes[1:], a_t.writes[1:], strict=True))
        task.cancel()

    asyncio.run(main())


def test_cancelled_stream_to_loses_nothing_and_a_closing_transport_is_skipped() -> None:
    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.0, batch_s=0.1, clock=clock)
        listener, transport, _first, task = await pushed(b)
        for i in range(5):
            b.publish(chunk(i))
        transport.closing = True
        for i in range(5, 10):
            b.publish(chunk(i))
        assert indices(dechunk(transport.writes)) == list(range(5))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not b._pushed and listener.cut_reason is None
        assert indices(await listener.next_batch() or b"") == list(range(5, 10))
        for i in range(10, 25):
            b.publish(chunk(i))
        assert indices(await listener.next_batch() or b"") == list(range(10, 25))

    asyncio.run(main())


def test_closing_with_an_ssl_transport_whose_connection_is_gone() -> None:
    """An SSL transport whose connection went away raises from get_write_buffer_size (its
    protocol is None): serve's shutdown with an HTTPS listener must not trip over it."""

    class GoneSslTransport(FakeTransport):
        def get_write_buffer_size(self) -> int:
            raise AttributeError("'NoneType' object has no attribute '_get_write_buffer_size'")

    async def main() -> None:
        clock = FakeClock()
        b = Broadcaster(header=b"HEAD", burst_s=0.0, batch_s=0.1, clock=clock)
        listener = b.subscribe()
        assert (await listener.next_batch() or b"").startswith(b"HEAD")
        transport = GoneSslTransport()
        task = asyncio.create_task(listener.stream_to(transport, chunked=True))
        await asyncio.sleep(0)
        for i in range(10):
            b.publish(chunk(i))
        assert indices(dechunk(transport.writes)) == list(range(10))
        b.close()  # cuts every listener, reading each one's lag from its transport
        await asyncio.wait_for(task, 1.0)         # ended, without an exception
        assert listener.cut_reason == CUT_CLOSED
        assert b.listeners == 0

    asyncio.run(main())


def test_icy_listeners_are_pushed_with_their_own_blocks_built_once_per_phase() -> None:
    """Pushed ICY listeners get exactly what one IcyInserter fed every batch would give them,
    title changes included; those at the same point of their interval share one bytes object,
    those at another point get their own."""

    async def main() -> None:
        clock = FakeClock()
        title = ["one"]
        b = Broadcaster(header=b"", burst_s=FRAME_S, batch_s=0.1, clock=clock)
        b.publish(chunk(0))  # the burst
        clients = []
        for metaint in (12, 12, 13):
            listener = b.subscribe()
            inserter = IcyInserter(metaint)
            first = inserter.feed(await listener.next_batch() or b"", title[0])
            transport = FakeTransport()
            task = asyncio.create_task(listener.stream_to(
                transport, chunked=True, icy=inserter, title=lambda: title[0]))
            await asyncio.sleep(0)
            clients.append((listener, transport, first, task, metaint))
        plain = b.subscribe()  # a listener without ICY next to them
        assert indices(await plain.next_batch() or b"") == [0]
        plain_t = FakeTransport()
        plain_task = asyncio.create_task(plain.stream_to(plain_t, chunked=True))
        await asyncio.sleep(0)
        for i in range(1, 101):
            if i == 50:
                title[0] = "two"
            b.publish(chunk(i))
            clock.now += FRAME_S
        for listener, transport, first, _task, metaint in clients:
            audio, blocks = split_icy(first + dechunk(transport.writes), metaint)
            assert indices(audio) == list(range(101))
            titles = [blk.title for blk in blocks if blk.title is not None]
            assert titles == ["one", "two"]
            assert len(blocks) == len(audio) // metaint
            assert listener.sent_bytes == len(audio)
        a, b2, c = (cl[1].writes for cl in clients)
        assert all(x is y for x, y in zip(a, b2, strict=True))  # same phase: shared
        assert any(x != y for x, y in zip(a, c, strict=True))  # another phase: its own
        assert indices(dechunk(plain_t.writes)) == list(range(1, 101))  # no ICY blocks
        b.close()
        for *_rest, task, _m in clients:
            await asyncio.wait_for(task, 1.0)
        await asyncio.wait_for(plain_task, 1.0)

    asyncio.run(main())


# --- FormatStream: one encoder per format, running only while somebody listens -------------

class FakeEncoder:
    made = 0

    def __init__(self) -> None:
        FakeEncoder.made += 1
        self.number = FakeEncoder.made
        self.header = b"H%d" % self.number

    def encode(self, block: object) -> list[Chunk]:
        return []

    def describe(self) -> str:
        return f"fake #{self.number}"

    def header_for(self, artist: str, title: str) -> bytes:
        return self.header + f"|{artist}|{title}".encode()


def format_stream(**kwargs: object) -> FormatStream:
    return FormatStream(FORMATS["opus"], FakeEncoder, burst_s=1.0, max_lag_s=4.0,
                        **kwargs)  # type: ignore[arg-type]


def test_format_stream_starts_with_the_first_user_and_stops_after_the_last() -> None:
    async def run() -> None:
        fs = format_stream(idle_stop_s=0.0)
        assert fs.running is None and not fs.stats.running
        b1 = fs.acquire()
        assert fs.acquire() is b1 and fs.starts == 1  # second user: same encoder
        assert isinstance(fs.running, Running) and fs.stats.running
        fs.release()
        assert fs.running is not None  # one user left
        fs.release()
        assert fs.running is None and b1.closed
        b2 = fs.acquire()  # a clean restart: new encoder, new broadcaster
        assert b2 is not b1 and fs.starts == 2
        assert fs.running is not None
        assert isinstance(fs.running.encoder, FakeEncoder) and fs.running.encoder.number >= 2
        fs.release()
        fs.release()  # one release too many is harmless
        assert fs.users == 0 and fs.running is None

    asyncio.run(run())


def test_format_stream_lingers_then_stops_and_always_on_never_stops() -> None:
    async def run() -> None:
        fs = format_stream(idle_stop_s=0.05)
        b = fs.acquire()
        fs.release()
        await asyncio.sleep(0.01)
        assert fs.acquire() is b  # came back within idle_stop_s: same encoder
        fs.release()
        await asyncio.sleep(0.15)
        assert fs.running is None and b.closed
        always = format_stream(idle_stop_s=0.0, always_on=True)
        always.start()
        always.acquire()
        always.release()
        assert always.running is not None
        always.end()
        assert not always.stats.running and always.ended

    asyncio.run(run())


def test_format_stream_tags_go_into_headers_handed_out_after_the_change() -> None:
    async def run() -> None:
        fs = format_stream(idle_stop_s=0.0)
        fs.set_tags("A", "B")  # before start: used when it starts
        b = fs.acquire()
        early = b.subscribe()
        fs.set_tags("C", "D")
        late = b.subscribe()
        head_early = await early.next_batch()
        head_late = await late.next_batch()
        assert head_early is not None and head_early.endswith(b"|C|D")  # header taken late
        assert head_late is not None and head_late.endswith(b"|C|D")
        first = b.header
        fs.set_tags("E", "F")
        assert b.header != first and b.header.endswith(b"|E|F")

    asyncio.run(run())
