"""AAC in ADTS frames (``/stream.aac``) and HLS packed-audio segments (``serve --hls DIR``):
headers ffmpeg agrees with, every frame a join point, and a playlist ffmpeg plays at the right
pitch, across an encoder restart."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskcast.encode.aac import (
    ADTS_HEADER_BYTES,
    AacEncoder,
    adts_header,
    parse_adts_header,
    split_adts,
)
from deskcast.errors import ConfigError
from deskcast.http.relay.hls import PLAYLIST, HlsWriter, timestamp_tag
from deskcast.media import AudioFormat, PcmBlock

FMT = AudioFormat()
HZ = 1000.0


def tone_pcm(seconds: float, hz: float = HZ) -> bytes:
    t = np.arange(round(FMT.rate * seconds)) / FMT.rate
    x = 10 ** (-12 / 20) * np.sin(2 * np.pi * hz * t)
    return (np.repeat(x[:, None], 2, axis=1) * 32767).astype("<i2").tobytes()


def encode(seconds: float, hz: float = HZ, block_bytes: int = 7680) -> list[bytes]:
    enc = AacEncoder(FMT, 128)
    pcm = tone_pcm(seconds, hz)
    frames: list[bytes] = []
    for i in range(0, len(pcm), block_bytes):
        frames += enc.encode(PcmBlock(pcm[i:i + block_bytes], FMT, 0))
    return frames + enc.flush()


def ffmpeg_decode(*args: str, data: bytes = b"") -> npt.NDArray[np.float32]:
    out = subprocess.run(["ffmpeg", "-v", "error", *args, "-f", "f32le", "-ac", "1", "-ar",
                          "48000", "pipe:1"], input=data, capture_output=True, timeout=60,
                         check=True)
    return np.frombuffer(out.stdout, dtype=np.float32)


def pitch(x: npt.NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * FMT.rate / len(x))


def test_adts_headers_round_trip_and_ffmpeg_decodes_a_stream_joined_at_any_frame() -> None:
    frames = encode(3.0)
    assert len(frames) >= 3 * 48000 // 1024
    for frame in frames:
        h = parse_adts_header(frame)
        assert (h.object_type, h.sample_rate, h.channels) == (2, 48000, 2)
        assert h.frame_length == len(frame) and h.header_length == ADTS_HEADER_BYTES
    joined = b"".join(frames[37:])  # a listener who joins at frame 37
    x = ffmpeg_decode("-f", "aac", "-i", "pipe:0", data=joined)
    assert len(x) == pytest.approx((len(frames) - 37) * 1024, abs=2048)
    assert pitch(x[4800:]) == pytest.approx(HZ, abs=2.0)
    # a -15 dBFS RMS tone in both channels; ffmpeg downmixes to mono at +3 dB
    assert 20 * np.log10(np.sqrt(np.mean(x[4800:] ** 2))) == pytest.approx(-12.0, abs=1.0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=20))
def test_split_adts_finds_the_frames_after_garbage_and_keeps_the_partial_tail(
        junk: bytes, cut: int) -> None:
    frames = [adts_header(n, 48000, 2) + bytes([0x11]) * n for n in (100, 7, 300)]
    data = b"".join(frames)
    got, rest = split_adts(junk.replace(b"\xff", b"\x00") + data[:len(data) - cut])
    if cut == 0:
        assert got == frames and rest == b""
    else:
        assert got == frames[:2] and frames[2].startswith(rest)


def test_bad_settings_are_one_line_config_errors(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("AAC cannot carry 45000 Hz", lambda: AacEncoder(AudioFormat(45000, 2))),
        ("16 to 320 kbit/s", lambda: AacEncoder(FMT, 1000)),
        (r"0\.5 to 30 seconds", lambda: HlsWriter(tmp_path, 48000, segment_s=0.1)),
        ("cannot write there", lambda: HlsWriter(blocked / "hls", 48000).prepare()),
    ]
    for says, make in cases:
        with pytest.raises(ConfigError, match=says) as err:
            make()
        assert "\n" not in str(err.value)


def test_timestamp_tag_is_an_id3_priv_frame_with_the_33_bit_clock() -> None:
    tag = timestamp_tag((1 << 33) + 90000)
    assert tag[:3] == b"ID3" and tag[3] == 4 and tag[10:14] == b"PRIV"
    assert tag.index(b"com.apple.streaming.transportStreamTimestamp\0") == 20
    assert int.from_bytes(tag[-8:], "big") == 90000  # wrapped at 2**33
    assert int.from_bytes(tag[6:10], "big") == len(tag) - 10  # < 128: syncsafe = plain


def test_hls_folder_plays_in_ffmpeg_and_marks_an_encoder_restart(tmp_path: Path) -> None:
    folder = tmp_path / "hls"
    writer = HlsWriter(folder, 48000, segment_s=1.0, window=4)
    writer.prepare()
    data = b"".join(encode(4.5))
    for i in range(0, len(data), 999):  # cut anywhere
        writer.feed(data[i:i + 999])
    assert writer.written == 4  # 47 frames (1.003 s) per segment; the partial fifth waits
    playlist = (folder / PLAYLIST).read_text()
    assert "#EXT-X-TARGETDURATION:1\n" in playlist and "#EXT-X-MEDIA-SEQUENCE:1\n" in playlist
    assert playlist.count("#EXTINF:1.00267,") == 4 and "DISCONTINUITY" not in playlist
    for n in range(1, 5):
        segment = (folder / f"{n:08d}.aac").read_bytes()
        assert segment.startswith(timestamp_tag((n - 1) * 47 * 1024 * 90000 // 48000))
    # a live playlist: from its first segment, for the length of the four
    x = ffmpeg_decode("-live_start_index", "0", "-i", str(folder / PLAYLIST), "-t", "3.9")
    assert len(x) == pytest.approx(3.9 * 48000, abs=2048)
    assert pitch(x[4800:]) == pytest.approx(HZ, abs=2.0)

    writer.restart()  # the encoder stops: the partial fifth becomes a short segment ...
    assert writer.written == 5 and writer.segments[-1].duration_s < 0.6
    for frame in encode(5.5, hz=500.0):  # ... and a new one follows a discontinuity
        writer.feed(frame)
    playlist = (folder / PLAYLIST).read_text()
    assert writer.written == 10 and "#EXT-X-MEDIA-SEQUENCE:7\n" in playlist
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in playlist  # segment 6's scrolled out
    kept = sorted(p.name for p in folder.glob("*.aac"))
    assert kept[0] == "00000004.aac" and kept[-1] == "00000010.aac"  # 4 listed + 3 kept
    assert not list(folder.glob(".*.part"))
    writer.finish()  # serve stops: the partial segment and the end of the list
    assert writer.written == 11
    assert (folder / PLAYLIST).read_text().endswith("00000011.aac\n#EXT-X-ENDLIST\n")
    y = ffmpeg_decode("-live_start_index", "0", "-i", str(folder / PLAYLIST))
    assert len(y) == pytest.approx(3 * 47 * 1024 + 24 * 1024, abs=3072)
    assert pitch(y[4800:]) == pytest.approx(500.0, abs=2.0)


def test_run_subscribes_again_after_the_stream_ended(tmp_path: Path) -> None:
    frames = encode(2.5)
    subscriptions = 0

    async def stream() -> AsyncGenerator[bytes]:
        nonlocal subscriptions
        subscriptions += 1
        for i in range(0, len(frames), 10):
            yield b"".join(frames[i:i + 10])

    async def main() -> None:
        writer = HlsWriter(tmp_path, 48000, segment_s=1.0)
        task = asyncio.create_task(writer.run(stream))
        await asyncio.sleep(0.8)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert writer.written == 6  # two whole segments per subscription, and a short one
        playlist = (tmp_path / PLAYLIST).read_text()
        assert playlist.count("#EXT-X-DISCONTINUITY\n") == 1  # the second subscription
        assert playlist.endswith("#EXT-X-ENDLIST\n")

    asyncio.run(main())
    assert subscriptions == 2
