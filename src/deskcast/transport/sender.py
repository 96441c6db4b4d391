"""The sending end: a :class:`~deskcast.playback.base.Sink` that encodes each block as one Opus
packet and sends it as RTP over UDP.

Standard mode follows RFC 3550 + RFC 7587 (dynamic payload type, 48 kHz timestamps, random
initial sequence number and timestamp). ``trx=True`` sends exactly what trx-rx expects:
payload type 0, timestamps in 8 kHz units, sequence and timestamp starting at 0.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Endpoint, parse_hostport
from deskcast.errors import DeviceError, EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.playback.base import Sink
from deskcast.transport import DEFAULT_PORT
from deskcast.transport.fec import FEC_PT, FEC_SSRC_XOR, FecEncoder
from deskcast.transport.rtcpsession import Feedback, RtcpSession
from deskcast.transport.rtp import TRX_PAYLOAD_TYPE, TRX_TS_DIVISOR, RtpPacket, is_rtcp
from deskcast.transport.srtp import SrtpError, SrtpKey, SrtpSender

logger = logging.getLogger(__name__)

DYNAMIC_PT = 96
RTCP_INTERVAL_S = 5.0
"""RFC 3550's minimum interval between reports; RTCP goes to PORT+1, as trx does."""


@dataclass
class SenderStats(Feedback):
    """What was sent, and what the receiver says about it (its RTCP reports: the
    :class:`~deskcast.transport.rtcpsession.Feedback` fields, times monotonic)."""

    packets: int = 0
    octets: int = 0
    send_errors: int = 0
    started: float = 0.0


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[
        str, int, int, int]]:
    """The first UDP address for ``host`` (system resolver: names, IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as err:
        raise EndpointError(f"cannot resolve {host!r}: {err.strerror}") from None
    family, _, _, _, addr = infos[0]
    return family, addr  # type: ignore[return-value]


class RtpSender(Sink):
    """Blocks of exactly one Opus frame in, RTP datagrams out. Not clocked: the source paces."""

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int, *,
                 encoder: OpusEncoder, trx: bool = False, payload_type: int = DYNAMIC_PT,
                 ttl: int | None = None, dscp: int | None = None,
                 fec: FecEncoder | None = None, key: SrtpKey | None = None) -> None:
        super().__init__(endpoint, fmt, block_frames)
        if key is not None and trx:
            raise EndpointError("trx-rx does not speak SRTP: drop --key or --trx")
        # SRTP: audio and repair packets out (RTCP: the session's, both ways).
        self.srtp = SrtpSender(key) if key is not None else None
        self.host, self.port = parse_hostport(endpoint.target, DEFAULT_PORT)
        self.encoder = encoder
        self.trx = trx
        self.payload_type = TRX_PAYLOAD_TYPE if trx else payload_type
        self.ttl = ttl
        self.dscp = dscp
        self.ssrc = secrets.randbits(32)
        self.sequence = 0 if trx else secrets.randbits(16)
        self.timestamp = 0 if trx else secrets.randbits(32)
        self.fec = fec
        self.fec_sequence = secrets.randbits(16)
        self.stats = SenderStats()
        self._sock: socket.socket | None = None
        self._addr: tuple[str, int] | tuple[str, int, int, int] | None = None
        self._rtcp_addr: tuple[Any, ...] | None = None
        self.rtcp = RtcpSession(self.ssrc, f"deskcast@{socket.gethostname()}",
                                interval_s=RTCP_INTERVAL_S, key=key, feedback=self.stats)
        self._too_long_warned = False

    @property
    def name(self) -> str:
        return (f"rtp://{self.host}:{self.port}" + (" (trx)" if self.trx else "")
                + (" (SRTP)" if self.srtp is not None else ""))

    def open(self) -> None:
        family, self._addr = resolve(self.host, self.port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self.ttl is not None:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.ttl)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, self.ttl)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, self.ttl)
            if self.dscp is not None:
                tos = self.dscp << 2
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        except OSError as err:
            sock.close()
            raise DeviceError(f"cannot set up the socket for {self.name}: {err.strerror}"
                              ) from None
        sock.setblocking(False)  # only to pick up receiver reports between packets
        self._sock = sock
        self._rtcp_addr = (self._addr[0], self.port + 1, *self._addr[2:])
        self.stats.started = time.monotonic()
        self.rtcp.start(self.stats.started, 1.0)
        logger.info("sending %s to %s (%s), ssrc %08x, pt %d", self.encoder.describe(),
                    self.name, self._addr[0], self.ssrc, self.payload_type)

    def write(self, block: PcmBlock) -> None:
        assert self._sock is not None and self._addr is not None, "open() first"
        payload = self.encoder.encode(block)
        packet = RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload,
                           marker=self.stats.packets == 0)
        if self._send(self._protect(bytes(packet))):
            self.stats.packets += 1
            self.stats.octets += len(payload)
        self._rtcp()
        if self.fec is not None:
            for repair in self.fec.add(self.sequence, self.timestamp, payload):
                extra = RtpPacket(FEC_PT, self.fec_sequence, self.timestamp,
                                  self.ssrc ^ FEC_SSRC_XOR, repair)
                self.fec_sequence = (self.fec_sequence + 1) & 0xFFFF
                if self._send(self._protect(bytes(extra))):
                    self.stats.octets += len(repair)
        self.sequence = (self.sequence + 1) & 0xFFFF
        step = block.frames // TRX_TS_DIVISOR if self.trx else block.frames
        self.timestamp = (self.timestamp + step) & 0xFFFFFFFF

    def status_fields(self) -> dict[str, object]:
        st = self.stats
        secs = max(1e-3, time.monotonic() - st.started)
        return {
            "packets": st.packets,
            "kbit_s": round(st.octets * 8 / secs / 1000, 1),
            "send_errors": st.send_errors,
            "receiver_reports": st.receiver_reports,
            "receiver_loss_pct": round(st.receiver_loss_pct, 1),
            "receiver_jitter_ms": round(st.receiver_jitter_ms, 2),
            "rtt_ms": None if st.rtt_ms is None else round(st.rtt_ms, 2),
            "since_report_s": None if st.last_report is None else
            round(time.monotonic() - st.last_report, 1),
        }

    def _rtcp(self) -> None:
        """Read receiver reports that came back; send a sender report every 5 s."""
        assert self._sock is not None
        now = time.monotonic()
        for _ in range(8):
            try:
                data = self._sock.recv(2048)
            except OSError:
                break
            if not is_rtcp(data):
                continue
            try:
                data = self.rtcp.unprotect(data)
            except SrtpError as err:
                logger.debug("receiver report dropped: %s", err)
                continue
            self.rtcp.receive(data, now)
        if not self.trx and self.rtcp.due(now):
            try:
                report = self.rtcp.sender_report(self.timestamp, self.stats.packets,
                                                 self.stats.octets)
            except ValueError as err:
                self._refused(err)
            else:
                self._send(report, self._rtcp_addr)

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

    def _send(self, data: bytes | None, addr: tuple[Any, ...] | None = None) -> bool:
        assert self._sock is not None and self._addr is not None
        if data is None:
            return False
        try:
            self._sock.sendto(data, addr or self._addr)
        except OSError as err:
            # Unreachable networks and refused ports are normal while a receiver restarts.
            self.stats.send_errors += 1
            if self.stats.send_errors == 1:
                logger.warning("sending to %s failed (%s); still trying", self.name,
                               err.strerror)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
