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
