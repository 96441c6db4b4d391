from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from deskcast.endpoints import Direction, parse
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock, SampleFormat
from deskcast.playback import SinkClosedError, make_sink
from deskcast.playback.stdout import StdoutSink

FMT = AudioFormat()


def fake_pulse_server(monkeypatch: pytest.MonkeyPatch, stream: type) -> None:
    """pasimple streams of class ``stream``, and a server whose one sink is ``out``."""
    import contextlib

    import pasimple

    from deskcast import soundserver

    monkeypatch.setattr(pasimple, "PaSimple", stream)
    monkeypatch.setattr(soundserver, "connect", lambda: contextlib.nullcontext(None))
    monkeypatch.setattr(soundserver, "sinks", lambda pulse, hub: [
        soundserver.Device("out", "out")])


def ramp_block(pts: int = 0, fmt: AudioFormat = FMT) -> PcmBlock:
    x = np.linspace(-0.5, 0.5, 480 * fmt.channels).reshape(480, fmt.channels)
    return PcmBlock.from_float(x, fmt, pts)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
@pytest.mark.parametrize("sample", list(SampleFormat))
def test_file_sink_writes_valid_files(tmp_path: Path, ext: str, sample: SampleFormat) -> None:
    fmt = AudioFormat(48000, 2, sample)
    path = tmp_path / f"out{ext}"
    with make_sink(f"file:{path}", fmt, 480) as sink:
        for i in range(10):
            sink.write(ramp_block(i * 480, fmt))
    data, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 48000 and data.shape == (4800, 2)
    assert np.allclose(data[:480], ramp_block(0, fmt).as_float(), atol=1e-4)


def test_raw_file_sink(tmp_path: Path) -> None:
    path = tmp_path / "out.raw"
    block = ramp_block()
    with make_sink(str(path), FMT, 480) as sink:
        sink.write(block)
    assert path.read_bytes() == block.data


@pytest.mark.parametrize(
    "target, message",
    [("out.mp3", r"cannot write \.mp3: use \.wav, \.flac, \.raw, \.pcm"),
     ("nodir/out.wav", "folder .*nodir does not exist")],
)
def test_file_sink_errors(tmp_path: Path, target: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        make_sink(f"file:{tmp_path / target}", FMT, 480).open()


def test_stdout_sink_reports_a_closed_reader() -> None:
    r, w = os.pipe()
    os.close(r)
    with os.fdopen(w, "wb") as stream:
        sink = StdoutSink(parse("-", Direction.SINK), FMT, 480, stream=stream)
        with pytest.raises(SinkClosedError):
            for _ in range(100):
                sink.write(ramp_block())


def test_stdout_sink_refuses_a_terminal() -> None:
    class Tty(io.BytesIO):
        def isatty(self) -> bool:
            return True

    with pytest.raises(EndpointError, match="refusing to write raw audio to a terminal"):
        StdoutSink(parse("-", Direction.SINK), FMT, 480, stream=Tty()).open()


def test_pulse_sink_drops_audio_at_real_time_until_it_is_back(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The sound server went away under a playing pulse sink: one warning, the audio is
    dropped at real time (the pump must not spin), the stream is reopened, one line more."""

    import pasimple

    from deskcast import reconnect
    from deskcast.pacing import Pacer
    from deskcast.playback import pulse as pulse_sink
    from deskcast.pulse import StreamKeeper

    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    streams: list[FakeStream] = []
    refuse = [2]

    class FakeStream:
        def __init__(self, *args: object, **kwargs: object) -> None:
            if refuse[0] and streams:
                refuse[0] -= 1
                raise pasimple.PaSimpleError("Error while creating stream: 6")
            self.written: list[bytes] = []
            self.dead = False
            streams.append(self)

        def write(self, data: bytes) -> None:
            if self.dead:
                raise pasimple.PaSimpleError("Could not write audio, error code: 11")
            self.written.append(data)

        def drain(self) -> None:
            pass

        def close(self) -> None:
            pass

    fake_pulse_server(monkeypatch, FakeStream)
    monkeypatch.setattr(reconnect, "Pacer",
                        lambda rate: Pacer(rate, clock=lambda: now[0], sleep=sleep))
    monkeypatch.setattr(StreamKeeper, "start_watch", lambda self, device: None)
    sink = pulse_sink.PulseSink(parse("pulse:out", Direction.SINK), FMT, 480)
    sink.stream.keeper.clock = lambda: now[0]
    sink.open()
    try:
        sink.write(ramp_block())
        streams[0].dead = True
        for i in range(250):  # 2.5 s
            sink.write(ramp_block(480 * (i + 1)))
    finally:
        sink.close()
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert messages[0] == ("pulse:out lost: the sound server closed the stream (was it "
                           "restarted?); dropping audio and reconnecting")
    assert messages[1].startswith("pulse:out is back after ") and len(messages) == 2
    assert len(streams) == 2
    dropped = 250 - len(streams[1].written)
    # Tries after 0.25 s (refused), 0.5 s more (refused), 1 s more: back after 1.75 s.
    assert dropped * 0.01 == pytest.approx(1.75, abs=0.015)
    assert sum(sleeps) == pytest.approx((dropped - 1) * 0.01, abs=0.011)
    assert streams[1].written[-1] == ramp_block(480 * 250).data


def test_pulse_sink_gives_libpulses_thread_the_audio_threads_priority(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread libpulse starts for a stream ('threaded-ml') wakes the audio thread when the
    server wants audio: the first write (from the audio thread) gives it that thread's
    SCHED_FIFO priority, once per stream; other threads started meanwhile keep theirs."""
    import threading

    from deskcast.playback import pulse as pulse_sink
    from deskcast.pulse import StreamKeeper

    class FakeStream:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.stop = threading.Event()
            self.threads = [self._start("threaded-ml"), self._start("other")]

        def _start(self, name: str) -> threading.Thread:
            named = threading.Event()

            def run() -> None:
                with open("/proc/thread-self/comm", "w") as f:
                    f.write(name)
                named.set()
                self.stop.wait(5)

            t = threading.Thread(target=run, daemon=True)
            t.start()
            named.wait(5)
            return t

        def write(self, data: bytes) -> None:
            pass

        def drain(self) -> None:
            pass

        def close(self) -> None:
            self.stop.set()

    raised: list[tuple[int | None, int, int]] = []
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_FIFO)
    monkeypatch.setattr(os, "sched_getparam", lambda pid: os.sched_param(80))
    monkeypatch.setattr(os, "sched_setscheduler", lambda pid, policy, param: raised.append(
        (pid, policy, param.sched_priority)))
    fake_pulse_server(monkeypatch, FakeStream)
    monkeypatch.setattr(StreamKeeper, "start_watch", lambda self, device: None)
    sink = pulse_sink.PulseSink(parse("pulse:out", Direction.SINK), FMT, 480)
    sink.open()
    try:
        first = sink.stream.handle
        sink.write(ramp_block())
        sink.write(ramp_block(480))
        assert raised == [(first.threads[0].native_id, os.SCHED_FIFO, 80)]
        sink.stream.drop()  # a reopened stream: its new thread is raised too
        sink.stream.keeper.lose("test")
        sink.stream.keeper.due_now()
        sink.write(ramp_block(960))
        assert sink.stream.handle is not first
        assert raised[1:] == [(sink.stream.handle.threads[0].native_id, os.SCHED_FIFO, 80)]
    finally:
        sink.close()


def test_pulse_sink_waits_for_room_before_the_next_block_is_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_for_room sleeps until what the server reports queued leaves room for a block (the
    last one written, at most the sink's block), at most 3/4 of that, and not while the
    stream is lost; the pump calls it before reading a source that is not clocked, and only
    then."""


    from deskcast.capture.tone import ToneSource
    from deskcast.playback import pulse as pulse_sink
    from deskcast.pulse import StreamKeeper
    from deskcast.pump import Pump

    queued_us = [0]

    class FakeStream:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def get_latency(self) -> int:
            return queued_us[0]

        def write(self, data: bytes) -> None:
            pass

        def drain(self) -> None:
            pass

        def close(self) -> None:
            pass

    fake_pulse_server(monkeypatch, FakeStream)
    monkeypatch.setattr(StreamKeeper, "start_watch", lambda self, device: None)
    sink = pulse_sink.PulseSink(parse("pulse:out", Direction.SINK), FMT, 240, buffer_ms=20)
    slept: list[float] = []
    sink.sleep = slept.append
    sink.open()
    try:
        sink.write(ramp_block())  # 480 frames: 10 ms
        queued = []
        for us in (9_000, 15_000, 17_000, 40_000):
            queued_us[0] = us
            queued.append(sink.wait_for_room())
        # Room for a 5 ms block (the sink's, shorter than the 10 ms written): 17 - (20 - 5) ms;
        # at most 3/4 of 5 ms. It tells what is queued after the sleep.
        assert slept == pytest.approx([0.002, 0.00375])
        assert queued == pytest.approx([0.009, 0.015, 0.015, 0.03625])
        sink.stream.keeper.lose("test")
        assert sink.wait_for_room() is None
        assert len(slept) == 2
    finally:
        sink.close()

    class Recording(pulse_sink.PulseSink):
        calls: list[str]

        def wait_for_room(self) -> float | None:
            self.calls.append("wait")
            return 0.025

        def write(self, block: PcmBlock) -> None:
            self.calls.append("write")

    for clocked, expected in ((False, ["wait", "write"] * 3), (True, ["write"] * 3)):
        rec = Recording(parse("pulse:out", Direction.SINK), FMT, 480)
        rec.calls = []
        source = ToneSource(parse("tone:440", Direction.SOURCE), FMT, 480)
        source.clocked = clocked
        source.pacer = None
        Pump(source, rec, max_frames=3 * 480).run()
        assert rec.calls == expected
        # the source is told what the sink had queued when it was read
        told = source.last_sink_timing
        assert (None if told is None else told.queued_s) == (None if clocked else 0.025)
