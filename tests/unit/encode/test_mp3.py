from __future__ import annotations

import io
import itertools
from functools import cache

import av
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskcast.encode import mp3
from deskcast.encode.mp3 import (
    Mp3Encoder,
    parse_frame_header,
    side_info_main_data_begin,
    split_frames,
)
from deskcast.errors import ConfigError
from deskcast.http.streams import Mp3Stream
from deskcast.media import AudioFormat, PcmBlock, SampleFormat
from rig.tools import missing_tool

STEREO = AudioFormat()
PEAK = 10 ** (-12 / 20)  # -12 dBFS
TONE_HZ = 1000.0


def tone(fmt: AudioFormat, seconds: float, hz: float = TONE_HZ) -> npt.NDArray[np.float64]:
    t = np.arange(round(fmt.rate * seconds)) / fmt.rate
    x = PEAK * np.sin(2 * np.pi * hz * t)
    return np.repeat(x[:, None], fmt.channels, axis=1)


def encode(x: npt.NDArray[np.floating], fmt: AudioFormat, sizes: tuple[int, ...] = (480, 1000, 7),
           **kwargs: object) -> tuple[list[bytes], list[bytes]]:
    """(frames returned by encode(), frames returned by flush())."""
    enc = Mp3Encoder(fmt, **kwargs)  # type: ignore[arg-type]
    out: list[bytes] = []
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= len(x):
            break
        out += enc.encode(PcmBlock.from_float(x[pos:pos + size], fmt, pos))
        pos += size
    return out, enc.flush()


@pytest.fixture(params=["lame", "pyav"])
def backend(request: pytest.FixtureRequest) -> str:
    """The system libmp3lame through ctypes (what serve uses) and PyAV's copy (the fallback)."""
    name: str = request.param
    if name == "lame" and mp3.lame_library() is None:
        missing_tool(f"no system libmp3lame ({mp3.LAME_LIBRARY}: Debian's libmp3lame0)")
    return name


@cache
def tone_frames(backend: str | None = None) -> tuple[list[bytes], list[bytes]]:
    return encode(tone(STEREO, 3.0), STEREO, backend=backend)


def decode(data: bytes) -> tuple[npt.NDArray[np.float32], int]:
    """(samples shaped (channels, n), rate) of an MP3 byte stream."""
    with av.open(io.BytesIO(data), "r", format="mp3") as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    return np.concatenate(chunks, axis=1).astype(np.float32), int(rate)


def peak_hz(x: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def rms_db(x: npt.NDArray[np.float32]) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64)))))


def test_every_item_is_one_whole_mpeg1_layer3_frame(backend: str) -> None:
    body, tail = tone_frames(backend)
    frames = body + tail
    assert len(body) > 100 and tail
    for frame in frames:
        h = parse_frame_header(frame)
        assert (h.version, h.layer, h.bitrate_kbps, h.sample_rate, h.channels) == (
            "1", 3, 128, 48000, 2)
        assert h.frame_length == len(frame) == 384  # 144 * 128000 / 48000, never padded
        assert h.samples == 1152


def test_frames_decode_to_the_tone(backend: str) -> None:
    body, tail = tone_frames(backend)
    pcm, rate = decode(b"".join(body + tail))
    assert rate == 48000 and pcm.shape[0] == 2
    # Encoder delay and the padded last frame add a little, never take away.
    assert 3.0 <= pcm.shape[1] / rate < 3.0 + 3 * 1152 / rate
    middle = pcm[:, rate // 2:rate * 5 // 2]
    for channel in middle:
        assert abs(peak_hz(channel, rate) - TONE_HZ) < 2
        assert rms_db(channel) == pytest.approx(-15.0, abs=0.5)  # sine: peak - 3.01 dB


def test_reservoir_is_off_every_frame_stands_alone(backend: str) -> None:
    body, tail = tone_frames(backend)
    assert all(side_info_main_data_begin(f) == 0 for f in body + tail)
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, (STEREO.rate, 2))
    noisy, noisy_tail = encode(noise, STEREO, backend=backend)
    assert all(side_info_main_data_begin(f) == 0 for f in noisy + noisy_tail)


def test_reservoir_check_can_fail(backend: str) -> None:
    """Control: the same encoder with the reservoir on borrows bytes for noise."""
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, (STEREO.rate, 2))
    body, tail = encode(noise, STEREO, reservoir=True, backend=backend)
    assert max(side_info_main_data_begin(f) for f in body + tail) > 0


def test_any_frame_is_a_join_point() -> None:
    body, _ = tone_frames()
    joined = body[37:]
    pcm, rate = decode(b"".join(joined))
    assert pcm.shape[1] == len(joined) * 1152
    settled = pcm[:, 2 * 1152:]  # the first granule lacks its MDCT overlap
    for channel in settled:
        assert abs(peak_hz(channel, rate) - TONE_HZ) < 2
        assert rms_db(channel) == pytest.approx(-15.0, abs=0.5)


def test_bitrate_is_really_128k(backend: str) -> None:
    body, _ = tone_frames(backend)
    assert sum(map(len, body)) * 8 / (len(body) * 1152 / 48000) == 128000
    # Against the wall clock: what came out while 3 s went in (the encoder lags a frame or two).
    assert sum(map(len, body)) * 8 / 3.0 == pytest.approx(128000, rel=0.02)


@pytest.mark.parametrize("fmt, kbps", [
    (AudioFormat(44100, 2, SampleFormat.F32LE), 192),
    (AudioFormat(32000, 1, SampleFormat.S32LE), 64),
    (AudioFormat(48000, 1, SampleFormat.S16LE), 96),
    (AudioFormat(48000, 2, SampleFormat.S32LE), 128),
    (AudioFormat(32000, 1, SampleFormat.F32LE), 64),
])
def test_other_rates_channels_and_sample_formats(fmt: AudioFormat, kbps: int,
                                                  backend: str) -> None:
    body, tail = encode(tone(fmt, 2.0), fmt, sizes=(4096,), bitrate_kbps=kbps, backend=backend)
    frames = body + tail
    headers = [parse_frame_header(f) for f in frames]
    assert {(h.sample_rate, h.channels, h.bitrate_kbps) for h in headers} == {
        (fmt.rate, fmt.channels, kbps)}
    assert [h.frame_length for h in headers] == [len(f) for f in frames]
    assert all(side_info_main_data_begin(f) == 0 for f in frames)
    seconds = len(frames) * 1152 / fmt.rate
    assert sum(map(len, frames)) * 8 / seconds == pytest.approx(kbps * 1000, rel=0.01)
    pcm, rate = decode(b"".join(frames))
    assert pcm.shape[0] == fmt.channels
    assert abs(peak_hz(pcm[0, rate // 2:rate * 3 // 2], rate) - TONE_HZ) < 2


def test_encoder_properties_and_small_blocks(backend: str) -> None:
    enc = Mp3Encoder(STEREO, backend=backend)
    assert enc.backend == backend
    assert enc.frame_samples == 1152
    assert enc.frame_duration_s == pytest.approx(0.024)
    assert enc.encode(PcmBlock(b"", STEREO)) == []
    assert enc.encode(PcmBlock(bytes(4 * 1000), STEREO)) == []  # not a whole frame of PCM yet
    with pytest.raises(ValueError):
        enc.encode(PcmBlock(bytes(4), AudioFormat(44100)))
    assert enc.flush()
    assert enc.flush() == []
    with pytest.raises(ValueError):
        enc.encode(PcmBlock(bytes(4), STEREO))


@pytest.mark.parametrize("fmt, kbps, match", [
    (AudioFormat(22050), 128, "22050 Hz"),
    (AudioFormat(96000), 128, "96000 Hz"),
    (AudioFormat(48000, 6), 128, "not 6"),
    (STEREO, 100, "100 kbit/s"),
    (STEREO, 384, "384 kbit/s"),
])
def test_config_errors(fmt: AudioFormat, kbps: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        Mp3Encoder(fmt, bitrate_kbps=kbps)
    assert "\n" not in str(err.value)


# --- the parser -------------------------------------------------------------------------------

def test_parse_frame_header_fields() -> None:
    # MPEG-1 Layer III, no CRC, 128 kbit/s, 44100 Hz, padded, joint stereo
    h = parse_frame_header(bytes([0xFF, 0xFB, 0x92, 0x44]))
    assert (h.version, h.layer, h.bitrate_kbps, h.sample_rate, h.padding, h.channels,
            h.protected, h.frame_length) == ("1", 3, 128, 44100, True, 2, False, 418)
    # MPEG-2 Layer III, CRC, 64 kbit/s, 24000 Hz, mono: 72 * 64000 / 24000 = 192
    h = parse_frame_header(bytes([0xFF, 0xF2, 0x84, 0xC0]))
    assert (h.version, h.layer, h.bitrate_kbps, h.sample_rate, h.channels, h.protected,
            h.frame_length, h.samples) == ("2", 3, 64, 24000, 1, True, 192, 576)
    # MPEG-1 Layer II, 192 kbit/s, 48000 Hz: 144 * 192000 / 48000 = 576
    assert parse_frame_header(bytes([0xFF, 0xFD, 0xA4, 0x00])).frame_length == 576
    # MPEG-1 Layer I, 384 kbit/s, 48000 Hz: 12 * 384000 / 48000 * 4 = 384
    assert parse_frame_header(bytes([0xFF, 0xFF, 0xC4, 0x00])).frame_length == 384


@pytest.mark.parametrize("header", [
    b"\xff\xfb\x94",  # too short
    b"ID3\x04",  # no sync
    b"\xfe\xfb\x94\x64",  # no sync
    b"\xff\xeb\x94\x64",  # reserved version
    b"\xff\xf9\x94\x64",  # reserved layer
    b"\xff\xfb\x04\x64",  # free format
    b"\xff\xfb\xf4\x64",  # bitrate index 15
    b"\xff\xfb\x9c\x64",  # reserved sample rate
    b"\xff\xfb\x94\x66",  # reserved emphasis
])
def test_parse_frame_header_rejects_bad_headers(header: bytes) -> None:
    with pytest.raises(ValueError):
        parse_frame_header(header)


def test_main_data_begin_reads_the_side_info() -> None:
    frame = bytearray(tone_frames()[0][0])
    frame[4], frame[5] = 0b10110011, 0b1 << 7  # 9 bits: 101100111
    assert side_info_main_data_begin(bytes(frame)) == 0b101100111
    with pytest.raises(ValueError):  # Layer II has no side information
        side_info_main_data_begin(bytes([0xFF, 0xFD, 0xA4, 0x00]) + bytes(572))


def test_split_frames_resyncs_and_keeps_the_partial_tail() -> None:
    frames = tone_frames()[0][:10]
    garbage = b"garbage\xff\xfb\x94\x64junk\xff\xff" + b"\xff\xfb\x94\x64" + bytes(20)
    stream = garbage + b"".join(frames[:5]) + b"\x00\xffnoise" + b"".join(frames[5:])
    partial = frames[0][:100]
    got, rest = split_frames(stream + partial)
    assert got == frames
    assert rest == partial
    assert split_frames(b"".join(frames)) == (frames, b"")
    assert split_frames(b"") == ([], b"")
    assert split_frames(b"no sync at all") == ([], b"")
    assert split_frames(frames[0][:3]) == ([], frames[0][:3])


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10 * 384), max_size=20))
def test_split_frames_streaming_any_chunking(cuts: list[int]) -> None:
    frames = tone_frames()[0][:10]
    stream = b"".join(frames)
    edges = [0, *sorted(cuts), len(stream)]
    got: list[bytes] = []
    rest = b""
    for a, b in itertools.pairwise(edges):
        out, rest = split_frames(rest + stream[a:b])
        got += out
    assert got == frames and rest == b""


def test_without_a_system_libmp3lame_pyav_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp3, "lame_library", lambda: None)
    assert Mp3Encoder(STEREO).backend == "pyav"
    with pytest.raises(ConfigError, match="libmp3lame"):
        Mp3Encoder(STEREO, backend="lame")


def test_blocks_in_another_sample_format_are_converted() -> None:
    s32 = AudioFormat(48000, 2, SampleFormat.S32LE)
    enc = Mp3Encoder(STEREO)
    x = tone(s32, 1.0)
    frames = enc.encode(PcmBlock.from_float(x, s32)) + enc.flush()
    pcm, rate = decode(b"".join(frames))
    assert abs(peak_hz(pcm[0, rate // 4:], rate) - TONE_HZ) < 2
    assert rms_db(pcm[0, rate // 4:rate * 3 // 4]) == pytest.approx(-15.0, abs=0.5)


@pytest.mark.parametrize("block_frames", [480, 1920, 4800])
def test_serve_mp3_chunks_are_five_frames_whatever_the_block_size(block_frames: int) -> None:
    stream = Mp3Stream(STEREO, 128)
    x = tone(STEREO, 3.0)
    chunks = [c for pos in range(0, len(x), block_frames)
              for c in stream.encode(PcmBlock.from_float(x[pos:pos + block_frames], STEREO, pos))]
    assert len(chunks) >= 23
    assert all(len(c.data) == 5 * 384 and c.duration_s == pytest.approx(0.12) for c in chunks)
    assert [c.pts_s for c in chunks] == pytest.approx([0.12 * i for i in range(len(chunks))])
