"""One end's RTCP (deskcast.transport.rtcpsession): a sender's and a receiver's session talk
to each other, with the clocks passed in."""

from __future__ import annotations

import pytest

from deskcast.transport.receive.stats import SequenceTracker
from deskcast.transport.rtcp import ReceiverReport, SenderReport, parse_rtcp
from deskcast.transport.rtcpsession import RtcpSession
from deskcast.transport.srtp import SrtpError, SrtpKey

KEY = SrtpKey(bytes(range(30)))
OTHER_KEY = SrtpKey(bytes(range(1, 31)))
WALL = 1_800_000_000.0


class Wall:
    def __init__(self) -> None:
        self.now = WALL

    def __call__(self) -> float:
        return self.now


def pair(key: SrtpKey | None = None) -> tuple[RtcpSession, RtcpSession, Wall]:
    wall = Wall()
    sender = RtcpSession(0x5E, "tx@here", interval_s=5.0, key=key, wallclock=wall)
    receiver = RtcpSession(0x7E, "rx@there", interval_s=2.0, key=key, wallclock=wall)
    receiver.follow(0x5E)
    return sender, receiver, wall


def received(seqs: range) -> SequenceTracker:
    tracker = SequenceTracker()
    for seq in seqs:
        tracker.update(seq)
    return tracker


@pytest.mark.parametrize("key", [None, KEY])
def test_the_sender_learns_loss_jitter_and_the_round_trip(key: SrtpKey | None) -> None:
    """SR out at 0; it takes 30 ms to arrive; the receiver answers 250 ms later; the RR takes
    30 ms back: the round trip is 60 ms, the time the receiver held the SR not counted."""
    sender, receiver, wall = pair(key)
    sr = sender.sender_report(rtp_timestamp=48000, packets=50, octets=8000)
    wall.now += 0.03
    assert receiver.receive(receiver.unprotect(sr), now=10.03)
    tracker = received(range(0, 100, 2))                    # every other packet lost
    rr = receiver.receiver_report(10.28, tracker, jitter=480)
    wall.now += 0.25 + 0.03
    assert sender.receive(sender.unprotect(rr), now=7.0)
    fb = sender.feedback
    assert fb.receiver_reports == 1 and fb.last_report == 7.0
    assert fb.receiver_loss_pct == 100 * 126 / 256     # 49 of 99 lost: 126.7/256, floored
    assert fb.receiver_jitter_ms == pytest.approx(10.0)
    assert fb.rtt_ms == pytest.approx(60.0, abs=0.05)


def test_a_receiver_report_before_any_sender_report_has_no_round_trip() -> None:
    sender, receiver, _ = pair()
    rr = receiver.receiver_report(1.0, received(range(10)), jitter=0)
    (report, _sdes) = parse_rtcp(rr)
    assert isinstance(report, ReceiverReport) and report.ssrc == 0x7E
    assert report.reports[0].ssrc == 0x5E and report.reports[0].lsr == 0
    assert sender.receive(rr, now=1.0)
    assert sender.feedback.receiver_reports == 1 and sender.feedback.rtt_ms is None


def test_only_the_followed_senders_reports_are_answered() -> None:
    sender, receiver, _ = pair()
    other = RtcpSession(0x99, "other", interval_s=5.0, wallclock=Wall())
    receiver.receive(other.sender_report(0, 0, 0), now=1.0)
    block = parse_rtcp(receiver.receiver_report(2.0, received(range(3)), 0))[0]
    assert isinstance(block, ReceiverReport) and block.reports[0].lsr == 0
    receiver.receive(sender.sender_report(0, 0, 0), now=3.0)
    block = parse_rtcp(receiver.receiver_report(3.5, received(range(3)), 0))[0]
    assert isinstance(block, ReceiverReport) and block.reports[0].lsr != 0
    assert block.reports[0].dlsr == 0x8000                       # 0.5 s in 1/65536 s
    receiver.follow(0x99)                                        # a new sender: forgotten
    block = parse_rtcp(receiver.receiver_report(4.0, received(range(3)), 0))[0]
    assert isinstance(block, ReceiverReport) and block.reports[0].lsr == 0


def test_reports_about_someone_else_are_not_feedback() -> None:
    sender, _, _ = pair()
    stranger = RtcpSession(0x7F, "x", interval_s=2.0)
    stranger.follow(0x1234)
    assert sender.receive(stranger.receiver_report(1.0, received(range(5)), 0), now=1.0)
    assert sender.feedback.receiver_reports == 0


def test_malformed_and_forged_reports() -> None:
    sender, _, _ = pair(KEY)
    assert not sender.receive(b"\x80\xc9\x00\x09", now=0.0)       # claims 40 bytes, has 4
    forged = RtcpSession(0x7E, "rx", interval_s=2.0, key=OTHER_KEY)
    forged.follow(0x5E)
    with pytest.raises(SrtpError) as err:
        sender.unprotect(forged.receiver_report(1.0, received(range(5)), 0))
    assert err.value.reason == "auth"
    assert sender.feedback.receiver_reports == 0


def test_sender_report_is_stamped_with_the_wall_clock_and_counts() -> None:
    sender, _, _ = pair()
    sr = parse_rtcp(sender.sender_report(5, packets=(1 << 32) + 3, octets=7))[0]
    assert isinstance(sr, SenderReport)
    assert sr.ntp_timestamp >> 32 == int(WALL) + 2208988800
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (5, 3, 7)


def test_reports_fall_due_at_the_interval() -> None:
    sender, _, _ = pair()
    sender.start(100.0, 1.0)
    due = [t for t in (100.0, 100.9, 101.0, 103.0, 105.9, 106.0, 111.0) if sender.due(t)]
    assert due == [101.0, 106.0, 111.0]
