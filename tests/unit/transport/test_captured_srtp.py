"""SRTP and SRTCP as ffmpeg really sends them (``-srtp_out_suite AES_CM_128_HMAC_SHA1_80``, the
key in tests/data/datagrams/ffmpeg-srtp.key), opened with deskcast's receiver: with the key
every datagram decrypts (the RTP checks are test_captured_rtp's, on the decrypted stream);
with another key, altered or replayed, each is refused with a reason and nothing else."""

from __future__ import annotations

import pytest

from deskcast.transport.rtcp import SenderReport, parse_rtcp
from deskcast.transport.rtp import HEADER_SIZE, RtpPacket, ts_delta
from deskcast.transport.srtp import (
    RTCP_OVERHEAD,
    RTP_OVERHEAD,
    SrtpError,
    SrtpKey,
    SrtpReceiver,
)

from .captured import FFMPEG_SRTP, RTCP, RTP, SRTP_KEY_FILE, datagrams, rtp_packets, srtp_key


def raw(port: int) -> list[bytes]:
    return [record.data for record in datagrams(FFMPEG_SRTP, port)]


def test_the_key_file_holds_what_ffmpeg_took_as_srtp_out_params() -> None:
    text = SRTP_KEY_FILE.read_text(encoding="ascii").strip()
    assert len(text) == 40
    assert srtp_key().inline == text


def test_each_packet_gains_the_tag_and_keeps_its_header_in_the_clear() -> None:
    receiver = SrtpReceiver(srtp_key())
    for datagram in raw(RTP):
        plain = receiver.unprotect(datagram)
        assert len(datagram) == len(plain) + RTP_OVERHEAD
        assert datagram[:HEADER_SIZE] == plain[:HEADER_SIZE]
        assert datagram[HEADER_SIZE : len(plain)] != plain[HEADER_SIZE:]  # the payload is not
        outside = RtpPacket.parse(datagram)
        inside = RtpPacket.parse(plain)
        assert (outside.sequence, outside.timestamp, outside.ssrc) == (
            inside.sequence, inside.timestamp, inside.ssrc)


def test_srtcp_decrypts_to_the_sender_report_of_the_stream() -> None:
    receiver = SrtpReceiver(srtp_key())
    packets = rtp_packets(FFMPEG_SRTP)
    (datagram,) = raw(RTCP)
    plain = receiver.unprotect_rtcp(datagram)
    assert len(datagram) == len(plain) + RTCP_OVERHEAD
    (sr,) = parse_rtcp(plain)
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == packets[0].ssrc
    assert (sr.packet_count, sr.octet_count) == (0, 0)
    # ffmpeg stamps a report with the RTP clock of its sending time: within a packet's time
    # of the first one here
    assert 0 <= ts_delta(sr.rtp_timestamp, packets[0].timestamp) < FFMPEG_SRTP.frame_samples


def test_with_another_key_every_datagram_is_refused_as_not_authentic() -> None:
    material = bytearray(srtp_key().material)
    material[0] ^= 1
    receiver = SrtpReceiver(SrtpKey(bytes(material)))
    for datagram in raw(RTP):
        with pytest.raises(SrtpError) as refused:
            receiver.unprotect(datagram)
        assert refused.value.reason == "auth"
    for datagram in raw(RTCP):
        with pytest.raises(SrtpError) as refused:
            receiver.unprotect_rtcp(datagram)
        assert refused.value.reason == "auth"


def test_an_altered_datagram_is_refused_and_the_next_one_still_plays() -> None:
    receiver = SrtpReceiver(srtp_key())
    first, second = raw(RTP)[:2]
    altered = bytearray(first)
    altered[HEADER_SIZE + 3] ^= 0x10
    with pytest.raises(SrtpError) as refused:
        receiver.unprotect(bytes(altered))
    assert refused.value.reason == "auth"
    assert RtpPacket.parse(receiver.unprotect(first)) == rtp_packets(FFMPEG_SRTP)[0]
    assert RtpPacket.parse(receiver.unprotect(second)) == rtp_packets(FFMPEG_SRTP)[1]


def test_a_datagram_received_twice_is_refused_as_a_replay() -> None:
    receiver = SrtpReceiver(srtp_key())
    datagram = raw(RTP)[5]
    receiver.unprotect(datagram)
    with pytest.raises(SrtpError) as refused:
        receiver.unprotect(datagram)
    assert refused.value.reason == "replay"
