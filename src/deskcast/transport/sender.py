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
from deskcast.transport.fec import FEC_PT, FEC_SSRC_XOR, FecEncoder
from deskcast.transport.ntp import ntp_from_unix, round_trip_seconds
from deskcast.transport.rtcp import (
    ReceiverReport,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from deskcast.transport.rtp import RtpError, RtpPacket, is_rtcp
from deskcast.transport.srtp import SrtpError, SrtpKey, SrtpReceiver, SrtpSender

logger = logging.getLogger(__name__)

DEFAULT_PORT = 1350
"""trx's port, so either end can talk to the other without options."""
DYNAMIC_PT = 96
RTCP_INTERVAL_S = 5.0
"""RFC 3550's minimum interval between reports; RTCP goes to PORT+1, as trx does."""
TRX_PT = 0
TRX_TS_DIVISOR = 6
"""trx counts timestamps at 8 kHz: 48000 / 8000."""


@dataclass
class SenderStats:
    packets: int = 0
    octets: int = 0
    send_errors: int = 0
    started: float = 0.0
    receiver_reports: int = 0
    last_report: float | None = None
    """When the receiver last reported back (monotonic seconds); None: never (yet)."""
    receiver_loss_pct: float = 0.0
    receiver_jitter_ms: float = 0.0
    rtt_ms: float | None = None


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
        # SRTP: audio, repair packets and sender reports out; receiver reports in.
        self.srtp = SrtpSender(key) if key is not None else None
        self.srtp_in = SrtpReceiver(key) if key is not None else None
        self.host, self.port = parse_hostport(endpoint.target, DEFAULT_PORT)
        self.encoder = encoder
        self.trx = trx
        self.payload_type = TRX_PT if trx else payload_type
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
        self._next_sr = 0.0
        self.cname = f"deskcast@{socket.gethostname()}"
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
        self._next_sr = self.stats.started + 1.0
        logger.info("sending %s to %s (%s), ssrc %08x, pt %d", self.encoder.describe(),
                    self.name, self._addr[0], self.ssrc, self.payload_type)

    def write(self, block: PcmBlock) -> None:
        assert self._sock is not None and self._addr is not None, "open() first"
        payload = self.encoder.encode(block)
        packet = RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload,
                           marker=self.stats.packets == 0)
        if self._send(bytes(packet)):
            self.stats.packets += 1
            self.stats.octets += len(payload)
        self._rtcp()
        if self.fec is not None:
            for repair in self.fec.add(self.sequence, self.timestamp, payload):
                extra = RtpPacket(FEC_PT, self.fec_sequence, self.timestamp,
                                  self.ssrc ^ FEC_SSRC_XOR, repair)
                self.fec_sequence = (self.fec_sequence + 1) & 0xFFFF
                if self._send(bytes(extra)):
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
            if self.srtp_in is not None:
                try:
                    data = self.srtp_in.unprotect_rtcp(data)
                except SrtpError as err:
                    logger.debug("receiver report dropped: %s", err)
                    continue
            self._report(data, now)
        if now >= self._next_sr and not self.trx:
            self._next_sr = now + RTCP_INTERVAL_S
            sr = SenderReport(self.ssrc, ntp_from_unix(time.time()), self.timestamp,
                              self.stats.packets & 0xFFFFFFFF, self.stats.octets & 0xFFFFFFFF)
            data = serialize_rtcp([sr, SourceDescription.cname(self.ssrc, self.cname)])
            self._send(data, self._rtcp_addr)

    def _report(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtpError:
            return
        for rr in packets:
            if not isinstance(rr, ReceiverReport | SenderReport):
                continue
            for block in rr.reports:
                if block.ssrc != self.ssrc:
                    continue
                self.stats.receiver_reports += 1
                self.stats.last_report = now
                self.stats.receiver_loss_pct = 100 * block.fraction_lost / 256
                self.stats.receiver_jitter_ms = 1000 * block.jitter / 48000
                rtt = round_trip_seconds(ntp_from_unix(time.time()), block.lsr, block.dlsr)
                self.stats.rtt_ms = None if rtt is None else 1000 * rtt

    def _send(self, data: bytes, addr: tuple[Any, ...] | None = None) -> bool:
        assert self._sock is not None and self._addr is not None
        if self.srtp is not None:
            try:
                data = (self.srtp.protect_rtcp(data) if is_rtcp(data)
                        else self.srtp.protect(data))
            except ValueError as err:
                self.stats.send_errors += 1
                if not self._too_long_warned:
                    self._too_long_warned = True
                    logger.warning("not sent: %s; lower --bitrate or --frame-ms", err)
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
