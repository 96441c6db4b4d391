"""RTP and RTCP packets (deskcast.transport.rtp, deskcast.transport.rtcp): known bytes, round
trips, fuzzing, error reasons."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskcast.transport.rtcp import (
    RTCP_APP,
    SDES_CNAME,
    SDES_TOOL,
    AppPacket,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from deskcast.transport.rtp import (
    REASONS,
    RtpError,
    RtpPacket,
    is_rtcp,
    seq_delta,
    ts_delta,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RICH = settings(FAST, max_examples=150)  # for the costlier generated packets and streams

OPUS_FRAME = bytes.fromhex("fc ff fe 01 02 03 04 05")  # a TOC byte and some frame bytes


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --------------------------------------------------------------------------------------------
# RTP: known bytes


@pytest.mark.parametrize(("seq", "ts"), [(0, 0), (1, 160)])
def test_trx_packets(seq: int, ts: int) -> None:
    # trx-tx: V=2, no P/X/CC, M=0, PT=0, timestamps counted in 8 kHz units (160 per 20 ms)
    data = h("80 00") + struct.pack("!HI", seq, ts) + h("5eadc0de") + OPUS_FRAME
    packet = RtpPacket.parse(data)
    assert packet == RtpPacket(0, seq, ts, 0x5EADC0DE, OPUS_FRAME)
    assert not packet.marker and packet.csrcs == () and packet.extension is None
    assert bytes(packet) == data


def test_rfc7587_packet() -> None:
    # PT 96 with the marker bit (first packet of a talkspurt), 48 kHz clock: 960 per 20 ms
    data = h("80 e0 ff ff 00 00 03 c0 12 34 56 78") + OPUS_FRAME
    packet = RtpPacket.parse(data)
    assert packet.payload_type == 96
    assert packet.marker
    assert packet.sequence == 65535
    assert packet.timestamp == 960
    assert packet.ssrc == 0x12345678
    assert packet.payload == OPUS_FRAME
    assert bytes(packet) == data


def test_csrcs_extension_and_padding() -> None:
    data = (
        h("b2 e0 00 07 00 01 00 00 aa bb cc dd")  # V=2 P=1 X=1 CC=2, M=1 PT=96, seq 7, ts 65536
        + h("00 00 00 01 ff ff ff fe")  # two CSRCs
        + h("be de 00 02 10 ab 00 00 22 cd ef 00")  # RFC 8285 one-byte extension, 2 words
        + OPUS_FRAME
        + h("00 00 00 04")  # 4 bytes of padding, the last one counting them
    )
    packet = RtpPacket.parse(data)
    assert packet == RtpPacket(
        payload_type=96,
        sequence=7,
        timestamp=65536,
        ssrc=0xAABBCCDD,
        payload=OPUS_FRAME,
        marker=True,
        csrcs=(1, 0xFFFFFFFE),
        extension=(0xBEDE, h("10 ab 00 00 22 cd ef 00")),
    )
    # serialized without padding: P bit clear, the 4 padding bytes gone
    assert bytes(packet) == bytes([data[0] & ~0x20]) + data[1:-4]


def test_padding_only_payload() -> None:
    # a packet whose body is all padding (e.g. used to fill bandwidth) has an empty payload
    packet = RtpPacket.parse(h("a0 60 00 01 00 00 00 00 00 00 00 01 00 00 03"))
    assert packet.payload == b""


def test_extension_without_data() -> None:
    data = h("90 00 00 00 00 00 00 00 00 00 00 09 12 34 00 00") + b"x"
    packet = RtpPacket.parse(data)
    assert packet.extension == (0x1234, b"")
    assert packet.payload == b"x"
    assert bytes(packet) == data


def test_parse_accepts_buffers() -> None:
    data = bytes(RtpPacket(96, 1, 2, 3, b"abc"))
    assert RtpPacket.parse(bytearray(data)) == RtpPacket.parse(memoryview(data))
    assert type(RtpPacket.parse(memoryview(data)).payload) is bytes


# --------------------------------------------------------------------------------------------
# RTP: errors


def rtcp_header(b0: int, packet_type: int, words: int) -> bytes:
    return struct.pack("!BBH", b0, packet_type, words)


RR_EMPTY = h("80 c9 00 01 00 00 00 2a")

# (parser, datagram, reason): one or more for every reason token
ERROR_CASES: list[tuple[str, bytes, str]] = [
    ("rtp", b"", "short"),
    ("rtp", h("80 00 00 00 00 00 00 00 00 00 00"), "short"),
    ("rtp", h("40 00 00 00 00 00 00 00 00 00 00 00"), "version"),
    ("rtp", h("00 00 00 00 00 00 00 00 00 00 00 00"), "version"),
    ("rtp", h("80 48 00 00 00 00 00 00 00 00 00 00"), "payload-type"),  # PT 72
    ("rtp", h("80 4c 00 00 00 00 00 00 00 00 00 00"), "payload-type"),  # PT 76
    ("rtp", RR_EMPTY + bytes(4), "payload-type"),  # an RTCP RR given to the RTP parser
    ("rtp", h("81 00 00 00 00 00 00 00 00 00 00 00 00 00 00"), "csrc"),
    ("rtp", h("8f 00 00 00 00 00 00 00 00 00 00 00") + bytes(56), "csrc"),
    ("rtp", h("90 00 00 00 00 00 00 00 00 00 00 00 be de"), "extension"),
    ("rtp", h("90 00 00 00 00 00 00 00 00 00 00 00 be de 00 01 00 00 00"), "extension"),
    ("rtp", h("a0 00 00 00 00 00 00 00 00 00 00 00 01 02 00"), "padding"),  # count 0
    ("rtp", h("a0 00 00 00 00 00 00 00 00 00 00 00 01 02 04"), "padding"),  # count > 3 bytes
    ("rtp", h("a0 00 00 00 00 00 00 00 00 00 00 00"), "padding"),  # no byte to count
    ("rtcp", b"", "short"),
    ("rtcp", h("80 c9 00"), "short"),
    ("rtcp", h("40 c9 00 01 00 00 00 2a"), "version"),
    ("rtcp", RR_EMPTY + h("c0 cb 00 00"), "version"),  # version 3 in the second packet
    ("rtcp", h("80 60 00 01 00 00 00 2a"), "rtcp-type"),  # an RTP header
    ("rtcp", h("80 e0 00 00"), "rtcp-type"),  # 224
    ("rtcp", h("80 c9 00 02 00 00 00 2a"), "rtcp-length"),
    ("rtcp", RR_EMPTY + h("81 cb 00"), "rtcp-length"),  # three bytes left over
    ("rtcp", h("a0 c9 00 01 00 00 00 00"), "padding"),  # count 0
    ("rtcp", h("a0 c9 00 01 00 00 00 05"), "padding"),  # count > body
    ("rtcp", h("80 c8 00 01 00 00 00 2a"), "report"),  # SR without sender info
    ("rtcp", h("81 c9 00 01 00 00 00 2a"), "report"),  # RR claiming a block it lacks
    ("rtcp", h("80 c9 00 00"), "report"),  # RR without SSRC
    ("rtcp", h("82 ca 00 02 00 00 00 01 00 00 00 00"), "sdes"),  # second chunk missing
    ("rtcp", h("81 ca 00 02 00 00 00 01 01 09 61 62"), "sdes"),  # item longer than packet
    ("rtcp", h("81 ca 00 02 00 00 00 01 01 01 61 02"), "sdes"),  # item header cut off
    ("rtcp", h("82 cb 00 01 00 00 00 01"), "bye"),  # 2 SSRCs claimed, 1 present
    ("rtcp", h("81 cb 00 02 00 00 00 01 05 61 62 63"), "bye"),  # reason longer than packet
    ("rtcp", h("80 cc 00 01 00 00 00 01"), "app"),  # no name
]


def parser(kind: str) -> Callable[[bytes], object]:
    return RtpPacket.parse if kind == "rtp" else parse_rtcp


@pytest.mark.parametrize(("kind", "data", "reason"), ERROR_CASES)
def test_error_reasons(kind: str, data: bytes, reason: str) -> None:
    with pytest.raises(RtpError) as info:
        parser(kind)(data)
    assert info.value.reason == reason
    message = str(info.value)
    assert message and "\n" not in message


def test_every_reason_is_exercised() -> None:
    assert {reason for _, _, reason in ERROR_CASES} == REASONS


def test_error_is_value_error_and_pickles() -> None:
    with pytest.raises(ValueError) as info:
        RtpPacket.parse(b"x")
    assert isinstance(info.value, RtpError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.reason, str(copy)) == (info.value.reason, str(info.value))


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 0, 0, 0),
        RtpPacket(-1, 0, 0, 0),
        RtpPacket(72, 0, 0, 0),
        RtpPacket(96, 65536, 0, 0),
        RtpPacket(96, -1, 0, 0),
        RtpPacket(96, 0, 1 << 32, 0),
        RtpPacket(96, 0, 0, -1),
        RtpPacket(96, 0, 0, 0, csrcs=tuple(range(16))),
        RtpPacket(96, 0, 0, 0, csrcs=(1 << 32,)),
        RtpPacket(96, 0, 0, 0, extension=(0x10000, b"")),
        RtpPacket(96, 0, 0, 0, extension=(0xBEDE, b"abc")),
        RtpPacket(96, 0, 0, 0, extension=(0xBEDE, bytes(4 * 65536))),
    ],
)
def test_serialize_rejects_bad_fields(packet: RtpPacket) -> None:
    with pytest.raises(ValueError) as info:
        bytes(packet)
    assert not isinstance(info.value, RtpError)


# --------------------------------------------------------------------------------------------
# RTP: properties

u32 = st.integers(0, 0xFFFFFFFF)
payload_types = st.integers(0, 127).filter(lambda pt: not 72 <= pt <= 76)


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    return RtpPacket(
        payload_type=draw(payload_types),
        sequence=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=64)),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(u32, max_size=15))),
        extension=draw(
            st.none()
            | st.tuples(
                st.integers(0, 0xFFFF),
                st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
            )
        ),
    )


@RICH
@given(rtp_packets())
def test_rtp_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data
    # RFC 5761: only M=1 with PT 64..95 looks like RTCP, which is why those PTs are not muxed
    assert is_rtcp(data) == (packet.marker and 64 <= packet.payload_type <= 95)


@RICH
@given(rtp_packets(), st.integers(1, 255), st.data())
def test_rtp_padding_is_stripped(packet: RtpPacket, count: int, data: st.DataObject) -> None:
    filler = data.draw(st.binary(min_size=count - 1, max_size=count - 1))
    raw = bytearray(bytes(packet))
    raw[0] |= 0x20
    padded = bytes(raw) + filler + bytes([count])
    assert RtpPacket.parse(padded) == packet


def assert_rtp_or_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError as err:
        assert err.reason in REASONS
        assert "\n" not in str(err)
    else:
        assert isinstance(packet, RtpPacket)
        assert len(packet.payload) <= len(data) - 12


def assert_rtcp_or_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtpError as err:
        assert err.reason in REASONS
        assert "\n" not in str(err)
    else:
        for packet in packets:
            # whatever was parsed is in range, serializes again (APP data once whole words)
            # and reads back as itself
            whole = replace(packet, data=packet.data[: len(packet.data) // 4 * 4]) \
                if isinstance(packet, AppPacket) else packet
            assert parse_rtcp(bytes(whole)) == [whole]


@FAST
@given(st.binary(max_size=2000))
def test_rtp_parse_arbitrary_bytes(data: bytes) -> None:
    assert_rtp_or_error(data)


@FAST
@given(st.binary(min_size=2, max_size=200).map(lambda b: h("80") + b[1:]))
def test_rtp_parse_arbitrary_v2_bytes(data: bytes) -> None:
    assert_rtp_or_error(data)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@RICH
@given(mutated(rtp_packets().map(bytes)))
def test_rtp_parse_mutated(data: bytes) -> None:
    assert_rtp_or_error(data)


# --------------------------------------------------------------------------------------------
# demultiplexing and wraparound arithmetic


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (RR_EMPTY, True),
        (h("80 c8"), True),
        (h("81 cd 00 02"), True),  # RTPFB (205)
        (h("80 df"), True),  # 223, the top of the range
        (h("80 c0"), True),  # 192
        (h("80 bf 00 00"), False),  # M=1 PT=63
        (h("80 e0 00 00"), False),  # M=1 PT=96
        (h("80 60 00 00"), False),  # PT 96
        (h("80 00 00 00"), False),  # trx PT 0
        (h("40 c9 00 01"), False),  # version 1
        (h("80"), False),
        (b"", False),
    ],
)
def test_is_rtcp(data: bytes, expected: bool) -> None:
    assert is_rtcp(data) is expected


@pytest.mark.parametrize(
    ("newer", "older", "delta"),
    [
        (5, 5, 0),
        (6, 5, 1),
        (5, 6, -1),
        (0, 65535, 1),
        (65535, 0, -1),
        (2, 65530, 8),
        (65530, 2, -8),
        (32767, 0, 32767),
        (32768, 0, -32768),
        (0, 32768, -32768),
    ],
)
def test_seq_delta(newer: int, older: int, delta: int) -> None:
    assert seq_delta(newer, older) == delta


@pytest.mark.parametrize(
    ("newer", "older", "delta"),
    [
        (160, 0, 160),
        (0, 160, -160),
        (0, 0xFFFFFF60, 160),
        (100, 0xFFFFFFFF, 101),
        (0xFFFFFFFF, 100, -101),
        (0x7FFFFFFF, 0, 0x7FFFFFFF),
        (0x80000000, 0, -0x80000000),
    ],
)
def test_ts_delta(newer: int, older: int, delta: int) -> None:
    assert ts_delta(newer, older) == delta


@FAST
@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_seq_delta_inverts_addition(older: int, delta: int) -> None:
    assert seq_delta((older + delta) & 0xFFFF, older) == delta


@FAST
@given(u32, st.integers(-(1 << 31), (1 << 31) - 1))
def test_ts_delta_inverts_addition(older: int, delta: int) -> None:
    assert ts_delta((older + delta) & 0xFFFFFFFF, older) == delta


# --------------------------------------------------------------------------------------------
# RTCP

BLOCK_A = ReportBlock(0x11111111, 25, 1234, 0x0002FFFF, 480, 0xB7052000, 0x00054000)
BLOCK_B = ReportBlock(0x22222222, 0, -3, 17, 0, 0, 0)
SR = SenderReport(0xDEADBEEF, 0xE1234567_89ABCDEF, 0x10203040, 1000, 160000, (BLOCK_A, BLOCK_B))


def test_sender_report_round_trip() -> None:
    data = bytes(SR)
    assert len(data) == 28 + 2 * 24
    assert data[:4] == h("82 c8 00 12")  # RC=2, PT=200, 19 words
    assert parse_rtcp(data) == [SR]
    assert serialize_rtcp([SR]) == data


def test_receiver_report_known_bytes() -> None:
    data = h(
        "81 c9 00 07  00 00 00 2a"
        "  cafebabe  05 ff ff ff  00 01 00 05  00 00 00 10  b7 05 20 00  00 05 40 00"
    )
    block = ReportBlock(0xCAFEBABE, 5, -1, 0x00010005, 16, 0xB7052000, 0x00054000)
    assert parse_rtcp(data) == [ReceiverReport(42, (block,))]
    assert bytes(ReceiverReport(42, (block,))) == data


def test_sdes_known_bytes() -> None:
    # items ending one byte short of a word: one null; ending on a word: four nulls
    assert bytes(SourceDescription.cname(1, "user@host")) == (
        h("81 ca 00 04 00 00 00 01 01 09") + b"user@host" + h("00")
    )
    assert bytes(SourceDescription.cname(1, "a@host")) == (
        h("81 ca 00 04 00 00 00 01 01 06") + b"a@host" + h("00 00 00 00")
    )
    assert bytes(SourceDescription(((9, ()),))) == h("81 ca 00 02 00 00 00 09 00 00 00 00")


def test_sdes_helpers_and_several_chunks() -> None:
    sdes = SourceDescription(
        (
            (1, ((SDES_CNAME, b"me@here"), (SDES_TOOL, b"deskcast 0.1"))),
            (2, ()),
            (3, ((SDES_CNAME, "zoë@host".encode()),)),
        )
    )
    data = bytes(sdes)
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == [sdes]
    assert sdes.cnames() == {1: "me@here", 3: "zoë@host"}


def test_sdes_last_chunk_without_terminator_is_tolerated() -> None:
    data = h("81 ca 00 02 00 00 00 01 01 02") + b"ab"
    assert parse_rtcp(data) == [SourceDescription(((1, ((SDES_CNAME, b"ab"),)),))]


def test_bye_known_bytes() -> None:
    assert bytes(Bye((1,))) == h("81 cb 00 01 00 00 00 01")
    assert bytes(Bye((1, 2), "bye")) == h("82 cb 00 03 00 00 00 01 00 00 00 02 03") + b"bye"
    assert bytes(Bye((1,), "done")) == h("81 cb 00 03 00 00 00 01 04") + b"done" + bytes(3)
    assert parse_rtcp(bytes(Bye((1,), "done"))) == [Bye((1,), "done")]
    assert parse_rtcp(h("80 cb 00 00")) == [Bye(())]
    # a reason over 255 bytes is cut at a character boundary
    long_reason = bytes(Bye((1,), "é" * 200))
    assert long_reason[8] == 254 and len(long_reason) == 8 + 1 + 254 + 1
    assert parse_rtcp(long_reason) == [Bye((1,), "é" * 127)]
    # invalid UTF-8 is replaced, not an error
    assert parse_rtcp(h("81 cb 00 02 00 00 00 01 02 ff fe 00")) == [Bye((1,), "\ufffd\ufffd")]


def test_app_round_trip() -> None:
    probe = AppPacket(3, 0x01020304, b"DKCT", b"ping\x00\x00\x00\x01")
    data = bytes(probe)
    assert data[:4] == bytes([0x83, RTCP_APP, 0, 4])
    assert parse_rtcp(data) == [probe]


def test_compound_sr_sdes_bye() -> None:
    packets: list[RtcpPacket] = [
        SR,
        SourceDescription.cname(SR.ssrc, "user@host"),
        Bye((SR.ssrc,), "stream ended"),
    ]
    data = serialize_rtcp(packets)
    assert len(data) % 4 == 0
    assert is_rtcp(data)
    assert parse_rtcp(data) == packets
    assert serialize_rtcp(parse_rtcp(data)) == data


def test_unknown_rtcp_type_is_skipped() -> None:
    unknown = h("80 d2 00 02 00 00 00 05 de ad be ef")  # type 210, 12 bytes
    feedback = h("81 cd 00 02 00 00 00 05 00 00 00 06")  # RTPFB (205), a generic NACK header
    data = RR_EMPTY + unknown + feedback + bytes(Bye((42,)))
    assert parse_rtcp(data) == [ReceiverReport(42), Bye((42,))]
    assert parse_rtcp(unknown) == []


def test_truncated_compound() -> None:
    data = serialize_rtcp([SR, SourceDescription.cname(1, "user@host")])
    for cut in range(1, len(data) - len(bytes(SR))):
        with pytest.raises(RtpError) as info:
            parse_rtcp(data[:-cut])
        assert info.value.reason == "rtcp-length"
    for cut in range(4, len(bytes(SR)), 4):  # the SR itself, cut to whole words
        with pytest.raises(RtpError) as info:
            parse_rtcp(bytes(SR)[:cut])
        assert info.value.reason == "rtcp-length"


def test_rtcp_padding() -> None:
    # the last packet of a compound padded to 8 more bytes (as for SRTCP block ciphers)
    bye = bytearray(bytes(Bye((7,), "x")))
    bye[0] |= 0x20
    bye[3] += 2
    data = RR_EMPTY + bytes(bye) + bytes(7) + b"\x08"
    assert parse_rtcp(data) == [ReceiverReport(42), Bye((7,), "x")]
    # padding on a packet that is not the last one: tolerated
    rr = bytearray(RR_EMPTY)
    rr[0] |= 0x20
    rr[3] += 1
    assert parse_rtcp(bytes(rr) + h("00 00 00 04") + bytes(Bye((7,)))) == [
        ReceiverReport(42),
        Bye((7,)),
    ]


def test_sr_profile_extension_is_ignored() -> None:
    data = bytearray(bytes(SenderReport(1, 2, 3, 4, 5)))
    data[3] += 2
    assert parse_rtcp(bytes(data) + bytes(8)) == [SenderReport(1, 2, 3, 4, 5)]


@pytest.mark.parametrize(
    "packet",
    [
        SenderReport(1, 1 << 64, 0, 0, 0),
        SenderReport(1, 0, 1 << 32, 0, 0),
        SenderReport(1, 0, 0, 0, 0, (BLOCK_A,) * 32),
        ReceiverReport(1 << 32),
        ReceiverReport(1, (ReportBlock(1, fraction_lost=256),)),
        ReceiverReport(1, (ReportBlock(1, cumulative_lost=0x800000),)),
        ReceiverReport(1, (ReportBlock(1, cumulative_lost=-0x800001),)),
        ReceiverReport(1, (ReportBlock(1, jitter=-1),)),
        SourceDescription(((1, ((0, b"x"),)),)),
        SourceDescription(((1, ((SDES_CNAME, bytes(256)),)),)),
        SourceDescription(((-1, ()),)),
        SourceDescription(tuple((i, ()) for i in range(32))),
        Bye(tuple(range(32))),
        AppPacket(32, 1, b"DKCT"),
        AppPacket(0, 1, b"DKC"),
        AppPacket(0, 1, b"DKCT", b"abc"),
        AppPacket(0, 1, b"DKCT", bytes(4 * 65535)),
    ],
)
def test_rtcp_serialize_rejects_bad_fields(packet: RtcpPacket) -> None:
    with pytest.raises(ValueError):
        serialize_rtcp([packet])


def test_rtcp_limits() -> None:
    packets: list[RtcpPacket] = [
        SenderReport(1, 2, 3, 4, 5, (BLOCK_A,) * 31),
        SourceDescription(tuple((i, ((SDES_CNAME, bytes(255)),) * 3) for i in range(31))),
        Bye(tuple(range(31)), "r" * 255),
        AppPacket(31, 1, b"DKCT", bytes(4 * 1000)),
    ]
    data = serialize_rtcp(packets)
    assert [data[0] & 0x1F, data[len(bytes(packets[0])) + 0] & 0x1F] == [31, 31]
    assert parse_rtcp(data) == packets


report_blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_seq=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
blocks = st.lists(report_blocks, max_size=3).map(tuple)  # 31 blocks: test_rtcp_limits
rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=blocks,
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=blocks),
    st.builds(
        SourceDescription,
        st.lists(
            st.tuples(
                u32,
                st.lists(
                    st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=3
                ).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(
        Bye,
        st.lists(u32, max_size=4).map(tuple),
        st.text(max_size=40),
    ),
    st.builds(
        AppPacket,
        st.integers(0, 31),
        u32,
        st.binary(min_size=4, max_size=4),
        st.integers(0, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
)


@RICH
@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_rtcp_round_trip(packets: list[RtcpPacket]) -> None:
    data = serialize_rtcp(packets)
    assert len(data) % 4 == 0
    assert is_rtcp(data)
    assert parse_rtcp(data) == packets


@FAST
@given(st.binary(max_size=2000))
def test_rtcp_parse_arbitrary_bytes(data: bytes) -> None:
    assert_rtcp_or_error(data)


@st.composite
def framed_garbage(draw: st.DrawFn) -> bytes:
    """RTCP headers of random types 192-223, random count and P bits, random word bodies."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        words = draw(st.integers(0, 12))
        b0 = 0x80 | draw(st.integers(0, 63))
        parts.append(rtcp_header(b0, draw(st.integers(192, 223)), words))
        parts.append(draw(st.binary(min_size=4 * words, max_size=4 * words)))
    return b"".join(parts)


@RICH
@given(framed_garbage())
def test_rtcp_parse_well_framed_garbage(data: bytes) -> None:
    # right framing, so the per-type parsers get the random bodies
    assert_rtcp_or_error(data)


@RICH
@given(mutated(st.lists(rtcp_packets, min_size=1, max_size=2).map(serialize_rtcp)))
def test_rtcp_parse_mutated(data: bytes) -> None:
    assert_rtcp_or_error(data)
