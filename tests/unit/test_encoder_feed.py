"""serve's sink: each block goes to the encoders that run and nowhere else, a freshly started
encoder first gets the last burst's worth of audio, the chunks are published on the event loop
in order, and closing the feed ends every stream."""

from __future__ import annotations

import asyncio

from deskcast.http.broadcaster import Chunk
from deskcast.http.feed import EncoderFeed
from deskcast.http.streams import FORMATS, FormatStream, Running
from deskcast.media import AudioFormat, PcmBlock

FMT = AudioFormat(48000, 2)
BLOCK = 4800  # 100 ms


class FakeEncoder:
    """One chunk per block, named by the block's first frame."""

    header = b""

    def encode(self, block: PcmBlock) -> list[Chunk]:
        return [Chunk(str(block.pts).encode(), block.duration, block.pts / FMT.rate)]

    def describe(self) -> str:
        return "fake"

    def header_for(self, artist: str, title: str) -> bytes:
        return b""


class FakeBroadcaster:
    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.closed = False

    def publish(self, chunk: Chunk) -> None:
        asyncio.get_running_loop()  # raises unless called on the event loop
        self.published.append(chunk.data)

    def close(self) -> None:
        self.closed = True


def block(n: int) -> PcmBlock:
    return PcmBlock(bytes(BLOCK * FMT.frame_bytes), FMT, n * BLOCK)


def stream(name: str, burst_s: float) -> FormatStream:
    return FormatStream(FORMATS[name], FakeEncoder, burst_s=burst_s, max_lag_s=4.0)


def test_running_encoders_are_fed_a_fresh_one_with_the_burst_first_and_close_ends_all() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], list[bool]]:
        mp3, opus = stream("mp3", burst_s=0.2), stream("opus", burst_s=0.3)
        feed = EncoderFeed([mp3, opus], FMT, BLOCK)
        feed.attach(asyncio.get_running_loop())
        mp3_out, opus_out = FakeBroadcaster(), FakeBroadcaster()
        mp3.running = Running(FakeEncoder(), mp3_out, primed=True)  # type: ignore[arg-type]
        for n in range(5):
            feed.write(block(n))  # opus not running: not fed
        opus.running = Running(FakeEncoder(), opus_out)  # type: ignore[arg-type]
        feed.write(block(5))
        feed.write(block(6))
        await asyncio.sleep(0)
        feed.close()
        await asyncio.sleep(0)
        return mp3_out.published, opus_out.published, [mp3.ended, opus.ended]

    mp3, opus, ended = asyncio.run(scenario())
    frames = [str(n * BLOCK).encode() for n in range(7)]
    assert mp3 == frames
    # the last 0.3 s kept before block 5 (blocks 2-4) come first, then live audio
    assert opus == frames[2:]
    assert ended == [True, True]
