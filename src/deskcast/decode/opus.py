"""Opus decoding with loss concealment (libopus PLC) and inband-FEC recovery.

Outside data: a corrupt packet raises :class:`CorruptPacket` (the receiver counts it and
conceals), never anything else.
"""

from __future__ import annotations

import ctypes
import logging

import opuslib_next as opus
import opuslib_next.api as opus_api
import opuslib_next.api.decoder as opus_decoder_api

from deskcast.media import AudioFormat, SampleFormat
from deskcast.opus_packet import MAX_FRAMES_48K, CorruptPacket, packet_samples

logger = logging.getLogger(__name__)

__all__ = ["CorruptPacket", "OpusDecoder", "packet_samples"]


class OpusDecoder:
    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._decoder = opus.Decoder(fmt.rate, fmt.channels)
        self._float = fmt.sample is SampleFormat.F32LE
        self._s16 = AudioFormat(fmt.rate, fmt.channels, SampleFormat.S16LE)
        # libopus is called through opuslib's ctypes bindings, but into one reused buffer:
        # opuslib's own decode() copies the PCM through a Python list of every sample, which
        # costs more than the decoding itself.
        width = 4 if self._float else 2
        self._buf = ctypes.create_string_buffer(MAX_FRAMES_48K * fmt.channels * width)
        self._frame_bytes = fmt.channels * width
        if self._float:
            self._call = opus_decoder_api.libopus_decode_float
            self._out = ctypes.cast(self._buf, opus_api.c_float_pointer)
        else:
            self._call = opus_decoder_api.libopus_decode
            self._out = ctypes.cast(self._buf, opus_api.c_int16_pointer)

    def _run(self, payload: bytes, frames: int, fec: bool = False) -> bytes:
        frames = min(frames, MAX_FRAMES_48K)
        result: int = self._call(self._decoder.decoder_state, payload or None, len(payload),
                                 self._out, frames, int(fec))
        if result < 0:
            raise CorruptPacket(f"libopus: {opus.OpusError(result)}")
        return ctypes.string_at(self._buf, result * self._frame_bytes)

    def decode(self, payload: bytes) -> bytes:
        """PCM (s16le, or f32le for an f32le stream) of one packet."""
        frames = packet_samples(payload, self.fmt.rate)
        return self._run(payload, frames)

    def conceal(self, frames: int) -> bytes:
        """``frames`` of packet-loss concealment (a multiple of 2.5 ms)."""
        return self._run(b"", frames)

    def recover(self, next_payload: bytes, frames: int) -> bytes:
        """The lost packet before ``next_payload`` from its inband FEC (PLC if it has none)."""
        return self._run(next_payload, frames, fec=True)

    @property
    def pcm_format(self) -> AudioFormat:
        return self.fmt if self._float else self._s16
