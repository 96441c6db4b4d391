"""How long an Opus packet plays, from its TOC byte as libopus reads it: the receiver's and the
Ogg muxer's one answer, for packets libopus made and for garbage."""

from __future__ import annotations

import numpy as np
import pytest

from deskcast.encode.opus import FRAME_MS, OpusEncoder
from deskcast.media import AudioFormat, PcmBlock, SampleFormat
from deskcast.opus_packet import CorruptPacket, packet_samples


def test_packet_samples_from_toc() -> None:
    assert packet_samples(bytes([(31 << 3) | 0])) == 960    # CELT 20 ms, one frame
    assert packet_samples(bytes([(28 << 3) | 1, 0])) == 240  # CELT 2.5 ms, two frames
    assert packet_samples(bytes([(1 << 3) | 3, 3])) == 2880   # SILK 20 ms, three frames
    with pytest.raises(ValueError):
        packet_samples(b"")


@pytest.mark.parametrize("frame_ms", FRAME_MS)
def test_a_packet_the_encoder_made_plays_its_frame(frame_ms: float) -> None:
    fmt = AudioFormat(48000, 2, SampleFormat.S16LE)
    enc = OpusEncoder(fmt, frame_ms=frame_ms)
    frames = fmt.frames_for_ms(frame_ms)
    t = np.arange(frames) / fmt.rate
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    packet = enc.encode(PcmBlock(np.repeat(tone, 2).tobytes(), fmt))
    assert packet_samples(packet) == frames
    assert packet_samples(packet, 16000) == frames // 3  # counted at the decoder's rate


@pytest.mark.parametrize("packet, why", [
    (b"", "empty"),
    (bytes([(31 << 3) | 3]), "code 3 without its frame count"),
    (bytes([(31 << 3) | 3, 0]), "zero frames"),
    (bytes([(31 << 3) | 3, 7]), "140 ms: seven 20 ms frames"),
    (bytes([(3 << 3) | 3, 3]), "180 ms: three 60 ms SILK frames"),
])
def test_a_malformed_packet_is_refused_as_corrupt(packet: bytes, why: str) -> None:
    with pytest.raises(CorruptPacket):
        packet_samples(packet)


def test_the_longest_packet_is_120_ms() -> None:
    assert packet_samples(bytes([(31 << 3) | 3, 6])) == 5760  # six 20 ms frames
    assert packet_samples(bytes([(3 << 3) | 1])) == 5760      # two 60 ms SILK frames
