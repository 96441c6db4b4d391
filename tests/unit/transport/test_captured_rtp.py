"""RTP as trx-tx and ffmpeg really send it (datagrams recorded once: tests/data/datagrams/), read
with deskcast's parsers: one stream each, packets in order, timestamps that move by what the
Opus TOC says each packet plays, and a payload that decodes to the tone that was sent. The
SRTP capture is checked the same way once decrypted with its key."""

from __future__ import annotations

import itertools

import pytest

from deskcast.opus_packet import packet_samples
from deskcast.transport.rtp import TRX_PAYLOAD_TYPE, RtpPacket, is_rtcp, seq_delta, ts_delta

from .captured import (
    CAPTURES,
    FFMPEG_RTP,
    RTP,
    TONE_HZ,
    TRX,
    Capture,
    datagrams,
    rtp_packets,
    tone_hz,
)

each_capture = pytest.mark.parametrize("capture", CAPTURES, ids=str)


def pairs(packets: list[RtpPacket]) -> list[tuple[RtpPacket, RtpPacket]]:
    return list(itertools.pairwise(packets))


@each_capture
def test_a_few_dozen_datagrams_each_read_as_rtp_not_rtcp(capture: Capture) -> None:
    raw = datagrams(capture, RTP)
    assert len(raw) >= 40
    assert not any(is_rtcp(record.data) for record in raw)
    packets = rtp_packets(capture)
    assert len(packets) == len(raw)
    assert all(p.csrcs == () and p.extension is None for p in packets)
    assert all(len(p.payload) > 0 for p in packets)


@each_capture
def test_one_ssrc_and_one_payload_type_per_stream(capture: Capture) -> None:
    packets = rtp_packets(capture)
    assert len({p.ssrc for p in packets}) == 1
    assert len({p.payload_type for p in packets}) == 1
    if capture is TRX:
        assert packets[0].payload_type == TRX_PAYLOAD_TYPE  # trx labels Opus as PT 0
    else:
        assert 96 <= packets[0].payload_type <= 127  # ffmpeg: a dynamic payload type


@each_capture
def test_sequence_numbers_are_consecutive(capture: Capture) -> None:
    packets = rtp_packets(capture)
    assert [seq_delta(b.sequence, a.sequence) for a, b in pairs(packets)] == [1] * (
        len(packets) - 1)


@each_capture
def test_timestamps_step_by_the_samples_the_opus_toc_says(capture: Capture) -> None:
    """trx counts in 8 kHz units (160 for 20 ms), ffmpeg at Opus's 48 kHz (RFC 7587)."""
    packets = rtp_packets(capture)
    steps = [ts_delta(b.timestamp, a.timestamp) for a, b in pairs(packets)]
    said = [packet_samples(a.payload, capture.clock) for a, _ in pairs(packets)]
    assert steps == said
    assert set(steps) == {capture.frame_samples * capture.clock // 48000}


@each_capture
def test_the_toc_says_the_frame_size_the_sender_was_given(capture: Capture) -> None:
    assert {packet_samples(p.payload) for p in rtp_packets(capture)} == {capture.frame_samples}


def test_ffmpeg_marks_every_opus_packet_and_trx_none() -> None:
    """What each sender puts in the M bit (ffmpeg: each packet ends a frame; trx: never)."""
    assert all(p.marker for p in rtp_packets(FFMPEG_RTP))
    assert not any(p.marker for p in rtp_packets(TRX))


@each_capture
def test_payloads_decode_to_the_tone_that_was_sent(capture: Capture) -> None:
    assert tone_hz(rtp_packets(capture)) == pytest.approx(TONE_HZ, abs=0.5)


def test_a_reserialized_packet_is_the_datagram_that_arrived() -> None:
    """No padding, no extension: what the parser read is all there was."""
    for capture in (TRX, FFMPEG_RTP):
        for record, packet in zip(datagrams(capture, RTP), rtp_packets(capture), strict=True):
            assert bytes(packet) == record.data
