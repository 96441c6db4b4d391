"""What the receiver counts: per datagram (:class:`ReceiverStats`) and per sender, the numbers
a receiver report carries (RFC 3550 A.1/A.3 :class:`SequenceTracker`, A.8
:class:`JitterEstimator`). Pure: arrival times are passed in."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Final

from deskcast.transport.rtcp import ReportBlock
from deskcast.transport.rtp import U16, U32, check_range, ts_delta

_SEQ_MOD: Final = 1 << 16


@dataclass
class ReceiverStats:
    datagrams: int = 0
    packets: int = 0
    rtcp: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    decode_errors: int = 0
    fec_used: int = 0
    fec_packets: int = 0
    fec_recovered: int = 0
    senders: int = 0
    ssrc: int | None = None
    trx: bool = False
    last_packet: float = 0.0


class SequenceTracker:
    """Extend one source's 16-bit sequence numbers and count loss (RFC 3550 A.1 and A.3).

    :meth:`update` returns the packet's *extended* sequence number, or ``None`` for a packet to
    ignore (a duplicate, a stray far from the stream, a packet before the stream was accepted).
    Extended numbers never decrease across wraps or restarts, so they can key a jitter buffer.

    A jump of ``MAX_DROPOUT`` or more ahead, or ``MAX_MISORDER`` or more behind, is taken as a
    sender restart only once two sequential packets confirm it (the first is ignored); then the
    per-stream counts (``received``, ``expected``, ``lost``, the fraction-lost interval) start
    over, ``restarts`` goes up and the extended number carries on from where it was, as if the
    jump had been forward. ``duplicates``, ``ignored`` and ``restarts`` count over the tracker's
    whole life.

    Differences from the RFC's sample code: with the default ``min_sequential=1`` the first
    packet is accepted at once (the RFC waits for 2 sequential ones; pass 2 for that);
    duplicates are recognized within the reorder window and not counted as received, so
    ``lost`` never goes negative; a late packet from before the first one counts as expected.
    """

    MAX_DROPOUT: Final = 3000
    MAX_MISORDER: Final = 100
    _WINDOW_MASK: Final = (1 << 128) - 1  # holds MAX_MISORDER bits of history

    def __init__(self, min_sequential: int = 1) -> None:
        if min_sequential < 1:
            raise ValueError(f"min_sequential must be at least 1, not {min_sequential}")
        self.min_sequential = min_sequential
        self.received = 0
        """Distinct packets accepted in the current stream."""
        self.duplicates = 0
        self.ignored = 0
        """Packets rejected other than duplicates (probation, unconfirmed jumps, too old)."""
        self.restarts = 0
        self._started = False
        self._probation = min_sequential
        self._max_seq = 0  # highest 16-bit sequence number (or last one, during probation)
        self._max_ext = -1
        self._base_ext = 0
        self._bad_seq: int | None = None
        self._seen = 0  # bit i: extended number max_ext - i has been received
        self._expected_prior = 0
        self._received_prior = 0

    @property
    def highest(self) -> int | None:
        """The highest extended sequence number received, ``None`` before the first."""
        return self._max_ext if self._started else None

    @property
    def expected(self) -> int:
        """Packets expected in the current stream: highest - first + 1."""
        return self._max_ext - self._base_ext + 1 if self._started else 0

    @property
    def lost(self) -> int:
        """Packets of the current stream not (yet) received."""
        return self.expected - self.received

    def update(self, seq: int) -> int | None:
        """Take one packet's sequence number; return its extended number or ``None`` to drop."""
        check_range("seq", seq, 0, U16)
        if not self._started:
            return self._probe(seq)
        udelta = (seq - self._max_seq) & U16
        if udelta == 0:
            self.duplicates += 1
            return None
        if udelta < self.MAX_DROPOUT:
            self._max_ext += udelta
            self._max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & self._WINDOW_MASK
            self.received += 1
            return self._max_ext
        if udelta > _SEQ_MOD - self.MAX_MISORDER:
            behind = _SEQ_MOD - udelta
            ext = self._max_ext - behind
            if ext < 0:
                self.ignored += 1
                return None
            if self._seen >> behind & 1:
                self.duplicates += 1
                return None
            self._seen |= 1 << behind
            self._base_ext = min(self._base_ext, ext)
            self.received += 1
            return ext
        if seq == self._bad_seq:
            self.restarts += 1
            # Carry on numbering as though the jump had been forward: keeps numbers increasing.
            ext = (self._max_ext & ~U16) | seq
            if ext <= self._max_ext:
                ext += _SEQ_MOD
            return self._start(seq, ext)
        self._bad_seq = (seq + 1) & U16
        self.ignored += 1
        return None

    def _probe(self, seq: int) -> int | None:
        # Before the first packet _probation == min_sequential, so the first one always lands
        # in the else branch; each packet after it that follows the previous one counts down.
        if self._probation < self.min_sequential and seq == (self._max_seq + 1) & U16:
            self._probation -= 1
        else:
            self._probation = self.min_sequential - 1
        self._max_seq = seq
        if self._probation > 0:
            self.ignored += 1
            return None
        return self._start(seq, seq)

    def _start(self, seq: int, ext: int) -> int:
        self._started = True
        self._max_seq = seq
        self._max_ext = self._base_ext = ext
        self._bad_seq = None
        self._seen = 1
        self.received = 1
        self._expected_prior = self._received_prior = 0
        return ext

    def fraction_lost(self) -> int:
        """Loss since the previous call as a fraction of 256 (0..255, RFC 3550 A.3)."""
        expected, received = self.expected, self.received
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (received - self._received_prior)
        self._expected_prior, self._received_prior = expected, received
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min((lost_interval << 8) // expected_interval, 255)

    def report_block(
        self, ssrc: int, jitter: int = 0, lsr: int = 0, dlsr: int = 0
    ) -> ReportBlock:
        """A report block about source ``ssrc``; starts a new fraction-lost interval."""
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=self.fraction_lost(),
            cumulative_lost=max(-0x800000, min(self.lost, 0x7FFFFF)),
            highest_seq=max(self._max_ext, 0) & U32,
            jitter=jitter,
            lsr=lsr,
            dlsr=dlsr,
        )


class JitterEstimator:
    """Interarrival jitter of one source (RFC 3550 section 6.4.1 and A.8).

    ``clock_rate`` is the RTP timestamp rate: 48000 for Opus (RFC 7587), 8000 for ``trx``.
    """

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, not {clock_rate}")
        self.clock_rate = clock_rate
        self.jitter = 0.0
        """Smoothed mean deviation of transit time, in timestamp units."""
        self._last: tuple[int, float] | None = None

    def update(self, rtp_timestamp: int, arrival_seconds: float) -> float:
        """Take one packet's timestamp and arrival time (any monotonic clock); return jitter."""
        if self._last is not None:
            last_ts, last_arrival = self._last
            transit_change = (arrival_seconds - last_arrival) * self.clock_rate - ts_delta(
                rtp_timestamp, last_ts
            )
            self.jitter += (abs(transit_change) - self.jitter) / 16
        self._last = (rtp_timestamp, arrival_seconds)
        return self.jitter

    @property
    def jitter_seconds(self) -> float:
        return self.jitter / self.clock_rate

    @property
    def report_value(self) -> int:
        """The jitter as a receiver report carries it: whole timestamp units, 32 bits."""
        return min(int(self.jitter), U32)
