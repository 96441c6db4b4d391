"""Self-paced sources with a fake clock, and the file source on real files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile

from deskcast.capture import make_source
from deskcast.capture.file import FileSource
from deskcast.capture.stdin import StdinSource
from deskcast.capture.tone import ToneSource
from deskcast.endpoints import Direction, parse
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer

from ..fakes import FakeClock

FMT = AudioFormat()


def test_pacer_releases_frames_at_real_time() -> None:
    clock = FakeClock()
    pacer = Pacer(48000, clock=clock, sleep=clock.sleep)
    for n in range(0, 48000 * 3 + 1, 480):
        pacer.wait(n)
    assert clock.now == pytest.approx(103.0)


def test_pacer_restarts_after_a_long_stall_instead_of_bursting() -> None:
    clock = FakeClock()
    pacer = Pacer(48000, max_lag_s=1.0, clock=clock, sleep=clock.sleep)
    pacer.wait(0)
    clock.now += 5.0  # the machine froze
    pacer.wait(480)
    assert pacer.resyncs == 1
    pacer.wait(960)
    assert clock.sleeps[-1] == pytest.approx(0.01)


def spectrum_peak(x: np.ndarray, rate: int) -> float:
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(mag) * rate / len(x))


def source(uri: str, clock: FakeClock, block_frames: int = 480) -> ToneSource:
    return ToneSource(parse(uri, Direction.SOURCE), FMT, block_frames,
                      pacer=Pacer(FMT.rate, clock=clock, sleep=clock.sleep))


def read_seconds(src: ToneSource, seconds: float) -> np.ndarray:
    blocks = [src.read() for _ in range(round(seconds * FMT.rate / src.block_frames))]
    return np.concatenate([b.as_float() for b in blocks])


@pytest.mark.parametrize("freq", [440.0, 1000.0, 7350.0])
def test_tone_frequency_level_and_pacing(freq: float) -> None:
    clock = FakeClock()
    x = read_seconds(source(f"tone:{freq}", clock), 1.0)
    assert spectrum_peak(x[:, 0], FMT.rate) == pytest.approx(freq, abs=1.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(x[:, 0] ** 2)))
    assert rms_db == pytest.approx(-12 - 3.01, abs=0.05)  # -12 dBFS peak sine
    assert np.array_equal(x[:, 0], x[:, 1])
    assert clock.now - 100.0 == pytest.approx(1.0 - 0.01)


def test_tone_is_phase_continuous_across_block_sizes() -> None:
    a = read_seconds(source("tone:997", FakeClock(), 480), 0.1)
    b = read_seconds(source("tone:997", FakeClock(), 96), 0.1)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("uri, period", [("tone:1000", 48), ("tone:997", 48000),
                                         ("tone:440", 1200), ("tone:440.5", None)])
def test_a_periodic_tone_is_cut_from_one_rendered_period(uri: str, period: int | None) -> None:
    src = source(uri, FakeClock(), 1920)
    assert src.period == period
    blocks = [src.read() for _ in range(60)]  # 2.4 s: across periods and block boundaries
    fresh = src.pcm(0, 60 * 1920)  # rendered straight from the frame index
    got = np.frombuffer(b"".join(b.data for b in blocks), np.int16).astype(int)
    assert np.abs(got - np.frombuffer(fresh, np.int16)).max() <= 1  # rounding at most
    assert [b.pts for b in blocks] == [i * 1920 for i in range(60)]


def test_noise_is_seeded_and_sweep_covers_its_range() -> None:
    n1 = read_seconds(source("noise:3", FakeClock()), 0.2)
    n2 = read_seconds(source("noise:3", FakeClock(), 128), 0.2)
    assert np.array_equal(n1, n2[: len(n1)])
    assert not np.array_equal(n1, read_seconds(source("noise:4", FakeClock()), 0.2))
    sw = read_seconds(source("sweep:200-4000?seconds=1", FakeClock()), 1.0)[:, 0]
    assert spectrum_peak(sw[:4800], FMT.rate) < 400
    assert spectrum_peak(sw[-4800:], FMT.rate) > 3000


def test_silence_and_demo() -> None:
    assert not read_seconds(source("silence", FakeClock()), 0.1).any()
    demo = read_seconds(source("demo", FakeClock()), 2.0)[:, 0]
    assert np.abs(demo[:12000]).max() > 0.1          # the chime plays
    assert np.abs(demo[-12000:]).max() < 1e-3        # then rests


@pytest.mark.parametrize(
    "uri, message",
    [("tone:30000", "between 0 and 24000"), ("tone:abc", "not a number"),
     ("tone?level=3", "0 or below"), ("sweep:10-99999", "below 24000"),
     ("sweep?seconds=0", "positive")],
)
def test_generator_errors(uri: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        make_source(uri, FMT, 480)


def write_tone(path: Path, seconds: float, rate: int = 44100, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = 0.25 * np.sin(2 * np.pi * 1000 * t)
    data = np.repeat(x[:, None], channels, axis=1)
    soundfile.write(str(path), data, rate)
    return x


def read_all(src: FileSource | StdinSource, limit: int = 100000) -> list[PcmBlock]:
    out = []
    for _ in range(limit):
        b = src.read()
        if b is None:
            break
        out.append(b)
    return out


def test_file_source_converts_any_format(tmp_path: Path) -> None:
    path = tmp_path / "mono44k.flac"
    write_tone(path, 0.5)
    with FileSource(parse(f"file:{path}?pace=0", Direction.SOURCE), FMT, 480) as src:
        blocks = read_all(src)
    x = np.concatenate([b.as_float() for b in blocks])
    assert all(b.frames == 480 for b in blocks)
    assert len(x) == pytest.approx(24000, abs=480)
    assert spectrum_peak(x[1000:20000, 1], 48000) == pytest.approx(1000, abs=3)
    assert np.abs(x[1000:20000]).max() == pytest.approx(0.25, abs=0.01)


def test_file_source_paces_within_one_percent_of_real_time(tmp_path: Path) -> None:
    path = tmp_path / "two.wav"
    write_tone(path, 2.0, rate=48000, channels=2)
    with FileSource(parse(f"file:{path}", Direction.SOURCE), FMT, 480) as src:
        start = time.monotonic()
        blocks = read_all(src)
        elapsed = time.monotonic() - start
    audio_s = sum(b.frames for b in blocks) / 48000
    # The last block is released at its start: real time is one block short of the audio.
    assert elapsed == pytest.approx(audio_s - 0.01, rel=0.01)


def test_file_source_loops(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    write_tone(path, 0.1, rate=48000)
    with FileSource(parse(f"file:{path}?loop&pace=0", Direction.SOURCE), FMT, 480) as src:
        blocks = [src.read() for _ in range(50)]
    assert all(b is not None for b in blocks)
    assert src.passes >= 4
    assert [b.pts for b in blocks if b] == [i * 480 for i in range(50)]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.wav", None, "does not exist"),
        ("garbage.mp3", b"\x00\xff" * 3000, "cannot decode|holds no audio"),
        ("empty.wav", b"", "cannot decode|holds no audio"),
        ("text.flac", b"hello, this is not audio\n" * 100, "cannot decode|holds no audio"),
    ],
)
def test_file_source_errors(tmp_path: Path, name: str, content: bytes | None,
                            message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    src = FileSource(parse(f"file:{path}", Direction.SOURCE), FMT, 480)
    with pytest.raises(EndpointError, match=message) as info:
        src.open()
    src.close()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_file_source_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match=r"director|folder"):
        FileSource(parse(f"file:{tmp_path}", Direction.SOURCE), FMT, 480).open()


def test_stdin_source_blocks_and_pads(tmp_path: Path) -> None:
    raw = tmp_path / "in.raw"
    raw.write_bytes(b"\x01\x00" * 2 * 1000)  # 1000 frames
    with raw.open("rb") as f:
        src = StdinSource(parse("-", Direction.SOURCE), FMT, 480, stream=f)
        blocks = read_all(src)
    assert [b.frames for b in blocks] == [480, 480, 480]
    assert blocks[-1].data[: 40 * 4] == b"\x01\x00" * 80
    assert set(blocks[-1].data[40 * 4:]) == {0}


# --- pulse: surviving a restarted sound server or a removed device (fakes, no server) ----------

class FakePaSimple:
    """Stands in for pasimple.PaSimple; ``fail_after`` reads a stream dies."""

    opened: ClassVar[list[FakePaSimple]] = []
    refuse = 0
    """Constructions still to fail (the server is not back yet)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        import pasimple

        if FakePaSimple.refuse:
            FakePaSimple.refuse -= 1
            raise pasimple.PaSimpleError("Error while creating stream: 6")
        self.device = kwargs["device_name"]
        self.fail_after: int | None = None
        self.reads = 0
        self.closed = False
        FakePaSimple.opened.append(self)

    def read(self, n: int) -> bytes:
        import pasimple

        if self.fail_after is not None and self.reads >= self.fail_after:
            raise pasimple.PaSimpleError("Could not record audio, error code: 11")
        self.reads += 1
        return b"\x01" * n

    def write(self, data: bytes) -> None:
        self.read(len(data))

    def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_pulse(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """pasimple and the server look-ups faked; the silence pacer and the retry schedule run on
    a fake clock. Returns the clock."""
    import contextlib

    import pasimple

    from deskcast import reconnect, soundserver
    from deskcast.pulse import StreamKeeper

    clock = FakeClock()
    FakePaSimple.opened = []
    FakePaSimple.refuse = 0
    monkeypatch.setattr(pasimple, "PaSimple", FakePaSimple)
    monkeypatch.setattr(soundserver, "connect", lambda: contextlib.nullcontext(None))
    dev = soundserver.Device("hub.monitor", "Monitor of hub", monitor_of="hub")
    monkeypatch.setattr(soundserver, "sources", lambda pulse, hub: [dev])
    monkeypatch.setattr(soundserver, "sinks", lambda pulse, hub: [
        soundserver.Device("out", "out")])
    monkeypatch.setattr(reconnect, "Pacer",
                        lambda rate: Pacer(rate, clock=clock, sleep=clock.sleep))
    # The watcher thread talks to a real server: tested on its own below.
    monkeypatch.setattr(StreamKeeper, "start_watch", lambda self, device: None)
    return clock


def test_pulse_source_survives_a_lost_stream(fake_pulse: FakeClock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from deskcast.capture.pulse import PulseSource
    from deskcast.reconnect import RETRY_FIRST_S, RETRY_MAX_S

    clock = fake_pulse
    src = PulseSource(parse("pulse:hub.monitor", Direction.SOURCE), FMT, 480, reconnect=True)
    src.stream.keeper.clock = clock
    src.open()
    try:
        assert src.read().data == b"\x01" * 1920
        FakePaSimple.opened[0].fail_after = 1  # the next read fails
        FakePaSimple.refuse = 4  # the server needs a while
        blocks = [src.read() for _ in range(600)]  # 6 s of audio
    finally:
        src.close()
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    back = [r.getMessage() for r in caplog.records if "is back" in r.getMessage()]
    assert lost == ["pulse:hub.monitor lost: the sound server closed the stream (was it "
                    "restarted?); capturing silence and reconnecting"]
    assert len(back) == 1 and back[0].startswith("pulse:hub.monitor is back after ")
    assert [b.pts for b in blocks] == [480 * (i + 1) for i in range(600)]  # no hole in time
    silent = [i for i, b in enumerate(blocks) if b.data == bytes(1920)]
    assert silent == list(range(silent[-1] + 1))
    # Silence is paced at real time: 10 ms per block on the (fake) clock.
    assert sum(clock.sleeps) == pytest.approx(0.01 * (len(silent) - 1), abs=0.011)
    # Back off: 0.25, 0.5, 1, 2, 2 s (4 refusals, then success) = 5.75 s of silence.
    waited = RETRY_FIRST_S + 2 * RETRY_FIRST_S + 4 * RETRY_FIRST_S + 2 * RETRY_MAX_S
    assert len(silent) * 0.01 == pytest.approx(waited, abs=0.03)
    assert all(b.data == b"\x01" * 1920 for b in blocks[silent[-1] + 1:])


def test_pulse_source_without_reconnect_fails_as_before(fake_pulse: FakeClock) -> None:
    from deskcast.capture.pulse import PulseSource
    from deskcast.errors import DeviceError

    src = PulseSource(parse("pulse:hub.monitor", Direction.SOURCE), FMT, 480, reconnect=False)
    with src:
        FakePaSimple.opened[0].fail_after = 0
        with pytest.raises(DeviceError, match="closed the stream"):
            src.read()


class FakeStream:
    def __init__(self, index: int, on: int, pid: int, media: str = "deskcast capture") -> None:
        self.index, self.source, self.sink = index, on, on
        self.proplist = {"media.name": media, "application.process.id": str(pid)}


class FakeDevice:
    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name


class FakeServer:
    """What StreamKeeper.check asks pulsectl."""

    def __init__(self) -> None:
        import os

        self.streams = [FakeStream(7, 2, os.getpid()), FakeStream(8, 1, 1)]
        self.devices = [FakeDevice(1, "mic"), FakeDevice(2, "hub.monitor")]
        self.moves: list[tuple[int, int]] = []

    def source_output_list(self) -> list[FakeStream]:
        return self.streams

    def source_list(self) -> list[FakeDevice]:
        return self.devices

    def source_output_move(self, index: int, target: int) -> None:
        self.moves.append((index, target))
        next(s for s in self.streams if s.index == index).source = target


def test_stream_moved_off_its_device_is_silenced_and_reopened_when_it_returns(
        caplog: pytest.LogCaptureFixture) -> None:
    """The server moved our capture to the microphone when the hub disappeared: its audio
    must not be used; when the hub is back the audio thread is asked to reopen the stream on
    it (a fresh stream, not a move: PipeWire reports a move before its links follow)."""
    from typing import Any, cast

    from deskcast.pulse import StreamKeeper

    keeper = StreamKeeper("source", "pulse:hub.monitor", "deskcast capture",
                          "capturing silence")
    keeper.device = "hub.monitor"
    server = FakeServer()
    pulse = cast(Any, server)
    assert keeper.check(pulse) and keeper.usable
    server.streams[0].source = 9  # being relinked (PipeWire): look again soon
    assert not keeper.check(pulse) and keeper.usable
    server.devices = [FakeDevice(1, "mic")]  # the hub is gone; we are on the mic now
    server.streams[0].source = 1
    assert keeper.check(pulse)
    assert not keeper.usable and not keeper.take_reopen()
    server.devices.append(FakeDevice(5, "hub.monitor"))  # made again (a new index)
    assert not keeper.check(pulse)  # look again soon: the reopen is pending
    assert not keeper.usable and server.moves == []
    assert keeper.take_reopen() and keeper.retry_due() and not keeper.take_reopen()
    keeper.back("capturing again", reopened=True)
    assert keeper.usable
    server.streams[0].source = 5
    assert keeper.check(pulse) and keeper.usable
    assert [r.getMessage() for r in caplog.records] == [
        "pulse:hub.monitor lost: the server moved the stream to mic; capturing silence and "
        "reconnecting",
        caplog.records[1].getMessage()]
    assert caplog.records[1].getMessage().startswith("pulse:hub.monitor is back after ")


def test_stream_put_back_by_the_server_itself_is_still_reopened() -> None:
    """A server that relinks the stream to the returning device by itself: the stream is
    reopened all the same, since only a fresh stream is sure to be linked to it alone; a look
    taken before that reopen and answered after it is not acted on."""
    from typing import Any, cast

    from deskcast.pulse import StreamKeeper

    keeper = StreamKeeper("source", "pulse:hub.monitor", "deskcast capture",
                          "capturing silence")
    keeper.device = "hub.monitor"
    server = FakeServer()
    pulse = cast(Any, server)
    server.devices = [FakeDevice(1, "mic")]
    server.streams[0].source = 1
    keeper.check(pulse)
    server.devices.append(FakeDevice(5, "hub.monitor"))
    server.streams[0].source = 5  # relinked by the server
    keeper.check(pulse)
    assert not keeper.usable and keeper.take_reopen()

    class Racing(FakeServer):
        def source_list(self) -> list[FakeDevice]:
            keeper.back("capturing again", reopened=True)  # the audio thread, meanwhile
            return [FakeDevice(1, "mic")]

    racing = Racing()
    racing.streams[0].source = 1
    assert keeper.check(cast(Any, racing)) and keeper.usable


def test_pulse_source_reopens_on_its_device_when_the_watcher_asks(
        fake_pulse: FakeClock) -> None:
    from deskcast.capture.pulse import PulseSource

    src = PulseSource(parse("pulse:hub.monitor", Direction.SOURCE), FMT, 480, reconnect=True)
    src.stream.keeper.clock = fake_pulse
    src.open()
    try:
        src.stream.keeper.lose("the server moved the stream to mic")
        src.stream.keeper._misrouted = True
        assert src.read().data == bytes(1920)  # the wrong device's audio is not used
        src.stream.keeper._reopen_wanted = True
        block = src.read()
    finally:
        src.close()
    assert len(FakePaSimple.opened) == 2 and FakePaSimple.opened[0].closed
    assert block.data == b"\x01" * 1920 and src.stream.keeper.usable
