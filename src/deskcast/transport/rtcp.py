"""RTCP packets, pure: bytes in, values out, and back (RFC 3550 section 6, RFC 5506).

:func:`parse_rtcp` / :func:`serialize_rtcp` handle compound RTCP: SR, RR, SDES, BYE and APP;
other RTCP packet types (feedback, XR, ...) are skipped. Malformed data raises
:class:`~deskcast.transport.rtp.RtpError` (its reasons are listed with RTP's, in
:data:`~deskcast.transport.rtp.REASONS`); a field out of range when serializing, a plain
``ValueError``. What one end does with these packets is :mod:`deskcast.transport.rtcpsession`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from deskcast.transport.rtp import (
    RTCP_PT_RANGE,
    RTP_VERSION,
    U16,
    Datagram,
    RtpError,
    check_range,
    check_u32,
)

__all__ = [
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "AppPacket",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "parse_rtcp",
    "serialize_rtcp",
]

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

_U64: Final = (1 << 64) - 1

_RTCP_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IIIIII")
_U32_STRUCT = struct.Struct("!I")


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
        check_u32("report block ssrc", self.ssrc)
        check_range("fraction_lost", self.fraction_lost, 0, 255)
        check_range("cumulative_lost", self.cumulative_lost, -0x800000, 0x7FFFFF)
        for name in ("highest_seq", "jitter", "lsr", "dlsr"):
            check_u32(name, getattr(self, name))
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
        check_u32("ssrc", self.ssrc)
        check_range("ntp_timestamp", self.ntp_timestamp, 0, _U64)
        for name in ("rtp_timestamp", "packet_count", "octet_count"):
            check_u32(name, getattr(self, name))
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
        check_u32("ssrc", self.ssrc)
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
            check_u32("sdes ssrc", ssrc)
            chunk = bytearray(_U32_STRUCT.pack(ssrc))
            for item_type, value in items:
                check_range("sdes item type", item_type, 1, 255)
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
            check_u32("bye ssrc", ssrc)
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
        check_range("app subtype", self.subtype, 0, 31)
        check_u32("ssrc", self.ssrc)
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
    if words > U16:
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
        if packet_type not in RTCP_PT_RANGE:
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
