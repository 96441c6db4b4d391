"""RTP and RTCP packets, pure: bytes in, values out, and back (RFC 3550, 3551, 5761, 7587).

No sockets, no clocks, no I/O: arrival times and wall-clock times are passed in.

* :class:`RtpPacket` parses and serializes the RTP fixed header with CSRCs, a header extension
  (kept opaque: ``(profile, data)``) and padding (stripped and checked on parse, never sent).
* :func:`parse_rtcp` / :func:`serialize_rtcp` handle compound RTCP: SR, RR, SDES, BYE and APP;
  other RTCP packet types (feedback, XR, ...) are skipped.
* :func:`is_rtcp` separates RTP from RTCP arriving on one port (RFC 5761).
* :class:`SequenceTracker` (RFC 3550 A.1/A.3) and :class:`JitterEstimator` (A.8) produce the
  numbers a receiver report carries.

Data from the network that is not a valid packet raises :class:`RtpError` (a ``ValueError``)
and nothing else. Field values out of range when serializing raise a plain ``ValueError``: that
is a bug in the caller, not bad input.

Peers: deskcast sends Opus with a dynamic payload type (96) and a 48 kHz RTP clock whatever the
audio rate (RFC 7587); ``trx`` sends Opus as payload type 0 with timestamps in 8 kHz units.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "HEADER_SIZE",
    "OPUS_CLOCK_RATE",
    "REASONS",
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "TRX_CLOCK_RATE",
    "TRX_PAYLOAD_TYPE",
    "AppPacket",
    "Bye",
    "Datagram",
    "JitterEstimator",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtpError",
    "RtpPacket",
    "SenderReport",
    "SequenceTracker",
    "SourceDescription",
    "dlsr_from_seconds",
    "is_rtcp",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_rtcp",
    "round_trip_seconds",
    "seq_delta",
    "serialize_rtcp",
    "ts_delta",
    "unix_from_ntp",
]

Datagram: TypeAlias = bytes | bytearray | memoryview

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12
OPUS_CLOCK_RATE: Final = 48000
"""RFC 7587: the RTP clock of Opus is 48 kHz whatever rate the encoder runs at."""
TRX_PAYLOAD_TYPE: Final = 0
TRX_CLOCK_RATE: Final = 8000
"""``trx`` labels its Opus stream PT 0 (PCMU's number) and counts timestamps in 8 kHz units."""

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204

SDES_END: Final = 0
SDES_CNAME: Final = 1
SDES_NAME: Final = 2
SDES_EMAIL: Final = 3
SDES_PHONE: Final = 4
SDES_LOC: Final = 5
SDES_TOOL: Final = 6
SDES_NOTE: Final = 7
SDES_PRIV: Final = 8

_U16: Final = 0xFFFF
_U32: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1
_SEQ_MOD: Final = 1 << 16
_RTCP_PT_RANGE: Final = range(192, 224)
"""RFC 5761 section 4: the second octet of an RTCP packet falls here, of RTP (M bit + PT) never
(payload types 64-95 must not be used when multiplexing)."""
_RTCP_CONFLICT_PT: Final = range(72, 77)
"""RFC 3551: payload types 72-76 are reserved; with the M bit they would read as SR..APP."""

_HEADER = struct.Struct("!BBHII")
_WORDS = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IIIIII")
_U32_STRUCT = struct.Struct("!I")

REASONS: Final = frozenset(
    {
        "short",  # shorter than the fixed header
        "version",  # version field is not 2
        "payload-type",  # RTP payload type 72-76: an RTCP packet read as RTP
        "csrc",  # CSRC list runs past the end
        "extension",  # header extension runs past the end
        "padding",  # padding count is 0 or larger than what it may cover
        "rtcp-type",  # packet type outside the RTCP range 192-223
        "rtcp-length",  # length field runs past the end, or a partial header is left over
        "report",  # SR/RR shorter than its sender info and report blocks
        "sdes",  # SDES chunk or item runs past the end
        "bye",  # BYE SSRC list or reason runs past the end
        "app",  # APP shorter than SSRC + name
    }
)
"""Every :attr:`RtpError.reason` token, for counters and tests."""


class RtpError(ValueError):
    """A datagram that is not a valid RTP/RTCP packet.

    ``reason`` is a short stable token (one of :data:`REASONS`) for counters; ``str(err)`` is one
    readable line.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[RtpError], tuple[str, str]]:
        return (type(self), (self.reason, str(self)))


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}, not {value!r}")


def _check_u32(name: str, value: int) -> None:
    _check_range(name, value, 0, _U32)


# --------------------------------------------------------------------------------------------
# RTP


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP data packet (RFC 3550 section 5.1). ``bytes(packet)`` serializes it."""

    payload_type: int
    """0..127, except 72..76 (reserved so RTP and RTCP stay distinguishable)."""
    sequence: int
    """0..65535, +1 per packet, wrapping."""
    timestamp: int
    """0..2**32-1, sampling instant of the first sample in clock-rate units, wrapping."""
    ssrc: int
    """0..2**32-1, the stream's random identifier."""
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    """Up to 15 contributing sources."""
    extension: tuple[int, bytes] | None = None
    """``(profile, data)``: the 16-bit profile-defined id and data whose length is a multiple
    of 4 (RFC 8285 extensions use profile ``0xBEDE`` or ``0x100x`` and are not decoded here)."""

    @classmethod
    def parse(cls, data: Datagram) -> RtpPacket:
        """Parse one datagram; raise :class:`RtpError` (only) if it is not a valid RTP packet."""
        buf = bytes(data)
        size = len(buf)
        if size < HEADER_SIZE:
            raise RtpError(
                "short", f"RTP packet of {size} bytes is shorter than the {HEADER_SIZE}-byte header"
            )
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(buf)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError("version", f"RTP version is {version}, not 2")
        payload_type = b1 & 0x7F
        if payload_type in _RTCP_CONFLICT_PT:
            raise RtpError(
                "payload-type",
                f"RTP payload type {payload_type} is reserved (an RTCP packet read as RTP?)",
            )
        count = b0 & 0x0F
        pos = HEADER_SIZE + 4 * count
        if pos > size:
            raise RtpError(
                "csrc", f"RTP packet of {size} bytes is too short for its {count} CSRCs"
            )
        csrcs: tuple[int, ...] = struct.unpack_from(f"!{count}I", buf, HEADER_SIZE)
        extension: tuple[int, bytes] | None = None
        if b0 & 0x10:
            if pos + 4 > size:
                raise RtpError(
                    "extension", f"RTP packet of {size} bytes ends inside its extension header"
                )
            profile, words = _WORDS.unpack_from(buf, pos)
            pos += 4
            if pos + 4 * words > size:
                raise RtpError(
                    "extension",
                    f"RTP header extension of {4 * words} bytes runs past the end of the packet",
                )
            extension = (profile, buf[pos : pos + 4 * words])
            pos += 4 * words
        end = size
        if b0 & 0x20:
            padding = buf[-1]
            if padding == 0 or padding > size - pos:
                raise RtpError(
                    "padding",
                    f"RTP padding count {padding} is invalid for {size - pos} bytes after the "
                    "header",
                )
            end -= padding
        return cls(
            payload_type=payload_type,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=buf[pos:end],
            marker=bool(b1 & 0x80),
            csrcs=csrcs,
            extension=extension,
        )

    def __bytes__(self) -> bytes:
        """Serialize, without padding; ``ValueError`` if a field is out of range."""
        _check_range("payload_type", self.payload_type, 0, 127)
        if self.payload_type in _RTCP_CONFLICT_PT:
            raise ValueError(
                f"payload_type {self.payload_type} is reserved: 72-76 would read as RTCP"
            )
        _check_range("sequence", self.sequence, 0, _U16)
        _check_u32("timestamp", self.timestamp)
        _check_u32("ssrc", self.ssrc)
        if len(self.csrcs) > 15:
            raise ValueError(f"at most 15 CSRCs fit in an RTP header, not {len(self.csrcs)}")
        for csrc in self.csrcs:
            _check_u32("csrc", csrc)
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        parts = [
            _HEADER.pack(
                b0 | (0x10 if self.extension is not None else 0),
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence,
                self.timestamp,
                self.ssrc,
            ),
            struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
        ]
        if self.extension is not None:
            profile, data = self.extension
            _check_range("extension profile", profile, 0, _U16)
            if len(data) % 4 or len(data) > 4 * _U16:
                raise ValueError(
                    f"extension data must be a multiple of 4 bytes, at most {4 * _U16}, "
                    f"not {len(data)}"
                )
            parts += [_WORDS.pack(profile, len(data) // 4), bytes(data)]
        parts.append(bytes(self.payload))
        return b"".join(parts)


def is_rtcp(data: Datagram) -> bool:
    """Whether a datagram on a shared RTP/RTCP port is RTCP (RFC 5761 section 4).

    True when the version is 2 and the second octet (RTCP packet type, or RTP marker + payload
    type) is in 192..223; anything else goes to :meth:`RtpPacket.parse`.
    """
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and data[1] in _RTCP_PT_RANGE


def seq_delta(newer: int, older: int) -> int:
    """``newer - older`` for 16-bit sequence numbers, in -32768..32767 across wraparound."""
    return ((newer - older + 0x8000) & _U16) - 0x8000


def ts_delta(newer: int, older: int) -> int:
    """``newer - older`` for 32-bit RTP timestamps, in -2**31..2**31-1 across wraparound."""
    return ((newer - older + 0x80000000) & _U32) - 0x80000000


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
        _check_range("seq", seq, 0, _U16)
        if not self._started:
            return self._probe(seq)
        udelta = (seq - self._max_seq) & _U16
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
            ext = (self._max_ext & ~_U16) | seq
            if ext <= self._max_ext:
                ext += _SEQ_MOD
            return self._start(seq, ext)
        self._bad_seq = (seq + 1) & _U16
        self.ignored += 1
        return None

    def _probe(self, seq: int) -> int | None:
        # Before the first packet _probation == min_sequential, so the first one always lands
        # in the else branch; each packet after it that follows the previous one counts down.
        if self._probation < self.min_sequential and seq == (self._max_seq + 1) & _U16:
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
            highest_seq=max(self._max_ext, 0) & _U32,
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
        return min(int(self.jitter), _U32)


# --------------------------------------------------------------------------------------------
# RTCP


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception statistics about one source, in an SR or RR (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int = 0
    """Loss in the last interval, in 1/256 (0..255)."""
    cumulative_lost: int = 0
    """Signed 24-bit: -2**23..2**23-1."""
    highest_seq: int = 0
    """Extended highest sequence number received, 32 bits."""
    jitter: int = 0
    """Interarrival jitter in timestamp units."""
    lsr: int = 0
    """Middle 32 bits of the NTP time of the last SR received from the source, 0 if none."""
    dlsr: int = 0
    """Delay since that SR, in 1/65536 s."""

    def _pack(self) -> bytes:
        _check_u32("report block ssrc", self.ssrc)
        _check_range("fraction_lost", self.fraction_lost, 0, 255)
        _check_range("cumulative_lost", self.cumulative_lost, -0x800000, 0x7FFFFF)
        for name in ("highest_seq", "jitter", "lsr", "dlsr"):
            _check_u32(name, getattr(self, name))
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF),
            self.highest_seq,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def _unpack(cls, buf: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(buf, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (PT 200): what a sender sent, and the wall-clock/RTP-clock pair that syncs it."""

    ssrc: int
    ntp_timestamp: int
    """64-bit NTP time (seconds since 1900 << 32 | fraction); see :func:`ntp_from_unix`."""
    rtp_timestamp: int
    """The RTP timestamp of the same instant."""
    packet_count: int
    octet_count: int
    """Payload octets sent (headers and padding not counted)."""
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        _check_u32("ssrc", self.ssrc)
        _check_range("ntp_timestamp", self.ntp_timestamp, 0, _U64)
        for name in ("rtp_timestamp", "packet_count", "octet_count"):
            _check_u32(name, getattr(self, name))
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count,
            self.octet_count,
        )
        return _rtcp(RTCP_SR, _count("report blocks", self.reports), body + _blocks(self.reports))


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (PT 201): reception statistics from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        _check_u32("ssrc", self.ssrc)
        body = _U32_STRUCT.pack(self.ssrc) + _blocks(self.reports)
        return _rtcp(RTCP_RR, _count("report blocks", self.reports), body)


SdesItems: TypeAlias = tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (PT 202): ``chunks`` of ``(ssrc, ((item_type, value), ...))``.

    Item types are :data:`SDES_CNAME` (1) .. :data:`SDES_PRIV` (8); values are bytes of at most
    255 (UTF-8 text for the standard items, kept undecoded).
    """

    chunks: tuple[tuple[int, SdesItems], ...]

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        """The SDES every compound RTCP packet carries: one CNAME such as ``user@host``."""
        return cls(((ssrc, ((SDES_CNAME, cname.encode()),)),))

    def cnames(self) -> dict[int, str]:
        """The CNAME of each chunk that has one, by SSRC."""
        return {
            ssrc: value.decode("utf-8", "replace")
            for ssrc, items in self.chunks
            for item_type, value in items
            if item_type == SDES_CNAME
        }

    def __bytes__(self) -> bytes:
        parts = []
        for ssrc, items in self.chunks:
            _check_u32("sdes ssrc", ssrc)
            chunk = bytearray(_U32_STRUCT.pack(ssrc))
            for item_type, value in items:
                _check_range("sdes item type", item_type, 1, 255)
                if len(value) > 255:
                    raise ValueError(f"an SDES item holds at most 255 bytes, not {len(value)}")
                chunk += bytes((item_type, len(value))) + bytes(value)
            chunk += bytes(4 - len(chunk) % 4)  # at least one null: the end of the item list
            parts.append(bytes(chunk))
        return _rtcp(RTCP_SDES, _count("SDES chunks", self.chunks), b"".join(parts))


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (PT 203): these sources are leaving, optionally saying why.

    The reason travels as UTF-8 of at most 255 bytes; a longer one is cut when serialized.
    """

    ssrcs: tuple[int, ...]
    reason: str = ""

    def __bytes__(self) -> bytes:
        for ssrc in self.ssrcs:
            _check_u32("bye ssrc", ssrc)
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            # at most 255 bytes: cut a longer reason at a character boundary
            text = self.reason.encode()[:255].decode("utf-8", "ignore").encode()
            body += _pad4(bytes((len(text),)) + text)
        return _rtcp(RTCP_BYE, _count("BYE sources", self.ssrcs), body)


@dataclass(frozen=True, slots=True)
class AppPacket:
    """APP (PT 204): application-defined; ``name`` is 4 ASCII bytes, ``data`` a multiple of 4."""

    subtype: int
    ssrc: int
    name: bytes
    data: bytes = b""

    def __bytes__(self) -> bytes:
        _check_range("app subtype", self.subtype, 0, 31)
        _check_u32("ssrc", self.ssrc)
        if len(self.name) != 4:
            raise ValueError(f"an APP name is 4 bytes, not {self.name!r}")
        if len(self.data) % 4:
            raise ValueError(f"APP data must be a multiple of 4 bytes, not {len(self.data)}")
        body = _U32_STRUCT.pack(self.ssrc) + bytes(self.name) + bytes(self.data)
        return _rtcp(RTCP_APP, self.subtype, body)


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | SourceDescription | Bye | AppPacket


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _count(what: str, items: tuple[object, ...]) -> int:
    if len(items) > 31:
        raise ValueError(f"at most 31 {what} fit in one RTCP packet, not {len(items)}")
    return len(items)


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    return b"".join(block._pack() for block in reports)


def _rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    """Header + body (a multiple of 4 bytes); the length field counts 32-bit words minus one."""
    assert len(body) % 4 == 0, "RTCP bodies are built in whole words"
    words = len(body) // 4
    if words > _U16:
        raise ValueError(f"RTCP packet of {4 + len(body)} bytes is too long")
    return _RTCP_HEADER.pack((RTP_VERSION << 6) | count, packet_type, words) + body


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """One compound RTCP packet (RFC 3550 section 6.1), each part a whole number of words.

    RFC 3550 wants it to start with an SR or RR and include an SDES CNAME; that is left to the
    caller (RFC 5506 reduced-size RTCP allows a lone packet).
    """
    return b"".join(bytes(packet) for packet in packets)


def parse_rtcp(data: Datagram) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram; raise :class:`RtpError` (only) if it is malformed.

    Packet types this module does not model (192..223 other than 200..204: RTPFB, PSFB, XR,
    ...) are skipped. Padding is accepted on any packet, not just the last, and data after the
    modelled fields (profile-specific extensions) is ignored.
    """
    buf = bytes(data)
    if len(buf) < 4:
        raise RtpError("short", f"RTCP packet of {len(buf)} bytes is shorter than its header")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 4:
            raise RtpError(
                "rtcp-length", f"{len(buf) - pos} bytes left after an RTCP packet at {pos}"
            )
        b0, packet_type, words = _RTCP_HEADER.unpack_from(buf, pos)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError("version", f"RTCP version at byte {pos} is {b0 >> 6}, not 2")
        if packet_type not in _RTCP_PT_RANGE:
            raise RtpError(
                "rtcp-type", f"RTCP packet type {packet_type} at byte {pos} is not in 192..223"
            )
        end = pos + 4 * (words + 1)
        if end > len(buf):
            raise RtpError(
                "rtcp-length",
                f"RTCP packet at byte {pos} claims {end - pos} bytes, {len(buf) - pos} are left",
            )
        body_end = end
        if b0 & 0x20:
            padding = buf[end - 1]
            if padding == 0 or padding > end - pos - 4:
                raise RtpError(
                    "padding", f"RTCP padding count {padding} is invalid at byte {pos}"
                )
            body_end -= padding
        packet = _parse_one(packet_type, b0 & 0x1F, buf[pos + 4 : body_end])
        if packet is not None:
            packets.append(packet)
        pos = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    if packet_type in (RTCP_SR, RTCP_RR):
        fixed = _SENDER_INFO.size if packet_type == RTCP_SR else 4
        if len(body) < fixed + count * _BLOCK.size:
            raise RtpError(
                "report",
                f"RTCP {'SR' if packet_type == RTCP_SR else 'RR'} of {len(body)} bytes after "
                f"the header is too short for {count} report blocks",
            )
        reports = tuple(
            ReportBlock._unpack(body, fixed + i * _BLOCK.size) for i in range(count)
        )
        if packet_type == RTCP_RR:
            return ReceiverReport(_U32_STRUCT.unpack_from(body)[0], reports)
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports)
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, body)
    if packet_type == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtpError("bye", f"RTCP BYE of {len(body)} bytes is too short for {count} SSRCs")
        ssrcs: tuple[int, ...] = struct.unpack_from(f"!{count}I", body)
        reason = ""
        pos = 4 * count
        if pos < len(body):
            size = body[pos]
            if pos + 1 + size > len(body):
                raise RtpError("bye", f"RTCP BYE reason of {size} bytes runs past the packet")
            reason = body[pos + 1 : pos + 1 + size].decode("utf-8", "replace")
        return Bye(ssrcs, reason)
    if packet_type == RTCP_APP:
        if len(body) < 8:
            raise RtpError("app", f"RTCP APP of {len(body)} bytes is too short for SSRC + name")
        return AppPacket(count, _U32_STRUCT.unpack_from(body)[0], body[4:8], body[8:])
    return None


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks: list[tuple[int, SdesItems]] = []
    pos = 0
    for index in range(count):
        if pos + 4 > len(body):
            raise RtpError("sdes", f"RTCP SDES ends before chunk {index + 1} of {count}")
        ssrc = _U32_STRUCT.unpack_from(body, pos)[0]
        pos += 4
        items: list[tuple[int, bytes]] = []
        # A chunk's items end with a null octet, then nulls up to a word boundary. Tolerated:
        # a last chunk that just stops at the end of the packet.
        while pos < len(body):
            item_type = body[pos]
            if item_type == SDES_END:
                pos = (pos + 4) & ~3
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtpError("sdes", f"RTCP SDES item of type {item_type} runs past the packet")
            size = body[pos + 1]
            items.append((item_type, body[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        chunks.append((ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


# --------------------------------------------------------------------------------------------
# NTP time (RFC 3550 section 4)

_NTP_UNIX_OFFSET: Final = 2208988800
"""Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch)."""
_NTP_ERA_SPLIT: Final = 1 << 31


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp for Unix time ``t`` (valid 1968-01-20 .. 2104-02-26).

    After 2036-02-07 the seconds field wraps (NTP era 1), as RFC 4330 section 3 describes.
    """
    seconds = math.floor(t)
    fraction = round((t - seconds) * (1 << 32))
    ntp_seconds = seconds + _NTP_UNIX_OFFSET
    if not _NTP_ERA_SPLIT <= ntp_seconds < (1 << 32) + _NTP_ERA_SPLIT:
        raise ValueError(f"Unix time {t} is outside what a 64-bit NTP timestamp can represent")
    return ((ntp_seconds << 32) + fraction) & _U64


def unix_from_ntp(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp; seconds below 2**31 are read as era 1 (>= 2036)."""
    seconds, fraction = ntp >> 32 & _U32, ntp & _U32
    if seconds < _NTP_ERA_SPLIT:
        seconds += 1 << 32
    return seconds - _NTP_UNIX_OFFSET + fraction / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 fixed point seconds): the LSR field."""
    return (ntp >> 16) & _U32


def dlsr_from_seconds(seconds: float) -> int:
    """A delay as the DLSR field: 1/65536 s units, clamped to 0..2**32-1."""
    return max(0, min(round(seconds * 65536), _U32))


def round_trip_seconds(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time from a report block's LSR/DLSR and when it arrived (RFC 3550 6.4.1).

    ``arrival_ntp`` is the sender's own 64-bit NTP clock at arrival. ``None`` if ``lsr`` is 0
    (the receiver has had no SR yet); may come out negative if the peer overstated DLSR.
    """
    if lsr == 0:
        return None
    units = (ntp_middle32(arrival_ntp) - lsr - dlsr + 0x80000000) & _U32
    return (units - 0x80000000) / 65536
