"""The sender being played: its timestamps unwrapped onto one line, trx's 8 kHz clock
recognised, what its receiver reports count, and where it sends from."""

from __future__ import annotations

from deskcast.transport.receive.stats import JitterEstimator, SequenceTracker
from deskcast.transport.rtp import OPUS_CLOCK_RATE, TRX_PAYLOAD_TYPE, TRX_TS_DIVISOR, ts_delta

RESTART_JUMP_S = 1.0
"""A timestamp jump larger than this (either way) within one SSRC is a restarted stream."""


class SenderStream:
    """Per-sender state: timestamp unwrapping and the trx clock detection."""

    def __init__(self, ssrc: int, payload_type: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        trx = payload_type == TRX_PAYLOAD_TYPE
        # trx counts timestamps at 8 kHz; confirmed (or refuted) by the second packet.
        self.scale = TRX_TS_DIVISOR if trx else 1
        self.confirmed = not trx
        self.last_ts: int | None = None
        self.last_ext = 0
        self.last_samples = 0
        self.candidate: int | None = None
        self.sequence = SequenceTracker()
        self.arrival = JitterEstimator(OPUS_CLOCK_RATE // self.scale if trx else OPUS_CLOCK_RATE)
        self.peer: tuple[str, int] | None = None

    def extended(self, ts: int) -> int:
        """The extended timestamp of ``ts`` (any other 32-bit timestamp of this stream, e.g.
        the sender's timeline), the stream unchanged."""
        if self.last_ts is None:
            return 0
        return (self.last_ext + ts_delta(ts, self.last_ts)) * self.scale

    def extend(self, ts: int, samples: int, restart_samples: int) -> int | str | None:
        """Extended timestamp in samples at 48 kHz; ``"jump"`` for a packet far from the
        stream (dropped: one corrupt timestamp must not reset playback); None when two
        packets in a row agree on the jump: the sender really restarted."""
        if self.last_ts is None:
            self.last_ts, self.last_ext, self.last_samples = ts, 0, samples
            return 0
        delta = ts_delta(ts, self.last_ts)
        if abs(delta * self.scale) > restart_samples:
            if self.candidate is not None and \
                    0 < ts_delta(ts, self.candidate) * self.scale <= restart_samples:
                return None
            self.candidate = ts
            return "jump"
        self.candidate = None
        if not self.confirmed and delta > 0:
            # One packet later: does the step match the packet length in 8 kHz units?
            self.scale = TRX_TS_DIVISOR if delta * TRX_TS_DIVISOR == self.last_samples else 1
            self.confirmed = True
        if delta > 0:
            self.last_ts = ts
            self.last_ext += delta
            self.last_samples = samples
            return self.last_ext * self.scale
        return (self.last_ext + delta) * self.scale
