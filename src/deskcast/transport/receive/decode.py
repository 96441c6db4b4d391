"""Decode and conceal: a frame from the jitter buffer as PCM, whatever happened to it.

A frame that came is decoded; a lost one is rebuilt from the next packet's inband FEC when
that is there, else concealed (libopus' PLC); while the buffer is dry the concealment holds
at full level for :data:`EXPAND_HOLD_S`, then fades out over :data:`EXPAND_FADE_S`, so a
sender that stopped does not leave a ghost of its last sound. A corrupt packet is concealed
too, and counted.
"""

from __future__ import annotations

import numpy as np

from deskcast.decode.opus import CorruptPacket, OpusDecoder
from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.jitter import Frame
from deskcast.transport.receive.stats import ReceiverStats

EXPAND_HOLD_S = 0.04
EXPAND_FADE_S = 0.08


class FrameDecoder:
    """One sender's Opus stream (:meth:`new_sender`: a fresh decoder) into PCM blocks."""

    def __init__(self, fmt: AudioFormat, stats: ReceiverStats, *, use_fec: bool = True
                 ) -> None:
        self.fmt = fmt
        self.stats = stats
        self.use_fec = use_fec
        self.opus = OpusDecoder(fmt)
        """The current sender's decoder; :meth:`decode` is handed the one read with the
        frame (the network thread may start another sender meanwhile)."""
        self._expanded = 0

    def new_sender(self) -> None:
        self.opus = OpusDecoder(self.fmt)

    def decode(self, frame: Frame, opus: OpusDecoder, pts: int, trim: int = 0) -> PcmBlock:
        """``frame`` as PCM starting at ``pts``, less its first ``trim`` samples."""
        block = PcmBlock(self._pcm(opus, frame), self.fmt, pts)
        if frame.expand:
            block = self._fade_expansion(block)
        else:
            self._expanded = 0
        if 0 < trim < block.frames:  # the rest of what a stall piled up
            block = PcmBlock(block.data[trim * self.fmt.frame_bytes:], self.fmt, pts)
        return block

    def _pcm(self, decoder: OpusDecoder, frame: Frame) -> bytes:
        want = frame.samples * self.fmt.frame_bytes
        try:
            if frame.payload is not None:
                pcm = decoder.decode(frame.payload)
            elif frame.next_payload is not None and self.use_fec:
                pcm = decoder.recover(frame.next_payload, plc_frames(frame.samples))
                self.stats.fec_used += 1
            else:
                pcm = decoder.conceal(plc_frames(frame.samples))
        except CorruptPacket:
            self.stats.decode_errors += 1
            try:
                pcm = decoder.conceal(plc_frames(frame.samples))
            except CorruptPacket:
                pcm = b""
        if len(pcm) < want:
            pcm += bytes(want - len(pcm))
        return pcm[:want]

    def _fade_expansion(self, block: PcmBlock) -> PcmBlock:
        """Concealment while the buffer is dry stays at full level for the first
        ``EXPAND_HOLD_S`` (a late packet is about to come), then fades out over
        ``EXPAND_FADE_S``: a sender that stopped must not leave a ghost of its last sound."""
        rate = self.fmt.rate
        start = self._expanded
        self._expanded += block.frames
        hold, fade = EXPAND_HOLD_S * rate, EXPAND_FADE_S * rate
        if self._expanded <= hold:
            return block
        n = np.arange(start, start + block.frames, dtype=np.float32)
        gain = np.clip(1.0 - (n - hold) / fade, 0.0, 1.0)
        return PcmBlock.from_float(block.as_float() * gain[:, None], self.fmt, block.pts)


def plc_frames(samples: int) -> int:
    """libopus conceals in multiples of 2.5 ms (120 samples at 48 kHz)."""
    return max(120, -(-samples // 120) * 120)
