"""Admission: which datagrams are played, and where they go.

In order: ``--allow``; RTCP to the session (SRTCP checked there); with a key, SRTP checked;
an RTP packet parsed; a repair packet of ``send --fec`` rebuilds what its group lost; a
playable Opus packet of the sender being played goes into the jitter buffer, its timestamp
and arrival to the playout's clock estimate. Anything else is counted by reason and dropped:
it never stops playback.

Senders: the first one heard is played; another SSRC takes over only after the current one
has been silent for ``takeover_s`` (a restarted sender gets a new SSRC), and then every stage
after this one starts over (``on_new_sender``). A trx-tx stream (payload type 0, timestamps
in 8 kHz units) is recognised by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from deskcast.decode.opus import CorruptPacket, packet_samples
from deskcast.media import AudioFormat
from deskcast.transport.fec import FEC_PT, FEC_SSRC_XOR, FecDecoder
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.playout import Playout
from deskcast.transport.receive.allow import AllowList
from deskcast.transport.receive.senders import RESTART_JUMP_S, SenderStream
from deskcast.transport.receive.stats import ReceiverStats
from deskcast.transport.rtcpsession import RtcpSession
from deskcast.transport.rtp import TRX_PAYLOAD_TYPE, RtpError, RtpPacket, is_rtcp
from deskcast.transport.srtp import SrtpError, SrtpKey, SrtpReceiver

logger = logging.getLogger(__name__)


class Admission:
    """Datagrams in (from the network thread, or a test), frames into ``jitter``; everything
    it shares with the audio thread is touched under ``lock``."""

    def __init__(self, fmt: AudioFormat, *, jitter: JitterBuffer, playout: Playout,
                 rtcp: RtcpSession, stats: ReceiverStats, lock: threading.Lock,
                 allow: AllowList, key: SrtpKey | None, takeover_s: float,
                 on_new_sender: Callable[[], None]) -> None:
        self.fmt = fmt
        self.jitter = jitter
        self.playout = playout
        self.rtcp = rtcp
        self.stats = stats
        self.allow = allow
        self.srtp = SrtpReceiver(key) if key is not None else None
        self.takeover_s = takeover_s
        self.on_new_sender = on_new_sender
        self.stream: SenderStream | None = None
        """The sender being played."""
        self.fec = FecDecoder()
        self._lock = lock
        self._restart = round(RESTART_JUMP_S * fmt.rate)

    def handle(self, data: bytes, now: float, addr: object = None) -> None:
        """Check one datagram that arrived at ``now`` from ``addr`` and queue it for playout."""
        stats = self.stats
        stats.datagrams += 1
        if not self.allow.permits(addr):
            stats.dropped["not-allowed"] += 1
            return
        if is_rtcp(data):
            self._rtcp(data, now, addr)
            return
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpError as err:
                stats.dropped[err.reason] += 1
                return
        try:
            packet = RtpPacket.parse(data)
        except RtpError as err:
            stats.dropped[err.reason] += 1
            return
        if packet.payload_type == FEC_PT:
            self._repair(packet, now)
            return
        if packet.payload_type != TRX_PAYLOAD_TYPE and not 96 <= packet.payload_type <= 126:
            stats.dropped["payload-type"] += 1
            return
        try:
            samples = packet_samples(packet.payload, self.fmt.rate)
        except CorruptPacket:
            stats.dropped["opus-toc"] += 1
            return
        with self._lock:
            self._admit(packet, samples, now, addr)

    def _rtcp(self, data: bytes, now: float, addr: object) -> None:
        try:
            data = self.rtcp.unprotect(data)
        except SrtpError as err:
            self.stats.dropped[err.reason] += 1
            return
        self.stats.rtcp += 1
        with self._lock:
            if not self.rtcp.receive(data, now, addr):
                self.stats.dropped["rtcp"] += 1

    def _admit(self, packet: RtpPacket, samples: int, now: float, addr: object) -> None:
        stats = self.stats
        stream = self.stream
        if stream is None or stream.ssrc != packet.ssrc:
            if stream is not None and now - stats.last_packet < self.takeover_s:
                stats.dropped["other-sender"] += 1
                return
            stream = self._new_stream(packet)
        ts = stream.extend(packet.timestamp, samples, self._restart)
        if ts == "jump":
            stats.dropped["jump"] += 1
            return
        if ts is None:
            stream = self._new_stream(packet)
            ts = stream.extend(packet.timestamp, samples, self._restart)
        assert isinstance(ts, int)
        self.playout.sender_clock(ts, now)
        self.fec.add_source(packet.sequence, packet.timestamp, packet.payload)
        stream.sequence.update(packet.sequence)
        stream.arrival.update(packet.timestamp, now)
        if isinstance(addr, tuple):
            stream.peer = addr[:2]
        result = self.jitter.put(ts, packet.payload, samples, now)
        if result != "ok":
            stats.dropped[result] += 1
            return
        stats.packets += 1
        stats.last_packet = now

    def _repair(self, packet: RtpPacket, now: float) -> None:
        """A repair packet of `send --fec`: rebuild what its group lost."""
        with self._lock:
            stream = self.stream
            if stream is None or packet.ssrc != stream.ssrc ^ FEC_SSRC_XOR:
                self.stats.dropped["fec-orphan"] += 1
                return
            self.stats.fec_packets += 1
            for got in self.fec.add_repair(packet.payload):
                try:
                    samples = packet_samples(got.payload, self.fmt.rate)
                except CorruptPacket:
                    continue
                ts = stream.extend(got.timestamp, samples, self._restart)
                if isinstance(ts, int) and self.jitter.put(ts, got.payload, samples, now) == "ok":
                    self.stats.fec_recovered += 1
            # A loss can only be rebuilt once the group's repairs are in: keep K frames.
            self.jitter.raise_floor(self.fec.group_k * max(self.jitter.frame_samples, 1))

    def _new_stream(self, packet: RtpPacket) -> SenderStream:
        stream = SenderStream(packet.ssrc, packet.payload_type)
        if self.stream is not None:
            logger.info("new sender: ssrc %08x replaces %08x", packet.ssrc, self.stream.ssrc)
        else:
            logger.info("sender: ssrc %08x, payload type %d", packet.ssrc, packet.payload_type)
        self.stream = stream
        self.rtcp.follow(packet.ssrc)
        self.fec = FecDecoder()
        self.stats.senders += 1
        self.stats.ssrc = packet.ssrc
        self.stats.trx = packet.payload_type == TRX_PAYLOAD_TYPE
        self.on_new_sender()
        return stream
