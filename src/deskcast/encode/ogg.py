"""Ogg/Opus (RFC 7845) pages written by hand, so that every page boundary is ours to choose.

An HTTP listener may join at any page: the two header pages (``OpusHead``, ``OpusTags``) are kept
apart from the audio and replayed to each new listener, and every audio page holds whole Opus
packets only (no packet continues onto the next page), so any audio page is a join point.

Granule positions are the 48 kHz sample count at the end of the last packet on the page (RFC 7845
section 4), counted from the start of the logical stream; a late joiner sees a stream that starts
at a later time, as with any Icecast Ogg stream.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from deskcast.opus_packet import packet_samples

OGG_CAPTURE = b"OggS"
MAX_SEGMENTS = 255
"""Lacing values per page (the segment table's size is one byte)."""
OPUS_GRANULE_RATE = 48000
"""Opus granule positions always count 48 kHz samples, whatever the input rate."""

_FLAG_CONTINUED = 0x01
_FLAG_BOS = 0x02
_FLAG_EOS = 0x04
_HEADER = struct.Struct("<4sBBqIII")  # capture, version, flags, granule, serial, seq, crc


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, init 0, no xor."""
    crc = 0
    table = _CRC
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def lacing(size: int) -> bytes:
    """The segment table entries of one whole packet of ``size`` bytes."""
    return b"\xff" * (size // 255) + bytes([size % 255])


@dataclass(frozen=True)
class Page:
    """One parsed Ogg page (for tests and checks)."""

    flags: int
    granule: int
    serial: int
    sequence: int
    packets: list[bytes]
    """Packets completed on this page (a continued first part is not split out)."""
    complete_last: bool
    """The last segment ends a packet."""

    @property
    def bos(self) -> bool:
        return bool(self.flags & _FLAG_BOS)

    @property
    def eos(self) -> bool:
        return bool(self.flags & _FLAG_EOS)


def make_page(packets: Iterable[bytes], *, serial: int, sequence: int, granule: int,
              bos: bool = False, eos: bool = False) -> bytes:
    """One page holding whole ``packets``; ValueError if they need more than 255 segments."""
    segments = bytearray()
    body = bytearray()
    for packet in packets:
        segments += lacing(len(packet))
        body += packet
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"{len(segments)} segments do not fit in one Ogg page "
                         f"(at most {MAX_SEGMENTS})")
    flags = (_FLAG_BOS if bos else 0) | (_FLAG_EOS if eos else 0)
    header = _HEADER.pack(OGG_CAPTURE, 0, flags, granule, serial, sequence, 0)
    page = bytearray(header + bytes([len(segments)]) + segments + body)
    struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
    return bytes(page)


def parse_pages(data: bytes) -> tuple[list[Page], bytes]:
    """Whole pages at the start of ``data`` (which must start at a page); returns (pages, rest).

    ValueError on a bad capture pattern or checksum: the data is not an Ogg stream cut at pages.
    """
    pages: list[Page] = []
    i = 0
    n = len(data)
    while n - i >= 27:
        capture, version, flags, granule, serial, seq, crc = _HEADER.unpack_from(data, i)
        if capture != OGG_CAPTURE or version != 0:
            raise ValueError(f"no Ogg page at byte {i}")
        count = data[i + 26]
        if n - i < 27 + count:
            break
        table = data[i + 27:i + 27 + count]
        end = i + 27 + count + sum(table)
        if end > n:
            break
        raw = bytearray(data[i:end])
        struct.pack_into("<I", raw, 22, 0)
        if ogg_crc(bytes(raw)) != crc:
            raise ValueError(f"bad Ogg page checksum at byte {i}")
        packets: list[bytes] = []
        at = i + 27 + count
        start = at
        for lace in table:
            at += lace
            if lace < 255:
                packets.append(data[start:at])
                start = at
        pages.append(Page(flags, granule, serial, seq, packets,
                          complete_last=bool(table) and table[-1] < 255))
        i = end
    return pages, data[i:]


def opus_head(channels: int, pre_skip: int, input_rate: int, *, gain_q8: int = 0) -> bytes:
    """The ``OpusHead`` identification header, channel mapping family 0 (mono or stereo)."""
    if channels not in (1, 2):
        raise ValueError(f"Ogg/Opus mapping family 0 carries 1 or 2 channels, not {channels}")
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, gain_q8, 0)


def opus_tags(vendor: str, comments: Iterable[str] = ()) -> bytes:
    """The ``OpusTags`` comment header (``comments`` are ``KEY=value`` strings)."""
    items = [c.encode("utf-8") for c in comments]
    out = bytearray(b"OpusTags")
    out += struct.pack("<I", len(vendor.encode("utf-8"))) + vendor.encode("utf-8")
    out += struct.pack("<I", len(items))
    for item in items:
        out += struct.pack("<I", len(item)) + item
    return bytes(out)


class OggOpusMuxer:
    """Opus packets in, whole Ogg pages out, for one logical stream (one serial number).

    :attr:`header` is the two header pages; :meth:`pages` turns a run of packets into as few
    pages as fit (normally one), each ending on a packet boundary.
    """

    def __init__(self, channels: int, *, pre_skip: int, input_rate: int = 48000,
                 vendor: str = "deskcast", comments: Iterable[str] = (),
                 serial: int | None = None) -> None:
        self.serial = random.getrandbits(32) if serial is None else serial
        self.channels = channels
        self.pre_skip = pre_skip
        self.input_rate = input_rate
        self.vendor = vendor
        self.header = self.header_with(comments)
        self._sequence = 2
        self.granule = 0
        """48 kHz samples in every packet muxed so far (the last page's granule position)."""

    def header_with(self, comments: Iterable[str]) -> bytes:
        """The two header pages with these ``KEY=value`` comments (e.g. ``TITLE=…``).

        A listener that joins later may be given other comments than an earlier one: each
        listener sees one consistent stream, and players show the tags they got at the start.
        """
        return (make_page([opus_head(self.channels, self.pre_skip, self.input_rate)],
                          serial=self.serial, sequence=0, granule=0, bos=True)
                + make_page([opus_tags(self.vendor, comments)], serial=self.serial,
                            sequence=1, granule=0))

    def pages(self, packets: list[bytes], *, eos: bool = False) -> bytes:
        """Whole pages holding ``packets`` (whole Opus packets), in order."""
        out = bytearray()
        group: list[bytes] = []
        segments = 0
        for i, packet in enumerate(packets):
            need = len(packet) // 255 + 1
            if need > MAX_SEGMENTS:
                raise ValueError(f"an Opus packet of {len(packet)} bytes is too long")
            if group and segments + need > MAX_SEGMENTS:
                out += self._page(group, eos=False)
                group, segments = [], 0
            group.append(packet)
            segments += need
            if i == len(packets) - 1:
                out += self._page(group, eos=eos)
        return bytes(out)

    def _page(self, packets: list[bytes], *, eos: bool) -> bytes:
        for packet in packets:
            self.granule += packet_samples(packet)
        page = make_page(packets, serial=self.serial, sequence=self._sequence,
                         granule=self.granule, eos=eos)
        self._sequence += 1
        return page
