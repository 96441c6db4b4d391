"""The hand-written Ogg/Opus muxer: checksums ffmpeg agrees with, whole packets per page, header
pages apart, and a stream joined at any page that ffmpeg decodes to the right tone."""

from __future__ import annotations

import subprocess

import numpy as np
import numpy.typing as npt
import pytest

from deskcast.encode.ogg import (
    MAX_SEGMENTS,
    OggOpusMuxer,
    lacing,
    make_page,
    ogg_crc,
    parse_pages,
)
from deskcast.http.streams import OggOpusStream
from deskcast.media import AudioFormat, PcmBlock
from rig.signals import dominant_frequency, level_db

STEREO = AudioFormat()
TONE_HZ = 1000.0


def tone_blocks(seconds: float, block_frames: int = 480) -> list[PcmBlock]:
    n = round(STEREO.rate * seconds)
    t = np.arange(n) / STEREO.rate
    x = 10 ** (-12 / 20) * np.sin(2 * np.pi * TONE_HZ * t)
    x2 = np.repeat(x[:, None], 2, axis=1)
    return [PcmBlock.from_float(x2[i:i + block_frames], STEREO, i)
            for i in range(0, n - block_frames + 1, block_frames)]


def ffmpeg_decode(data: bytes) -> npt.NDArray[np.float64]:
    out = subprocess.run(["ffmpeg", "-v", "error", "-f", "ogg", "-i", "pipe:0", "-f", "f32le",
                          "-ac", "2", "-ar", "48000", "pipe:1"], input=data,
                         capture_output=True, check=True, timeout=30)
    assert out.stderr == b"", out.stderr.decode()
    return np.frombuffer(out.stdout, dtype=np.float32).reshape(-1, 2).astype(np.float64)


def test_crc_matches_pages_written_by_ffmpeg() -> None:
    data = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                           "sine=frequency=440:duration=1", "-c:a", "libopus", "-f", "ogg",
                           "pipe:1"], capture_output=True, check=True, timeout=30).stdout
    pages, rest = parse_pages(data)  # raises on any checksum mismatch
    assert rest == b"" and len(pages) >= 3
    assert pages[0].bos and pages[0].packets[0].startswith(b"OpusHead")
    assert pages[-1].eos
    assert ogg_crc(b"") == 0
    corrupt = bytearray(data)
    corrupt[40] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        parse_pages(bytes(corrupt))


def test_lacing_and_segment_limit() -> None:
    assert lacing(0) == b"\x00"
    assert lacing(254) == b"\xfe"
    assert lacing(255) == b"\xff\x00"  # a multiple of 255 needs a terminating 0
    assert lacing(600) == b"\xff\xff\x5a"
    with pytest.raises(ValueError, match="segments"):
        make_page([b"x"] * (MAX_SEGMENTS + 1), serial=1, sequence=0, granule=0)
    page = make_page([b"a" * 255, b"", b"b"], serial=7, sequence=3, granule=99)
    (parsed,), rest = parse_pages(page)
    assert rest == b""
    assert parsed.packets == [b"a" * 255, b"", b"b"] and parsed.complete_last
    assert (parsed.serial, parsed.sequence, parsed.granule) == (7, 3, 99)


def test_muxer_splits_many_packets_over_pages_without_breaking_one() -> None:
    mux = OggOpusMuxer(2, pre_skip=312, serial=5)
    packet = bytes([31 << 3]) + b"\x55" * 600  # 3 segments each
    data = mux.pages([packet] * 100)
    pages, rest = parse_pages(data)
    assert rest == b"" and len(pages) == 2  # 85 packets fill 255 segments
    assert [len(p.packets) for p in pages] == [85, 15]
    assert all(p.complete_last for p in pages)
    assert [p.sequence for p in pages] == [2, 3]
    assert pages[-1].granule == 100 * 960 == mux.granule


@pytest.mark.parametrize("block_frames", [480, 1920, 4800])  # 10 ms, serve's 40 ms, 100 ms
def test_stream_chunks_are_whole_pages_and_any_page_is_a_join_point(block_frames: int) -> None:
    enc = OggOpusStream(STEREO, 96)
    header, _ = parse_pages(enc.header)
    assert [p.sequence for p in header] == [0, 1] and header[0].bos
    assert header[0].packets[0][:8] == b"OpusHead" and header[1].packets[0][:8] == b"OpusTags"
    assert all(p.granule == 0 for p in header)
    chunks = [c for b in tone_blocks(4.0, block_frames) for c in enc.encode(b)]
    assert len(chunks) == 40
    granules = []
    for chunk in chunks:
        pages, rest = parse_pages(chunk.data)
        assert rest == b"" and all(p.complete_last for p in pages)
        assert chunk.duration_s == pytest.approx(0.1)
        granules += [p.granule for p in pages]
    assert granules == [960 * 5 * (i + 1) for i in range(40)]
    # A listener joining at chunk 25: header pages, then mid-stream pages.
    late = enc.header + b"".join(c.data for c in chunks[25:])
    x = ffmpeg_decode(late)
    assert len(x) / 48000 == pytest.approx(1.5, abs=0.05)
    assert dominant_frequency(x[4800:], 48000) == pytest.approx(TONE_HZ, abs=2.0)
    assert level_db(x[4800:]) == pytest.approx(-15.0, abs=1.5)


def test_a_new_stream_gets_a_new_serial() -> None:
    serials = {OggOpusStream(STEREO, 96).muxer.serial for _ in range(8)}
    assert len(serials) >= 7
