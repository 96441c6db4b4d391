"""RTP and RTCP packets, pure: bytes in, values out, and back (RFC 3550, 3551, 5761, 7587).

No sockets, no clocks, no I/O: packets only (as aiortc keeps its ``rtp.py``).

* :class:`RtpPacket` parses and serializes the RTP fixed header with CSRCs, a header extension
  (kept opaque: ``(profile, data)``) and padding (stripped and checked on parse, never sent).
* :func:`parse_rtcp` / :func:`serialize_rtcp` handle compound RTCP: SR, RR, SDES, BYE and APP;
  other RTCP packet types (feedback, XR, ...) are skipped.
* :func:`is_rtcp` separates RTP from RTCP arriving on one port (RFC 5761).
* :func:`seq_delta` / :func:`ts_delta`: differences of the wrapping header fields.

Elsewhere: what a receiver counts about a stream (sequence tracking, interarrival jitter) is in
:mod:`deskcast.transport.receive.stats`; NTP time and the report fields made of it in
:mod:`deskcast.transport.ntp`; one end's RTCP exchange in :mod:`deskcast.transport.rtcp`.

Data from the network that is not a valid packet raises :class:`RtpError` (a ``ValueError``)
and nothing else. Field values out of range when serializing raise a plain ``ValueError``: that
is a bug in the caller, not bad input.

Peers: deskcast sends Opus with a dynamic payload type (96) and a 48 kHz RTP clock whatever the
audio rate (RFC 7587); ``trx`` sends Opus as payload type 0 with timestamps in 8 kHz units.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "HEADER_SIZE",
    "OPUS_CLOCK_RATE",
    "REASONS",
    "TRX_CLOCK_RATE",
    "TRX_PAYLOAD_TYPE",
    "TRX_TS_DIVISOR",
    "Datagram",
    "RtpError",
    "RtpPacket",
    "is_rtcp",
    "seq_delta",
    "ts_delta",
]

Datagram: TypeAlias = bytes | bytearray | memoryview

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12
OPUS_CLOCK_RATE: Final = 48000
"""RFC 7587: the RTP clock of Opus is 48 kHz whatever rate the encoder runs at."""
TRX_PAYLOAD_TYPE: Final = 0
TRX_CLOCK_RATE: Final = 8000
"""``trx`` labels its Opus stream PT 0 (PCMU's number) and counts timestamps in 8 kHz units."""
TRX_TS_DIVISOR: Final = OPUS_CLOCK_RATE // TRX_CLOCK_RATE

U16: Final = 0xFFFF
U32: Final = 0xFFFFFFFF
RTCP_PT_RANGE: Final = range(192, 224)
"""RFC 5761 section 4: the second octet of an RTCP packet falls here, of RTP (M bit + PT) never
(payload types 64-95 must not be used when multiplexing)."""
_RTCP_CONFLICT_PT: Final = range(72, 77)
"""RFC 3551: payload types 72-76 are reserved; with the M bit they would read as SR..APP."""

_HEADER = struct.Struct("!BBHII")
_WORDS = struct.Struct("!HH")

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


def check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}, not {value!r}")


def check_u32(name: str, value: int) -> None:
    check_range(name, value, 0, U32)


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
        check_range("payload_type", self.payload_type, 0, 127)
        if self.payload_type in _RTCP_CONFLICT_PT:
            raise ValueError(
                f"payload_type {self.payload_type} is reserved: 72-76 would read as RTCP"
            )
        check_range("sequence", self.sequence, 0, U16)
        check_u32("timestamp", self.timestamp)
        check_u32("ssrc", self.ssrc)
        if len(self.csrcs) > 15:
            raise ValueError(f"at most 15 CSRCs fit in an RTP header, not {len(self.csrcs)}")
        for csrc in self.csrcs:
            check_u32("csrc", csrc)
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
            check_range("extension profile", profile, 0, U16)
            if len(data) % 4 or len(data) > 4 * U16:
                raise ValueError(
                    f"extension data must be a multiple of 4 bytes, at most {4 * U16}, "
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
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and data[1] in RTCP_PT_RANGE


def seq_delta(newer: int, older: int) -> int:
    """``newer - older`` for 16-bit sequence numbers, in -32768..32767 across wraparound."""
    return ((newer - older + 0x8000) & U16) - 0x8000


def ts_delta(newer: int, older: int) -> int:
    """``newer - older`` for 32-bit RTP timestamps, in -2**31..2**31-1 across wraparound."""
    return ((newer - older + 0x80000000) & U32) - 0x80000000
