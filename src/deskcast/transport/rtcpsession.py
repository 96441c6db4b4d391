"""One end's RTCP (RFC 3550 section 6): the same object in the sender and in the receiver.

The sender reports what it has sent (SR) and reads what the receiver says about its stream
(report blocks about its SSRC: loss, jitter and, through LSR/DLSR, the round trip). The
receiver reports what it has received from the sender it plays (RR), with the LSR/DLSR of that
sender's last SR. With a key both are SRTCP (RFC 3711). Each end keeps its own socket: the
session turns datagrams into what they say, and what there is to say into datagrams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deskcast.transport.ntp import (
    dlsr_from_seconds,
    ntp_from_unix,
    ntp_middle32,
    round_trip_seconds,
)
from deskcast.transport.receive.stats import SequenceTracker
from deskcast.transport.rtcp import (
    AppPacket,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from deskcast.transport.rtp import OPUS_CLOCK_RATE, U32, RtpError
from deskcast.transport.srtp import SrtpKey, SrtpReceiver, SrtpSender

__all__ = ["Feedback", "RtcpSession"]


@dataclass
class Feedback:
    """What the far end says about our stream: its report blocks about our SSRC."""

    receiver_reports: int = 0
    last_report: float | None = None
    """When the receiver last reported back (our clock, seconds); None: never (yet)."""
    receiver_loss_pct: float = 0.0
    receiver_jitter_ms: float = 0.0
    rtt_ms: float | None = None

    def fields(self, now: float) -> dict[str, object]:
        """For --stats-json, rounded; ``since_report_s`` on ``now``'s clock."""
        return {
            "receiver_reports": self.receiver_reports,
            "receiver_loss_pct": round(self.receiver_loss_pct, 1),
            "receiver_jitter_ms": round(self.receiver_jitter_ms, 2),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 2),
            "since_report_s": None if self.last_report is None else
            round(now - self.last_report, 1),
        }


class RtcpSession:
    """The RTCP of one end with SSRC ``ssrc``, reporting every ``interval_s``.

    Incoming: :meth:`unprotect` (SRTCP, with a key) then :meth:`receive`. Outgoing:
    :meth:`due` says when, :meth:`sender_report` / :meth:`receiver_report` give the datagram.
    ``wallclock`` (Unix time) stamps sender reports and times the round trip; the other times
    are the caller's clock, passed in.
    """

    def __init__(self, ssrc: int, cname: str, *, interval_s: float, key: SrtpKey | None = None,
                 feedback: Feedback | None = None,
                 wallclock: Callable[[], float] = time.time,
                 on_app: Callable[[AppPacket, float, object], None] | None = None) -> None:
        self.ssrc = ssrc
        self.cname = cname
        self.interval_s = interval_s
        self.feedback = feedback if feedback is not None else Feedback()
        """Filled in from report blocks about ``ssrc`` (the sender's view of its receiver)."""
        self.remote_ssrc: int | None = None
        """The sender we receive (:meth:`follow`), whose sender reports we answer."""
        self._wallclock = wallclock
        self.on_app = on_app
        """Takes the APP packets that come in (the clock exchange), with their arrival time
        and the address they came from."""
        self._protect = SrtpSender(key) if key is not None else None
        self._unprotect = SrtpReceiver(key) if key is not None else None
        self._next = 0.0
        self._lsr = 0
        self._lsr_at = 0.0

    # --- when ---------------------------------------------------------------------------------

    def start(self, now: float, first_in_s: float) -> None:
        """The first report is due ``first_in_s`` after ``now``."""
        self._next = now + first_in_s

    def due(self, now: float) -> bool:
        """Whether a report is due at ``now``; if so, the next one is ``interval_s`` later."""
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    # --- in -----------------------------------------------------------------------------------

    def follow(self, ssrc: int) -> None:
        """From now on we receive ``ssrc``: its sender reports are the ones answered."""
        self.remote_ssrc = ssrc
        self._lsr, self._lsr_at = 0, 0.0

    def unprotect(self, data: bytes) -> bytes:
        """The plain compound packet (as it is without a key); raises
        :class:`~deskcast.transport.srtp.SrtpError` for one not authentic or replayed."""
        return data if self._unprotect is None else self._unprotect.unprotect_rtcp(data)

    def receive(self, data: bytes, now: float, addr: object = None) -> bool:
        """Take a plain compound packet that arrived at ``now`` from ``addr``; False if it
        does not parse."""
        try:
            packets = parse_rtcp(data)
        except RtpError:
            return False
        self.take(packets, now, addr=addr)
        return True

    def take(self, packets: Sequence[RtcpPacket], now: float,
             into: Feedback | None = None, addr: object = None) -> None:
        """Take parsed packets that arrived at ``now`` from ``addr``; what a receiver says
        about our stream goes to ``into`` (a sender with several destinations keeps one per
        destination), else to :attr:`feedback`; APP packets to :attr:`on_app`."""
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc == self.remote_ssrc:
                self._lsr, self._lsr_at = ntp_middle32(packet.ntp_timestamp), now
            if isinstance(packet, ReceiverReport | SenderReport):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self._heard(block, now, self.feedback if into is None else into)
            elif isinstance(packet, AppPacket) and self.on_app is not None:
                self.on_app(packet, now, addr)

    def _heard(self, block: ReportBlock, now: float, feedback: Feedback) -> None:
        feedback.receiver_reports += 1
        feedback.last_report = now
        feedback.receiver_loss_pct = 100 * block.fraction_lost / 256
        feedback.receiver_jitter_ms = 1000 * block.jitter / OPUS_CLOCK_RATE
        rtt = round_trip_seconds(ntp_from_unix(self._wallclock()), block.lsr, block.dlsr)
        feedback.rtt_ms = None if rtt is None else 1000 * rtt

    # --- out ----------------------------------------------------------------------------------

    def sender_report(self, rtp_timestamp: int, packets: int, octets: int,
                      extra: Sequence[RtcpPacket] = ()) -> bytes:
        """SR + SDES (+ ``extra``): what we have sent up to ``rtp_timestamp``, stamped with
        the wall clock. Raises ValueError if SRTCP refuses it."""
        sr = SenderReport(self.ssrc, ntp_from_unix(self._wallclock()), rtp_timestamp & U32,
                          packets & U32, octets & U32)
        return self._seal([sr, SourceDescription.cname(self.ssrc, self.cname), *extra])

    def receiver_report(self, now: float, sequence: SequenceTracker, jitter: int) -> bytes:
        """RR + SDES about the sender we follow: loss from ``sequence`` (a new fraction-lost
        interval starts), ``jitter`` in timestamp units, and its last SR's LSR and the delay
        since (``now``: our clock). Raises ValueError if SRTCP refuses it."""
        assert self.remote_ssrc is not None, "follow() a sender first"
        dlsr = dlsr_from_seconds(now - self._lsr_at) if self._lsr else 0
        block = sequence.report_block(self.remote_ssrc, jitter, self._lsr, dlsr)
        return self._seal([ReceiverReport(self.ssrc, (block,)),
                           SourceDescription.cname(self.ssrc, self.cname)])

    def application(self, app: AppPacket) -> bytes:
        """``app`` as a compound packet of its own (behind an empty receiver report, as RFC
        3550 has every compound packet begin). Raises ValueError if SRTCP refuses it."""
        return self._seal([ReceiverReport(self.ssrc, ()), app])

    def _seal(self, packets: Sequence[RtcpPacket]) -> bytes:
        data = serialize_rtcp(packets)
        return data if self._protect is None else self._protect.protect_rtcp(data)
