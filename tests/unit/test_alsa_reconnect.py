"""``alsa:`` sources and sinks ride out a device that fails once open: one warning, silence
(or dropped audio) at real time, reopen with backoff, one line when back. alsaaudio faked."""

from __future__ import annotations

import logging
from typing import ClassVar

import alsaaudio
import pytest

from deskcast import reconnect
from deskcast.capture import alsa as alsa_source
from deskcast.endpoints import Direction, parse
from deskcast.errors import DeviceError, EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer
from deskcast.playback import alsa as alsa_sink
from deskcast.reconnect import RETRY_FIRST_S

from .fakes import FakeClock

FMT = AudioFormat()
BLOCK = 480
BLOCK_BYTES = BLOCK * FMT.frame_bytes


class FakePcm:
    """Stands in for alsaaudio.PCM: reads/writes a period at a time; ``dead`` fails."""

    opened: ClassVar[list[FakePcm]] = []
    refuse = 0
    """Opens still to fail (the device is not back yet)."""
    buffer_size = 0
    """The buffer the device grants (0: it does not say)."""

    def __init__(self, **kwargs: object) -> None:
        if FakePcm.refuse:
            FakePcm.refuse -= 1
            raise alsaaudio.ALSAAudioError("No such device [pulse:hub.monitor]")
        self.kwargs = kwargs
        self.dead = False
        self.closed = False
        self.fill = len(FakePcm.opened) + 1
        self.written: list[bytes] = []
        self.free = 0
        FakePcm.opened.append(self)

    def info(self) -> dict[str, int]:
        info = {"rate": FMT.rate, "channels": FMT.channels}
        if FakePcm.buffer_size:
            info["buffer_size"] = FakePcm.buffer_size
        return info

    def avail(self) -> int:
        return self.free

    def read(self) -> tuple[int, bytes]:
        if self.dead:
            raise alsaaudio.ALSAAudioError("Input/output error [pulse:hub.monitor]")
        return BLOCK, bytes([self.fill]) * BLOCK_BYTES

    def write(self, data: bytes) -> int:
        if self.dead:
            raise alsaaudio.ALSAAudioError("Input/output error [pulse:out]")
        self.written.append(data)
        return len(data) // FMT.frame_bytes

    def drain(self) -> None:
        pass

    def close(self) -> None:
        if self.dead:
            raise alsaaudio.ALSAAudioError("Input/output error")
        self.closed = True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    FakePcm.opened = []
    FakePcm.refuse = 0
    FakePcm.buffer_size = 0
    monkeypatch.setattr(alsaaudio, "PCM", FakePcm)
    monkeypatch.setattr(reconnect, "Pacer",
                        lambda rate: Pacer(rate, clock=fake, sleep=fake.sleep))
    return fake


def test_alsa_source_captures_silence_while_lost_and_reopens(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    src = alsa_source.AlsaSource(parse("alsa:pulse:hub.monitor", Direction.SOURCE), FMT,
                                 BLOCK)
    src.stream.keeper.clock = clock
    with caplog.at_level(logging.WARNING), src:
        assert src.read().data == b"\x01" * BLOCK_BYTES
        FakePcm.opened[0].dead = True
        FakePcm.refuse = 2  # the device needs a while: back on the third try
        blocks = [src.read() for _ in range(200)]
    assert [b.pts for b in blocks] == [BLOCK * (i + 1) for i in range(200)]  # no hole in time
    silent = [i for i, b in enumerate(blocks) if b.data == bytes(BLOCK_BYTES)]
    assert silent == list(range(len(silent)))
    # Tries after 0.25 s, then 0.5 s and 1 s more: back 1.75 s after the loss.
    assert len(silent) * 0.01 == pytest.approx(7 * RETRY_FIRST_S, abs=0.015)
    assert sum(clock.sleeps) == pytest.approx(0.01 * (len(silent) - 1), abs=0.011)
    assert all(b.data == b"\x02" * BLOCK_BYTES for b in blocks[len(silent):])
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("alsa:pulse:hub.monitor lost: Input/output error "
                           "[pulse:hub.monitor]; capturing silence and reconnecting")
    assert messages[1].startswith("alsa:pulse:hub.monitor is back after 1.8 s")
    assert len(messages) == 2


def test_alsa_sink_drops_audio_at_real_time_while_lost_and_reopens(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    sink = alsa_sink.AlsaSink(parse("alsa:pulse:out", Direction.SINK), FMT, BLOCK)
    sink.stream.keeper.clock = clock
    block = PcmBlock(b"\x07" * BLOCK_BYTES, FMT, 0)
    with caplog.at_level(logging.WARNING), sink:
        sink.write(block)
        FakePcm.opened[0].dead = True
        for _ in range(100):
            sink.write(block)
    assert len(FakePcm.opened) == 2 and len(FakePcm.opened[0].written) == 1
    dropped = 100 - len(FakePcm.opened[1].written)
    assert dropped * 0.01 == pytest.approx(RETRY_FIRST_S, abs=0.015)
    assert sum(clock.sleeps) == pytest.approx(0.01 * (dropped - 1), abs=0.011)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("alsa:pulse:out lost: Input/output error [pulse:out]; dropping "
                           "audio and reconnecting")
    assert messages[1].startswith("alsa:pulse:out is back after ") and len(messages) == 2


def test_alsa_without_reconnect_fails_as_before(clock: FakeClock) -> None:
    src = alsa_source.AlsaSource(parse("alsa:hubcap", Direction.SOURCE), FMT, BLOCK,
                                 reconnect=False)
    with src:
        FakePcm.opened[0].dead = True
        with pytest.raises(DeviceError, match="capture from alsa:hubcap failed"):
            src.read()
    FakePcm.refuse = 1  # a device that cannot be opened at the start is still an error
    with pytest.raises(EndpointError, match="no ALSA playback device 'hw:9'"):
        alsa_sink.AlsaSink(parse("alsa:hw:9", Direction.SINK), FMT, BLOCK).open()


def test_alsa_sink_waits_for_room_and_tells_what_it_holds(clock: FakeClock) -> None:
    """The pull model on plain ALSA, as on pulse: before the receiver takes a frame, sleep
    until the device's buffer (what it granted) has room for a block, at most 3/4 of a block,
    and say what it still holds then; nothing while the device is lost or in an xrun."""
    sink = alsa_sink.AlsaSink(parse("alsa:pulse:out", Direction.SINK), FMT, BLOCK,
                              buffer_ms=40.0)
    slept: list[float] = []
    sink.sleep = slept.append
    FakePcm.buffer_size = 4 * BLOCK                       # granted 40 ms, as asked
    with sink:
        pcm = FakePcm.opened[0]
        queued = []
        for free in (4 * BLOCK, 2 * BLOCK, BLOCK, BLOCK // 2, 0, -32):
            pcm.free = free
            queued.append(sink.wait_for_room())
        # room for a 10 ms block: holds at most 30 ms; sleeps at most 7.5 ms
        assert slept == pytest.approx([0.005, 0.0075])
        assert queued == pytest.approx([0.0, 0.02, 0.03, 0.03, 0.0325, None])
        pcm.dead = True
        sink.write(PcmBlock(bytes(BLOCK_BYTES), FMT, 0))   # lost
        assert sink.wait_for_room() is None


def test_alsa_capture_asks_for_at_least_a_200_ms_ring_and_playback_for_its_buffer(
        clock: FakeClock) -> None:
    """One stream class for both directions, sized by direction: a capture buffer costs no
    delay and rides out a late reader (200 ms at least), a playback buffer is ``buffer_ms``."""
    src = alsa_source.AlsaSource(parse("alsa:hubcap", Direction.SOURCE), FMT, BLOCK,
                                 buffer_ms=40.0)
    sink = alsa_sink.AlsaSink(parse("alsa:out", Direction.SINK), FMT, BLOCK, buffer_ms=40.0)
    with src, sink:
        capture, playback = FakePcm.opened
    assert capture.kwargs["periodsize"] == playback.kwargs["periodsize"] == BLOCK
    assert capture.kwargs["periods"] == 20 and capture.kwargs["type"] == alsaaudio.PCM_CAPTURE
    assert playback.kwargs["periods"] == 4 and playback.kwargs["type"] == alsaaudio.PCM_PLAYBACK
