"""What an Opus packet says about itself: how long it plays, from its TOC byte (RFC 6716
section 3.1), as libopus reads it. One answer for the receiver (outside data: anything may
arrive, a bad packet raises :class:`CorruptPacket` and nothing else) and the Ogg muxer."""

from __future__ import annotations

import opuslib_next as opus
import opuslib_next.api.decoder as opus_decoder_api

OPUS_RATE = 48000
"""The rate Opus counts time in, whatever the rate it is decoded at."""
MAX_FRAMES_48K = 5760
"""120 ms at 48 kHz: the longest Opus packet."""


class CorruptPacket(ValueError):  # noqa: N818 - reads better at the call site
    """An Opus packet libopus (or the TOC check) refuses."""


def packet_samples(payload: bytes, rate: int = OPUS_RATE) -> int:
    """How many samples at ``rate`` an Opus packet decodes to.

    :class:`CorruptPacket` for an empty packet, a code-3 packet without its frame count, one of
    zero frames or one longer than 120 ms.
    """
    if not payload:
        raise CorruptPacket("empty Opus packet")
    frames: int = opus_decoder_api.libopus_packet_get_nb_frames(payload, len(payload))
    if frames < 0:
        raise CorruptPacket(f"Opus packet without a frame count: {opus.OpusError(frames)}")
    if frames == 0:
        raise CorruptPacket("Opus packet with zero frames")
    per_frame: int = opus_decoder_api.libopus_packet_get_samples_per_frame(payload, OPUS_RATE)
    total = per_frame * frames
    if total > MAX_FRAMES_48K:
        raise CorruptPacket(f"Opus packet longer than 120 ms ({total} samples)")
    return total * rate // OPUS_RATE
