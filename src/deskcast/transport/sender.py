"""The sending end: a :class:`~deskcast.playback.base.Sink` that encodes each block as one Opus
packet and sends it as RTP over UDP.

Standard mode follows RFC 3550 + RFC 7587 (dynamic payload type, 48 kHz timestamps, random
initial sequence number and timestamp). ``trx=True`` sends exactly what trx-rx expects:
payload type 0, timestamps in 8 kHz units, sequence and timestamp starting at 0.

One stream (one SSRC, one timestamp line) goes to every destination: where each datagram goes
and what each receiver reports back is :mod:`deskcast.transport.destinations`.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Endpoint, parse_hostport
from deskcast.errors import DeskcastError, EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink
from deskcast.transport import DEFAULT_PORT
from deskcast.transport.destinations import Destination, Destinations, SockAddr, resolve
from deskcast.transport.fec import FEC_PT, FEC_SSRC_XOR, FecEncoder
from deskcast.transport.receive.arrival import STAMP_SPACE, kernel_stamp
from deskcast.transport.rtcp import AppPacket, parse_rtcp
from deskcast.transport.rtcpsession import Feedback, RtcpSession
from deskcast.transport.rtp import (
    TRX_PAYLOAD_TYPE,
    TRX_TS_DIVISOR,
    RtpError,
    RtpPacket,
    is_rtcp,
)
from deskcast.transport.srtp import SrtpError, SrtpKey, SrtpSender
from deskcast.transport.timeline import TimeServer
from deskcast.transport.timesync import TimelineAnnounce

logger = logging.getLogger(__name__)

DYNAMIC_PT = 96
RTCP_INTERVAL_S = 5.0
"""RFC 3550's minimum interval between reports; RTCP goes to PORT+1, as trx does."""
FIRST_SR_S = 0.5
"""A destination added to a running stream gets its first sender report this long after (its
receiver has locked onto the stream by then), not at the next 5 s tick."""

__all__ = ["DYNAMIC_PT", "RtpSender", "SenderStats", "resolve"]


@dataclass
class SenderStats(Feedback):
    """What was sent, and what the receivers say about it: the
    :class:`~deskcast.transport.rtcpsession.Feedback` fields are every destination's in one
    (:meth:`~deskcast.transport.destinations.Destinations.summary`), times monotonic."""

    packets: int = 0
    octets: int = 0
    send_errors: int = 0
    started: float = 0.0


class RtpSender(Sink):
    """Blocks of exactly one Opus frame in, RTP datagrams out, to ``endpoint``'s host and
    ``also`` (more ``HOST[:PORT]``; more again, or fewer, while it runs:
    :meth:`add_destination`, :meth:`remove_destination`). Not clocked: the source paces."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int, *,
                 encoder: OpusEncoder, trx: bool = False, payload_type: int = DYNAMIC_PT,
                 ttl: int | None = None, dscp: int | None = None,
                 fec: FecEncoder | None = None, key: SrtpKey | None = None,
                 also: Sequence[str] = (), latency_s: float = 0.0) -> None:
        super().__init__(endpoint, fmt, block_frames)
        if key is not None and trx:
            raise EndpointError("trx-rx does not speak SRTP: drop --key or --trx")
        # SRTP: audio and repair packets out (RTCP: the session's, both ways).
        self.srtp = SrtpSender(key) if key is not None else None
        self.host, self.port = parse_hostport(endpoint.target, DEFAULT_PORT)
        """The first destination (the one an --sdp file names)."""
        self.initial = [endpoint.target, *also]
        self.destinations = Destinations(DEFAULT_PORT, ttl=ttl, dscp=dscp)
        self.encoder = encoder
        self.trx = trx
        self.payload_type = TRX_PAYLOAD_TYPE if trx else payload_type
        self.ssrc = secrets.randbits(32)
        self.sequence = 0 if trx else secrets.randbits(16)
        self.timestamp = 0 if trx else secrets.randbits(32)
        self.fec = fec
        self.fec_sequence = secrets.randbits(16)
        self.stats = SenderStats()
        self.rtcp = RtcpSession(self.ssrc, f"deskcast@{socket.gethostname()}",
                                interval_s=RTCP_INTERVAL_S, key=key, feedback=self.stats)
        self._too_long_warned = False
        self.timeline = None if trx else TimeServer(self.ssrc, fmt.rate, self.timestamp,
                                                   latency_s)
        """Our timeline, and the answers to the receivers' clock questions (not for trx)."""
        self._captured = 0
        """Samples read from the source so far."""

    @property
    def keeps_timeline(self) -> bool:
        """Whether every destination plays on our timeline (a route latency was given)."""
        return self.timeline is not None and self.timeline.latency_us > 0

    @property
    def name(self) -> str:
        more = len(self.destinations.current) - 1
        return (f"rtp://{self.host}:{self.port}" + (f" and {more} more" if more > 0 else "")
                + (" (trx)" if self.trx else "") + (" (SRTP)" if self.srtp is not None else ""))

    @property
    def _sock(self) -> socket.socket | None:
        """The first destination's socket."""
        dests = self.destinations.current
        return dests[0].sock if dests else None

    def open(self) -> None:
        try:
            for text in self.initial:
                self.destinations.add(text)
        except DeskcastError:
            self.destinations.close()
            raise
        self.stats.started = time.monotonic()
        # Keeping a timeline, the first report (it announces it) goes before the first packet.
        self.rtcp.start(self.stats.started, 0.0 if self.keeps_timeline else 1.0)
        logger.info("sending %s to %s, ssrc %08x, pt %d", self.encoder.describe(),
                    ", ".join(f"rtp://{d.name} ({d.addr[0]})" for d in self.destinations.current)
                    + (" (trx)" if self.trx else "") + (" (SRTP)" if self.srtp else ""),
                    self.ssrc, self.payload_type)

    def add_destination(self, text: str) -> None:
        """Send to ``HOST[:PORT]`` too, from the next packet on (any thread; resolves the
        name in the caller's)."""
        dest, new = self.destinations.add(text, first_sr_at=time.monotonic() + (
            0.0 if self.keeps_timeline else FIRST_SR_S))
        if new:
            logger.info("now also sending to %s (%s): %d destinations", dest.name,
                        dest.addr[0], len(self.destinations.current))
        else:
            logger.info("already sending to %s", dest.name)

    def remove_destination(self, text: str) -> None:
        """Stop sending to ``HOST[:PORT]`` from the next packet on (any thread)."""
        dest = self.destinations.remove(text)
        left = len(self.destinations.current)
        logger.info("stopped sending to %s: %s", dest.name, f"{left} destinations left" if left
                    else "none left, the stream goes nowhere until one is added")

    def write(self, block: PcmBlock) -> None:
        dests = self.destinations.current  # this block's audio and repair go to the same set
        self._captured += block.frames
        if self.timeline is not None:
            self.timeline.captured(self._captured)
        payload = self.encoder.encode(block)
        packet = RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload,
                           marker=self.stats.packets == 0)
        self._rtcp()  # before the packet: a first report announces the timeline ahead of it
        if self._send(self._protect(bytes(packet)), dests, audio=True):
            self.stats.packets += 1
            self.stats.octets += len(payload)
        if self.fec is not None:
            for repair in self.fec.add(self.sequence, self.timestamp, payload):
                extra = RtpPacket(FEC_PT, self.fec_sequence, self.timestamp,
                                  self.ssrc ^ FEC_SSRC_XOR, repair)
                self.fec_sequence = (self.fec_sequence + 1) & 0xFFFF
                if self._send(self._protect(bytes(extra)), dests):
                    self.stats.octets += len(repair)
        self.sequence = (self.sequence + 1) & 0xFFFF
        step = block.frames // TRX_TS_DIVISOR if self.trx else block.frames
        self.timestamp = (self.timestamp + step) & 0xFFFFFFFF

    def status_fields(self) -> dict[str, object]:
        st = self.stats
        now = time.monotonic()
        secs = max(1e-3, now - st.started)
        return {
            "packets": st.packets,
            "kbit_s": round(st.octets * 8 / secs / 1000, 1),
            "send_errors": st.send_errors,
            **self.destinations.summary().fields(now),
            "stray_reports": self.destinations.stray_reports,
            "destinations": [d.fields(now) for d in self.destinations.current],
        }

    def _rtcp(self) -> None:
        """Read what came back (receiver reports); send a sender report every 5 s, and a
        first one to a destination added while the stream runs."""
        now = time.monotonic()
        for sock in self.destinations.sockets:
            for _ in range(8):
                try:
                    data, ancdata, _, source = sock.recvmsg(2048, STAMP_SPACE)
                except OSError:
                    break
                # When it reached us, on our wall clock (a clock question's t2).
                arrived = kernel_stamp(ancdata) or time.time()
                self._incoming(data, source, now, arrived, sock)
        if self.trx:
            return
        dests = self.destinations.current
        if not self.rtcp.due(now):
            dests = tuple(d for d in dests if d.first_sr_at is not None and now >= d.first_sr_at)
            if not dests:
                return
        timeline = self.timeline
        rtp, extra = self.timestamp, []
        if timeline is not None and timeline.line.started:
            rtp = timeline.point(time.time()).rtp  # (RTP time, wall clock) on our timeline
            if self.keeps_timeline:
                extra.append(TimelineAnnounce(self.ssrc, timeline.latency_us).app())
        try:
            report = self.rtcp.sender_report(rtp, self.stats.packets, self.stats.octets,
                                             extra=extra)
        except ValueError as err:
            self._refused(err)
            return
        for dest in dests:
            dest.first_sr_at = None
        self._send(report, dests, rtcp=True)

    def _incoming(self, data: bytes, source: SockAddr, now: float, arrived: float,
                  sock: socket.socket) -> None:
        """One datagram that came back to the stream's socket from ``source``: receiver
        reports, and clock questions (answered at once, to where they came from)."""
        if not is_rtcp(data):
            return
        try:
            packets = parse_rtcp(self.rtcp.unprotect(data))
        except (SrtpError, RtpError) as err:
            logger.debug("RTCP from %s dropped: %s", source[0], err)
            return
        dest = self.destinations.reported(packets, source, self.ssrc)
        if dest is not None:
            self.rtcp.take(packets, now, into=dest.feedback)
            summary = self.destinations.summary()
            for name in ("receiver_reports", "last_report", "receiver_loss_pct",
                         "receiver_jitter_ms", "rtt_ms"):
                setattr(self.stats, name, getattr(summary, name))
        if self.timeline is not None:
            for packet in packets:
                if isinstance(packet, AppPacket):
                    self._answer(packet, source, arrived, sock)

    def _answer(self, app: AppPacket, source: SockAddr, arrived: float,
                sock: socket.socket) -> None:
        """Answer a clock question from one of our destinations (or anyone, multicasting)."""
        assert self.timeline is not None
        request = self.timeline.question(app)
        if request is None:
            return
        dests = self.destinations.current
        if not any(d.addr[0] == source[0] or d.multicast for d in dests):
            self.timeline.drop("time-stranger")
            return
        try:
            reply = self.rtcp.application(self.timeline.answer(request, arrived).app())
            sock.sendto(reply, source)
        except (ValueError, OSError) as err:
            logger.debug("clock answer to %s not sent: %s", source[0], err)

    def _protect(self, packet: bytes) -> bytes | None:
        """The packet as it is sent (SRTP with a key); None if it cannot be."""
        if self.srtp is None:
            return packet
        try:
            return self.srtp.protect(packet)
        except ValueError as err:
            self._refused(err)
            return None

    def _refused(self, err: ValueError) -> None:
        self.stats.send_errors += 1
        if not self._too_long_warned:
            self._too_long_warned = True
            logger.warning("not sent: %s; lower --bitrate or --frame-ms", err)

    def _send(self, data: bytes | None, to: Sequence[Destination], *, rtcp: bool = False,
              audio: bool = False) -> bool:
        """Send to each of ``to``; whether it went to any."""
        if data is None:
            return False
        sent = self.destinations.send(data, to, rtcp=rtcp, audio=audio)
        self.stats.send_errors += len(to) - sent
        return sent > 0

    def close(self) -> None:
        self.destinations.close()
