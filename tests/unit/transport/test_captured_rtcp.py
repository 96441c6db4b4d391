"""RTCP as trx-tx (oRTP) and ffmpeg really send it (tests/data/datagrams/), read with
deskcast's parser: compound packets of the kinds each sender makes, about the stream it sends,
with a wall clock and an RTP clock that agree with each other and with when they arrived."""

from __future__ import annotations

import datetime
import itertools

import pytest

from deskcast.transport.rtcp import (
    SDES_CNAME,
    SDES_TOOL,
    Bye,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
)
from deskcast.transport.rtp import is_rtcp, ts_delta

from .captured import FFMPEG_RTP, RTCP, TRX, Capture, datagrams, rtp_packets

NTP_UNIX_OFFSET = 2208988800
"""Seconds from 1900 (NTP's epoch) to 1970 (Unix's)."""


def reports(capture: Capture) -> list[tuple[float, list[RtcpPacket]]]:
    """(arrival in seconds, parsed compound packet) of each RTCP datagram."""
    return [(record.at_us / 1e6, parse_rtcp(record.data)) for record in datagrams(capture, RTCP)]


def sender_reports(capture: Capture) -> list[tuple[float, SenderReport]]:
    found = []
    for at, packets in reports(capture):
        assert isinstance(packets[0], SenderReport)
        found.append((at, packets[0]))
    return found


@pytest.mark.parametrize("capture", [TRX, FFMPEG_RTP], ids=str)
def test_every_datagram_on_the_rtcp_port_is_rtcp_and_starts_with_a_sender_report(
    capture: Capture,
) -> None:
    raw = datagrams(capture, RTCP)
    assert len(raw) >= 2
    assert all(is_rtcp(record.data) for record in raw)
    ssrc = rtp_packets(capture)[0].ssrc
    for _, sr in sender_reports(capture):
        assert sr.ssrc == ssrc
        assert sr.reports == ()  # neither sender receives anything to report on


def test_trx_sends_a_sender_report_and_its_source_description_every_few_seconds() -> None:
    ssrc = rtp_packets(TRX)[0].ssrc
    found = reports(TRX)
    assert len(found) >= 3
    for _, packets in found:
        assert [type(p) for p in packets] == [SenderReport, SourceDescription]
        sdes = packets[1]
        assert isinstance(sdes, SourceDescription)
        assert len(sdes.chunks) == 1 and sdes.chunks[0][0] == ssrc
        items = dict(sdes.chunks[0][1])
        assert items[SDES_CNAME] == b"unknown@unknown"  # oRTP's default CNAME
        assert items[SDES_TOOL].startswith(b"oRTP-")
        assert sdes.cnames() == {ssrc: "unknown@unknown"}
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(found)]
    assert all(5.0 < gap < 7.0 for gap in gaps)


@pytest.mark.parametrize("capture", [TRX, FFMPEG_RTP], ids=str)
def test_the_sender_report_clocks_agree_with_each_other_and_with_arrival(
    capture: Capture,
) -> None:
    """Between two reports, the RTP clock advances at the stream's rate (8 kHz for trx,
    48 kHz for ffmpeg) against the NTP clock, and the NTP clock as they arrived; the NTP
    time is a date of this era."""
    srs = sender_reports(capture)
    for _, sr in srs:
        when = datetime.datetime.fromtimestamp((sr.ntp_timestamp >> 32) - NTP_UNIX_OFFSET,
                                               datetime.UTC)
        assert 2024 <= when.year < 2036
    for (at_a, a), (at_b, b) in itertools.pairwise(srs):
        ntp_s = (b.ntp_timestamp - a.ntp_timestamp) / 2**32
        assert ntp_s == pytest.approx(at_b - at_a, abs=0.05)
        rate = ts_delta(b.rtp_timestamp, a.rtp_timestamp) / ntp_s
        assert rate == pytest.approx(capture.clock, rel=0.01)
        assert b.packet_count > a.packet_count and b.octet_count > a.octet_count


def test_trx_reports_count_the_packets_sent_up_to_the_timestamp_of_the_last() -> None:
    """oRTP's report: the RTP timestamp of the last packet sent and how many were sent, so
    the timestamp is (count - 1) frames of 160 after the first packet's; the octets are
    payload octets, as many per packet as the captured payloads carry."""
    packets = rtp_packets(TRX)
    sizes = [len(p.payload) for p in packets]
    step = TRX.frame_samples * TRX.clock // 48000
    for _, sr in sender_reports(TRX):
        assert ts_delta(sr.rtp_timestamp, packets[0].timestamp) == (sr.packet_count - 1) * step
        assert min(sizes) <= sr.octet_count / sr.packet_count <= max(sizes)


def test_ffmpeg_reports_nothing_sent_first_and_every_packet_with_a_bye_last() -> None:
    packets = rtp_packets(FFMPEG_RTP)
    (_, first), (_, last) = sender_reports(FFMPEG_RTP)
    assert (first.packet_count, first.octet_count) == (0, 0)
    # stamped with the RTP clock at its sending time: before a packet's time has passed
    assert 0 <= ts_delta(first.rtp_timestamp, packets[0].timestamp) < FFMPEG_RTP.frame_samples
    assert last.packet_count == len(packets)
    assert last.octet_count == sum(len(p.payload) for p in packets)
    compound = reports(FFMPEG_RTP)
    assert [type(p) for p in compound[0][1]] == [SenderReport]
    assert compound[-1][1][1:] == [Bye((packets[0].ssrc,), "")]
