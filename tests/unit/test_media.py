from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deskcast.errors import ConfigError
from deskcast.media import (
    AudioFormat,
    PcmBlock,
    Reblocker,
    SampleFormat,
    convert,
    from_float,
    levels_db,
    to_float,
)

STEREO = AudioFormat()


def test_default_format_is_48k_stereo_s16() -> None:
    assert (STEREO.rate, STEREO.channels, STEREO.sample) == (48000, 2, SampleFormat.S16LE)
    assert STEREO.frame_bytes == 4
    assert STEREO.frames_for_ms(10) == 480
    assert STEREO.frames_for_ms(2.5) == 120


@pytest.mark.parametrize("rate, channels", [(7999, 2), (48000, 0), (48000, 9)])
def test_format_rejects_nonsense(rate: int, channels: int) -> None:
    with pytest.raises(ConfigError):
        AudioFormat(rate, channels)


def test_sample_format_parse() -> None:
    assert SampleFormat.parse("F32LE") is SampleFormat.F32LE
    with pytest.raises(ConfigError, match="s16le, s32le, f32le"):
        SampleFormat.parse("u8")


@pytest.mark.parametrize("sample", list(SampleFormat))
def test_float_roundtrip(sample: SampleFormat) -> None:
    x = np.linspace(-0.99, 0.99, 101, dtype=np.float32)
    y = to_float(from_float(x, sample), sample)
    assert np.max(np.abs(x - y)) < 1 / 32768 + 1e-7


def test_from_float_clips_instead_of_wrapping() -> None:
    y = from_float(np.array([1.5, -1.5, 1.0]), SampleFormat.S16LE)
    assert list(y) == [32767, -32768, 32767]


def test_convert_s16_stereo_to_f32_mono_and_back() -> None:
    left = np.full(10, 16384, dtype="<i2")
    right = np.full(10, -16384, dtype="<i2")
    stereo = np.stack([left, right], axis=1).tobytes()
    mono_f32 = AudioFormat(48000, 1, SampleFormat.F32LE)
    mono = np.frombuffer(convert(stereo, STEREO, mono_f32), dtype="<f4")
    assert np.allclose(mono, 0.0)
    up = convert(np.full(4, 0.5, dtype="<f4").tobytes(), mono_f32, STEREO)
    assert list(np.frombuffer(up, dtype="<i2")) == [16384] * 8


def test_convert_refuses_to_resample() -> None:
    with pytest.raises(ValueError, match="resample"):
        convert(b"\0" * 4, STEREO, AudioFormat(44100))


def test_block_views() -> None:
    x = np.zeros((480, 2), dtype=np.float32)
    x[:, 0] = 0.5
    block = PcmBlock.from_float(x, STEREO, pts=960)
    assert block.frames == 480 and block.pts == 960
    assert block.duration == pytest.approx(0.01)
    assert block.samples().shape == (480, 2)
    peak, _rms = levels_db(block)
    assert peak[0] == pytest.approx(-6.02, abs=0.01)
    assert peak[1] == -120.0


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=30))
def test_reblocker_emits_exact_blocks_in_order(chunk_sizes: list[int]) -> None:
    fmt = AudioFormat(48000, 2)
    total = sum(chunk_sizes) * fmt.frame_bytes
    data = (np.arange(total, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
    rb = Reblocker(fmt, 480)
    blocks: list[PcmBlock] = []
    pos = 0
    for n in chunk_sizes:
        blocks += rb.push(data[pos:pos + n * fmt.frame_bytes])
        pos += n * fmt.frame_bytes
    last = rb.flush()
    if last is not None:
        blocks.append(last)
    assert all(b.frames == 480 for b in blocks)
    assert [b.pts for b in blocks] == [i * 480 for i in range(len(blocks))]
    joined = b"".join(b.data for b in blocks)
    assert joined[:total] == data
    assert set(joined[total:]) <= {0}
    assert len(blocks) == -(-sum(chunk_sizes) // 480)


def test_reblocker_drops_a_torn_frame_at_flush() -> None:
    rb = Reblocker(STEREO, 4)
    assert rb.push(b"\1" * 6) == []
    last = rb.flush()
    assert last is not None and last.data == b"\1" * 4 + b"\0" * 12
    assert rb.flush() is None
