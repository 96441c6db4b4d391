"""AAC-LC in ADTS frames, for HTTP streaming (``/stream.aac``) and HLS packed-audio segments.

The encoder is ffmpeg's native AAC encoder through PyAV. Each encoded access unit (1024 samples)
is given a 7-byte ADTS header (ISO/IEC 13818-7 / 14496-3), which makes every frame a join point
a decoder can sync to on its own: the format Safari and iOS play over plain HTTP and that HLS
"packed audio" segments are made of. :func:`split_adts` is the parser that checks it and cuts an
ADTS byte stream back into frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from deskcast.encode.sync import split_synced
from deskcast.errors import ConfigError
from deskcast.media import AudioFormat, PcmBlock, Reblocker

logger = logging.getLogger(__name__)

FRAME_SAMPLES = 1024
"""PCM frames per AAC-LC access unit."""
ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)
"""The sampling_frequency_index table: an ADTS header can only say these rates."""
ADTS_HEADER_BYTES = 7
"""Without CRC (protection_absent = 1), as written here."""
_LC = 2
"""MPEG-4 audio object type of AAC-LC (the ADTS ``profile`` field holds it minus one)."""
_MAX_FRAME = (1 << 13) - 1
"""The 13-bit frame_length field, header included."""


@dataclass(frozen=True)
class AdtsHeader:
    object_type: int
    sample_rate: int
    channels: int
    frame_length: int
    """Bytes in the whole frame, header included."""
    header_length: int
    """7, or 9 with a CRC."""


def adts_header(payload_bytes: int, sample_rate: int, channels: int) -> bytes:
    """The 7-byte ADTS header for one AAC-LC access unit of ``payload_bytes``."""
    length = payload_bytes + ADTS_HEADER_BYTES
    if length > _MAX_FRAME:
        raise ValueError(f"an ADTS frame holds at most {_MAX_FRAME} bytes, not {length}")
    rate_index = ADTS_RATES.index(sample_rate)
    fullness = 0x7FF  # "variable bit rate": no buffer fullness signalled
    bits = (0xFFF << 44                  # syncword
            | 0 << 43 | 0 << 41          # MPEG-4, layer 0
            | 1 << 40                    # protection_absent: no CRC
            | (_LC - 1) << 38            # profile
            | rate_index << 34
            | 0 << 33                    # private bit
            | channels << 30             # channel_configuration
            | 0 << 26                    # original/copy, home, copyright bits
            | length << 13
            | fullness << 2
            | 0)                         # one raw data block in the frame
    return bits.to_bytes(ADTS_HEADER_BYTES, "big")


def parse_adts_header(data: bytes) -> AdtsHeader:
    """Parse the ADTS header at the start of ``data``; ValueError if it is not one."""
    if len(data) < ADTS_HEADER_BYTES:
        raise ValueError(f"an ADTS header is at least 7 bytes, got {len(data)}")
    if data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        raise ValueError("no ADTS sync")
    protected = not data[1] & 1
    object_type = (data[2] >> 6) + 1
    rate_index = (data[2] >> 2) & 0xF
    if rate_index >= len(ADTS_RATES):
        raise ValueError("reserved ADTS sampling frequency index")
    channels = ((data[2] & 1) << 2) | (data[3] >> 6)
    length = ((data[3] & 0b11) << 11) | (data[4] << 3) | (data[5] >> 5)
    header_length = 9 if protected else ADTS_HEADER_BYTES
    if length <= header_length:
        raise ValueError(f"ADTS frame length {length} is shorter than its header")
    return AdtsHeader(object_type, ADTS_RATES[rate_index], channels, length, header_length)


def _consistent(a: AdtsHeader, b: AdtsHeader) -> bool:
    return (a.object_type, a.sample_rate, a.channels) == (b.object_type, b.sample_rate,
                                                          b.channels)


def split_adts(data: bytes) -> tuple[list[bytes], bytes]:
    """Cut ``data`` into whole ADTS frames; returns (frames, remainder).

    Bytes that are not a frame are skipped; a frame is trusted right after one of the same
    profile, rate and channels, else confirmed by the header after it
    (:func:`deskcast.encode.sync.split_synced`). The remainder starts where a frame may begin
    that is not complete yet.
    """
    return split_synced(data, ADTS_HEADER_BYTES, parse_adts_header, _consistent)


class AacEncoder:
    """PCM blocks of any size in, ADTS frames of AAC-LC out (CBR-ish at ``bitrate_kbps``)."""

    def __init__(self, fmt: AudioFormat, bitrate_kbps: int = 128) -> None:
        if fmt.rate not in ADTS_RATES:
            raise ConfigError(f"AAC cannot carry {fmt.rate} Hz; use one of "
                              f"{', '.join(str(r) for r in ADTS_RATES[:6])} Hz")
        if fmt.channels not in (1, 2):
            raise ConfigError(f"AAC here is mono or stereo, not {fmt.channels} channels")
        if not 16 <= bitrate_kbps <= 320:
            raise ConfigError(f"AAC bitrate {bitrate_kbps} kbit/s is out of range: "
                              "use 16 to 320 kbit/s (128 is a good choice for music)")
        self.fmt = fmt
        self.bitrate_kbps = bitrate_kbps
        layout = "stereo" if fmt.channels == 2 else "mono"
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = fmt.rate
        ctx.layout = layout
        ctx.format = "fltp"
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.open()
        self._ctx = ctx
        self._layout = layout
        self._reblocker = Reblocker(fmt, FRAME_SAMPLES)
        self._pts = 0

    @property
    def frame_duration_s(self) -> float:
        return FRAME_SAMPLES / self.fmt.rate

    def describe(self) -> str:
        return f"AAC-LC {self.bitrate_kbps} kbit/s {self.fmt.rate} Hz {self._layout} (ADTS)"

    def encode(self, block: PcmBlock) -> list[bytes]:
        """The ADTS frames completed by ``block`` (the encoder lags by a frame or two)."""
        out: list[bytes] = []
        for pcm in self._reblocker.push(block.data):
            out += self._encode_unit(pcm)
        return out

    def flush(self) -> list[bytes]:
        """The frames still inside the encoder (the last partial block padded with silence)."""
        pcm = self._reblocker.flush()
        out = self._encode_unit(pcm) if pcm is not None else []
        return out + self._wrap(self._ctx.encode(None))

    def _encode_unit(self, pcm: PcmBlock) -> list[bytes]:
        planar = np.ascontiguousarray(pcm.as_float().T, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=self._layout)
        frame.sample_rate = self.fmt.rate
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return self._wrap(self._ctx.encode(frame))

    def _wrap(self, packets: list[av.Packet[Any]]) -> list[bytes]:
        frames = []
        for packet in packets:
            payload = bytes(packet)
            frames.append(adts_header(len(payload), self.fmt.rate, self.fmt.channels) + payload)
        return frames
