"""Opus encoding through libopus (opuslib-next): one PCM block of ``frame_ms`` in, one packet out.

Unlike trx's ``-b`` (only a cap on the packet size), ``bitrate_kbps`` is what the encoder really
produces: constrained VBR holds the average to it, ``cbr=True`` makes every packet that size.
"""

from __future__ import annotations

import logging

import opuslib_next as opus

from deskcast.errors import ConfigError
from deskcast.media import AudioFormat, PcmBlock, SampleFormat, convert

logger = logging.getLogger(__name__)

FRAME_MS = (2.5, 5.0, 10.0, 20.0, 40.0, 60.0)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
APPLICATIONS = {
    "audio": opus.APPLICATION_AUDIO,
    "voip": opus.APPLICATION_VOIP,
    "lowdelay": opus.APPLICATION_RESTRICTED_LOWDELAY,
}
MAX_PACKET_BYTES = 1275 * 3 + 7
"""The largest Opus packet (RFC 6716 3.2.5: 120 ms of 1275-byte frames)."""


class OpusEncoder:
    def __init__(self, fmt: AudioFormat, *, frame_ms: float = 20.0, bitrate_kbps: float = 128.0,
                 complexity: int = 10, application: str = "lowdelay", cbr: bool = False,
                 inband_fec: bool = False, loss_percent: int = 0) -> None:
        if fmt.rate not in OPUS_RATES:
            raise ConfigError(f"Opus cannot encode {fmt.rate} Hz: use --rate 48000 "
                              f"(or {', '.join(map(str, OPUS_RATES[:-1]))})")
        if fmt.channels > 2:
            raise ConfigError(f"Opus RTP carries 1 or 2 channels, not {fmt.channels}")
        if frame_ms not in FRAME_MS:
            raise ConfigError(f"--frame-ms must be one of {', '.join(f'{f:g}' for f in FRAME_MS)}")
        if not 6 <= bitrate_kbps <= 510:
            raise ConfigError("--bitrate must be between 6 and 510 kbit/s")
        if not 0 <= complexity <= 10:
            raise ConfigError("--complexity must be between 0 and 10")
        if application not in APPLICATIONS:
            raise ConfigError(f"unknown Opus application {application!r}: use "
                              + ", ".join(APPLICATIONS))
        self.fmt = fmt
        self.frame_ms = frame_ms
        self.frame_frames = fmt.frames_for_ms(frame_ms)
        self.bitrate_kbps = bitrate_kbps
        self._encoder = opus.Encoder(fmt.rate, fmt.channels, APPLICATIONS[application])
        self._encoder.bitrate = int(bitrate_kbps * 1000)
        self._encoder.complexity = complexity
        self._encoder.vbr = 0 if cbr else 1
        if not cbr:
            self._encoder.vbr_constraint = 1
        self._encoder.inband_fec = 1 if inband_fec else 0
        self._encoder.packet_loss_perc = loss_percent
        self._s16 = AudioFormat(fmt.rate, fmt.channels, SampleFormat.S16LE)
        logger.debug("opus encoder: %s, %g ms, %g kbit/s, complexity %d, %s%s", fmt, frame_ms,
                     bitrate_kbps, complexity, application, ", cbr" if cbr else "")

    def describe(self) -> str:
        return f"Opus {self.bitrate_kbps:g} kbit/s in {self.frame_ms:g} ms frames"

    @property
    def lookahead_frames(self) -> int:
        """Algorithmic delay of the encoder, in frames at the stream rate."""
        return int(self._encoder.lookahead)

    def encode(self, block: PcmBlock) -> bytes:
        """One packet for one block of ``frame_frames`` frames (a shorter one, the end of a
        stream cut by ``-t``, is padded with silence)."""
        if block.frames > self.frame_frames:
            raise ValueError(f"Opus frame must be {self.frame_frames} frames, got {block.frames}")
        if block.frames < self.frame_frames:
            pad = (self.frame_frames - block.frames) * block.fmt.frame_bytes
            block = PcmBlock(block.data + bytes(pad), block.fmt, block.pts)
        if block.fmt.sample is SampleFormat.F32LE:
            return bytes(self._encoder.encode_float(block.data, self.frame_frames))
        data = convert(block.data, block.fmt, self._s16)
        return bytes(self._encoder.encode(data, self.frame_frames))
