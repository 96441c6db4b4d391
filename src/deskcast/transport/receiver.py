"""The receiving end: a :class:`~deskcast.capture.base.Source` that listens for RTP/Opus on UDP
and yields decoded, concealed, in-order PCM.

A network thread receives datagrams, checks them and puts them into the jitter buffer; the
playout side (``read()``, called from the audio thread) takes one frame at a time and decodes
it. Anything that is not a playable packet is counted by reason and dropped: it never stops
playback.

Senders: the first one heard is played; another SSRC takes over only after the current one has
been silent for ``takeover_ms`` (a restarted sender gets a new SSRC). A trx-tx stream
(payload type 0, timestamps in 8 kHz units) is recognised by itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from deskcast import realtime
from deskcast.capture.base import Source
from deskcast.decode.opus import CorruptPacket, OpusDecoder, packet_samples
from deskcast.endpoints import Endpoint
from deskcast.errors import ConfigError, DeviceError, EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer
from deskcast.transport.arrival import SO_TIMESTAMPNS, STAMP_SPACE, ArrivalClock
from deskcast.transport.fec import FEC_PT, FEC_SSRC_XOR, FecDecoder
from deskcast.transport.jitter import Frame, JitterBuffer
from deskcast.transport.playout import DriftController, Playout
from deskcast.transport.receive.stats import JitterEstimator, ReceiverStats, SequenceTracker
from deskcast.transport.rtcpsession import RtcpSession
from deskcast.transport.rtp import RtpError, RtpPacket, is_rtcp, ts_delta
from deskcast.transport.sender import DEFAULT_PORT, TRX_PT, TRX_TS_DIVISOR
from deskcast.transport.srtp import SrtpError, SrtpKey, SrtpReceiver

logger = logging.getLogger(__name__)

RR_INTERVAL_S = 2.0
"""How often the receiver reports back to the sender (loss, jitter, round trip)."""
RESTART_JUMP_S = 1.0
"""A timestamp jump larger than this (either way) within one SSRC is a restarted stream."""
MAX_DATAGRAM = 65536


class DelayMeter:
    """What the listener hears: how long the audio waits in the receiver, per sample.

    A sample's wait is from when its packet arrives, on time, to when it is handed to the
    sink. "On time" is the packet's RTP timestamp mapped onto our clock through the upper
    envelope of the sender's timestamps against arrival (:attr:`ClockTrack.offset_s`), so a
    packet the network held back counts the time it was late as delay too, and the wait does
    not depend on when exactly a packet happened to arrive. Unlike the jitter buffer's depth,
    which steps by whole packets and, read against the sink's bursts, swings by a frame or
    more, the mean over all samples of a second moves only when the delay really does.

    Means are kept per ``window_s`` of our clock; :meth:`mean_ms` is the last complete one.
    """

    def __init__(self, rate: int, window_s: float = 1.0) -> None:
        self.rate = rate
        self.window_s = window_s
        self._window: int | None = None
        self._sum = self._sink_sum = 0.0
        self._samples = 0
        self._last: tuple[int, float, float] | None = None
        """(window, mean wait, mean of it in the sink; seconds) of the last complete window."""

    def add(self, now_s: float, offset_s: float | None, timestamp: int, samples: int,
            sink_s: float = 0.0) -> None:
        """``samples`` from (extended) ``timestamp`` on were handed to the sink at ``now_s``,
        which plays them ``sink_s`` later; ``offset_s``: the sender's clock minus ours for
        packets on time (None: not known)."""
        if offset_s is None or samples <= 0:
            return
        self._roll(now_s)
        wait = now_s + offset_s - timestamp / self.rate + sink_s
        self._sum += wait * samples
        self._sink_sum += sink_s * samples
        self._samples += samples

    def _roll(self, now_s: float) -> int:
        window = math.floor(now_s / self.window_s)
        if self._window is not None and window != self._window and self._samples:
            self._last = (self._window, self._sum / self._samples,
                          self._sink_sum / self._samples)
            self._sum, self._sink_sum, self._samples = 0.0, 0.0, 0
        self._window = window
        return window

    def mean_ms(self, now_s: float) -> tuple[float, float] | None:
        """Mean wait over the samples of the last complete window and the part of it in the
        sink, ms (None when nothing played in it: silence, rebuffering)."""
        window = self._roll(now_s)
        if self._last is None or self._last[0] != window - 1:
            return None
        return 1000 * self._last[1], 1000 * self._last[2]

    def reset(self) -> None:
        self._window, self._last = None, None
        self._sum = self._sink_sum = 0.0
        self._samples = 0


class _Stream:
    """Per-sender state: timestamp unwrapping and the trx clock detection."""

    def __init__(self, ssrc: int, payload_type: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        # trx counts timestamps at 8 kHz; confirmed (or refuted) by the second packet.
        self.scale = TRX_TS_DIVISOR if payload_type == TRX_PT else 1
        self.confirmed = payload_type != TRX_PT
        self.last_ts: int | None = None
        self.last_ext = 0
        self.last_samples = 0
        self.candidate: int | None = None
        self.sequence = SequenceTracker()
        self.arrival = JitterEstimator(48000 // self.scale if payload_type == TRX_PT else 48000)
        self.peer: tuple[str, int] | None = None

    def extend(self, ts: int, samples: int, restart_samples: int) -> int | str | None:
        """Extended timestamp in samples at 48 kHz; ``"jump"`` for a packet far from the
        stream (dropped: one corrupt timestamp must not reset playback); None when two
        packets in a row agree on the jump: the sender really restarted."""
        if self.last_ts is None:
            self.last_ts, self.last_ext, self.last_samples = ts, 0, samples
            return 0
        delta = ts_delta(ts, self.last_ts)
        if abs(delta * self.scale) > restart_samples:
            if self.candidate is not None and \
                    0 < ts_delta(ts, self.candidate) * self.scale <= restart_samples:
                return None
            self.candidate = ts
            return "jump"
        self.candidate = None
        if not self.confirmed and delta > 0:
            # One packet later: does the step match the packet length in 8 kHz units?
            self.scale = TRX_TS_DIVISOR if delta * TRX_TS_DIVISOR == self.last_samples else 1
            self.confirmed = True
        if delta > 0:
            self.last_ts = ts
            self.last_ext += delta
            self.last_samples = samples
            return self.last_ext * self.scale
        return (self.last_ext + delta) * self.scale


class RtpReceiver(Source):
    clocked = False

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int, *,
                 jitter: JitterBuffer, takeover_ms: float = 100.0, fec: bool = True,
                 drift: bool = True, clock: Callable[[], float] = time.monotonic,
                 key: SrtpKey | None = None, allow: Sequence[str] = ()) -> None:
        super().__init__(endpoint, fmt, block_frames)
        # Datagram input: only from --allow networks; with --key only authentic SRTP.
        self.allow = parse_allow(allow)
        self._allowed: dict[object, bool] = {}
        self.srtp_in = SrtpReceiver(key) if key is not None else None
        if fmt.rate != 48000:
            raise EndpointError("the receiver plays at 48000 Hz (Opus' clock); drop --rate")
        self.host, self.port = _listen_address(endpoint.target)
        self.jitter = jitter
        self.takeover_s = takeover_ms / 1000
        self.use_fec = fec
        self.clock = clock
        self.stats = ReceiverStats()
        self.ssrc = secrets.randbits(32)
        self.rtcp = RtcpSession(self.ssrc, "deskcast-receiver", interval_s=RR_INTERVAL_S,
                                key=key)
        self.decoder = OpusDecoder(fmt)
        self.fec = FecDecoder()
        self.playout = Playout(jitter, fmt, DriftController(fmt.rate) if drift else None)
        """Jitter buffer -> drift control -> resampling, one read at a time."""
        self.output_latency_ms = 0.0
        """What the sink adds (its device buffer), for the latency estimate, and for the
        delay when the sink cannot tell what it has queued (:attr:`sink_queued_s`)."""
        self.delay = DelayMeter(fmt.rate)
        self.pacer: Pacer | None = Pacer(fmt.rate)
        self.rtprio = 0
        """SCHED_FIFO priority of the network thread (0: normal): a packet that waits for
        it is late for the jitter buffer, as if the network had held it back."""
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._socks: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pts = 0
        self._expanded = 0

    @property
    def name(self) -> str:
        return f"rtp://{self.host or '*'}:{self.port}"

    @property
    def correction_ppm(self) -> float | None:
        """The correction applied over the last second of input (1 - ratio in ppm: positive
        consumes the input faster, for a sender whose clock runs ahead of the sink's): the
        drift estimate plus what the level term and the play-out add. None without drift
        correction or before the first frame."""
        return self.playout.corrections.ppm

    # --- network side ---------------------------------------------------------------------

    def open(self) -> None:
        self._socks = [self._bind(self.port)]
        try:
            self._socks.append(self._bind(self.port + 1))  # RTCP, where trx sends it
        except DeviceError as err:
            logger.info("not listening for RTCP on port %d: %s", self.port + 1, err)
        self._thread = threading.Thread(target=self._net_loop, name="deskcast-rtp-rx",
                                        daemon=True)
        self._thread.start()
        logger.info("listening for RTP on %s", self.name)

    def _bind(self, port: int) -> socket.socket:
        host = self.host
        try:
            multicast = bool(host) and ipaddress.ip_address(host).is_multicast
        except ValueError:
            multicast = False
        v6 = ":" in host or not host
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host or "::", port))
            if multicast and v6:
                mreq6 = socket.inet_pton(socket.AF_INET6, host) + struct.pack("@I", 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
            elif multicast:
                mreq = socket.inet_aton(host) + socket.inet_aton("0.0.0.0")
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            with contextlib.suppress(OSError):  # not Linux: stamped when read (transport.arrival)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.settimeout(0.2)
        except OSError as err:
            sock.close()
            if err.errno == 98:
                raise DeviceError(
                    f"UDP port {port} is already in use: is another receiver running? "
                    "choose another with [ADDR]:PORT"
                ) from None
            raise DeviceError(f"cannot listen on {host or '*'}:{port}: {err.strerror}"
                              ) from None
        return sock

    def _net_loop(self) -> None:
        import selectors

        realtime.request(self.rtprio)
        arrivals = ArrivalClock(self.clock)
        sel = selectors.DefaultSelector()
        for sock in self._socks:
            sel.register(sock, selectors.EVENT_READ, data=sock)
        self.rtcp.start(self.clock(), RR_INTERVAL_S)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    sock = key.data
                    try:
                        data, ancdata, _, addr = sock.recvmsg(MAX_DATAGRAM, STAMP_SPACE)
                    except OSError:
                        continue
                    self.handle(data, arrivals.arrival(ancdata), addr)
                if self.rtcp.due(self.clock()):
                    self._send_report()
        finally:
            sel.close()

    def _send_report(self) -> None:
        """A receiver report to where the stream comes from (not to trx: it does not care)."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.peer is None or self.stats.trx:
                return
            try:
                data = self.rtcp.receiver_report(self.clock(), stream.sequence,
                                                 round(stream.arrival.jitter))
            except ValueError as err:
                logger.debug("receiver report not sent: %s", err)
                return
            peer = stream.peer
        with contextlib.suppress(OSError):  # the sender went away; reports resume with it
            self._socks[0].sendto(data, peer)

    def handle(self, data: bytes, now: float, addr: object = None) -> None:
        """Check one datagram and queue it for playout (also used directly by tests)."""
        stats = self.stats
        stats.datagrams += 1
        if self.allow and not self._is_allowed(addr):
            stats.dropped["not-allowed"] += 1
            return
        if is_rtcp(data):
            try:
                data = self.rtcp.unprotect(data)
            except SrtpError as err:
                stats.dropped[err.reason] += 1
                return
            stats.rtcp += 1
            with self._lock:
                if not self.rtcp.receive(data, now):
                    stats.dropped["rtcp"] += 1
            return
        if self.srtp_in is not None:
            try:
                data = self.srtp_in.unprotect(data)
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
        if packet.payload_type != TRX_PT and not 96 <= packet.payload_type <= 126:
            stats.dropped["payload-type"] += 1
            return
        try:
            samples = packet_samples(packet.payload, self.fmt.rate)
        except CorruptPacket:
            stats.dropped["opus-toc"] += 1
            return
        with self._lock:
            stream = self._stream
            if stream is None or stream.ssrc != packet.ssrc:
                if stream is not None and now - stats.last_packet < self.takeover_s:
                    stats.dropped["other-sender"] += 1
                    return
                stream = self._new_stream(packet)
            restart = round(RESTART_JUMP_S * self.fmt.rate)
            ts = stream.extend(packet.timestamp, samples, restart)
            if ts == "jump":
                stats.dropped["jump"] += 1
                return
            if ts is None:
                stream = self._new_stream(packet)
                ts = stream.extend(packet.timestamp, samples, restart)
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

    def _is_allowed(self, addr: object) -> bool:
        """Whether a datagram from ``addr`` ((host, port, ...) from recvfrom) may be read."""
        host = addr[0] if isinstance(addr, tuple) and addr else None
        allowed = self._allowed.get(host)
        if allowed is None:
            allowed = address_allowed(host, self.allow)
            if len(self._allowed) >= 1024:  # spoofed floods must not grow it without bound
                self._allowed.clear()
            self._allowed[host] = allowed
        return allowed

    def _repair(self, packet: RtpPacket, now: float) -> None:
        """A repair packet of `send --fec`: rebuild what its group lost."""
        with self._lock:
            stream = self._stream
            if stream is None or packet.ssrc != stream.ssrc ^ FEC_SSRC_XOR:
                self.stats.dropped["fec-orphan"] += 1
                return
            self.stats.fec_packets += 1
            for got in self.fec.add_repair(packet.payload):
                try:
                    samples = packet_samples(got.payload, self.fmt.rate)
                except CorruptPacket:
                    continue
                ts = stream.extend(got.timestamp, samples, round(RESTART_JUMP_S * self.fmt.rate))
                if isinstance(ts, int) and self.jitter.put(ts, got.payload, samples, now) == "ok":
                    self.stats.fec_recovered += 1
            # A loss can only be rebuilt once the group's repairs are in: keep K frames.
            self.jitter.raise_floor(self.fec.group_k * max(self.jitter.frame_samples, 1))

    def _new_stream(self, packet: RtpPacket) -> _Stream:
        stream = _Stream(packet.ssrc, packet.payload_type)
        if self._stream is not None:
            logger.info("new sender: ssrc %08x replaces %08x", packet.ssrc, self._stream.ssrc)
        else:
            logger.info("sender: ssrc %08x, payload type %d", packet.ssrc, packet.payload_type)
        self._stream = stream
        self.rtcp.follow(packet.ssrc)
        self.jitter.reset()
        self.decoder = OpusDecoder(self.fmt)
        self.fec = FecDecoder()
        self.playout.new_sender()
        self.delay.reset()
        self.stats.senders += 1
        self.stats.ssrc = packet.ssrc
        self.stats.trx = packet.payload_type == TRX_PT
        return stream

    # --- playout side ---------------------------------------------------------------------

    def read(self) -> PcmBlock:
        # When the sink asks for more: the drift controller reads the sender's clock then.
        now = self.clock()
        with self._lock:
            decoder = self.decoder
            # What the sink still has queued ahead of this frame (when it can tell): the
            # frame is heard that much later, and what it has played tells its clock.
            queued_s = self.sink_queued_s
            # Under the lock: the network thread feeds the controller the sender's clock.
            step = self.playout.read(
                now, None if queued_s is None else queued_s * self.fmt.rate,
                None if queued_s is None else self._pts - queued_s * self.fmt.rate)
            frame, trim = step.frame, step.trim
            if frame is not None and not frame.expand:
                self.delay.add(now, self.playout.sender.offset_s, frame.timestamp,
                               frame.samples,
                               self.output_latency_ms / 1000 if queued_s is None else queued_s)
        samples = frame.samples if frame is not None else (self.jitter.frame_samples or
                                                           self.block_frames)
        if self.pacer is not None:
            self.pacer.wait(self._pts)
        if frame is None:
            block = PcmBlock(bytes(samples * self.fmt.frame_bytes), self.fmt, self._pts)
        else:
            block = PcmBlock(self._decode(decoder, frame), self.fmt, self._pts)
            if frame.expand:
                block = self._fade_expansion(block)
            else:
                self._expanded = 0
            if 0 < trim < block.frames:  # the rest of what a stall piled up
                block = PcmBlock(block.data[trim * self.fmt.frame_bytes:], self.fmt, self._pts)
            block = self.playout.resample(block, step.ratio)
        self._pts += block.frames
        return block

    def _fade_expansion(self, block: PcmBlock) -> PcmBlock:
        """Concealment while the buffer is dry stays at full level for the first
        ``EXPAND_HOLD_S`` (a late packet is about to come), then fades out over
        ``EXPAND_FADE_S``: a sender that stopped must not leave a ghost of its last sound."""
        rate = self.fmt.rate
        start = self._expanded
        self._expanded += block.frames
        hold, fade = EXPAND_HOLD_S * rate, EXPAND_FADE_S * rate
        if self._expanded <= hold:
            return block
        n = np.arange(start, start + block.frames, dtype=np.float32)
        gain = np.clip(1.0 - (n - hold) / fade, 0.0, 1.0)
        return PcmBlock.from_float(block.as_float() * gain[:, None], self.fmt, block.pts)

    def _decode(self, decoder: OpusDecoder, frame: Frame) -> bytes:
        want = frame.samples * self.fmt.frame_bytes
        try:
            if frame.payload is not None:
                pcm = decoder.decode(frame.payload)
            elif frame.next_payload is not None and self.use_fec:
                pcm = decoder.recover(frame.next_payload, _plc_frames(frame.samples))
                self.stats.fec_used += 1
            else:
                pcm = decoder.conceal(_plc_frames(frame.samples))
        except CorruptPacket:
            self.stats.decode_errors += 1
            try:
                pcm = decoder.conceal(_plc_frames(frame.samples))
            except CorruptPacket:
                pcm = b""
        if len(pcm) < want:
            pcm += bytes(want - len(pcm))
        return pcm[:want]

    def status_fields(self) -> dict[str, object]:
        """Everything the status line and --stats-json show."""
        jb = self.jitter
        js = jb.stats
        played = js.played * max(1, jb.frame_samples) + js.concealed_samples + \
            js.expanded_samples
        with self._lock:
            delay = self.delay.mean_ms(self.clock())
            playout = self.playout.status_fields()
        return {
            "packets": self.stats.packets,
            "datagrams": self.stats.datagrams,
            "dropped": sum(self.stats.dropped.values()),
            "dropped_by_reason": dict(self.stats.dropped),
            "concealed_pct": 100 * js.concealed_samples / played if played else 0.0,
            "late": js.late,
            "duplicates": js.duplicates,
            "underruns": js.underruns,
            "device_stalls": playout.pop("device_stalls"),
            "expanded_ms": 1000 * js.expanded_samples / self.fmt.rate,
            "skipped_ms": 1000 * js.skipped_samples / self.fmt.rate,
            "jitter_ms": jb.jitter_ms,
            "buffer_ms": 1000 * jb.depth_samples / self.fmt.rate,
            "target_ms": 1000 * jb.target_samples / self.fmt.rate,
            "senders": self.stats.senders,
            "ssrc": None if self.stats.ssrc is None else f"{self.stats.ssrc:08x}",
            "trx": self.stats.trx,
            "decode_errors": self.stats.decode_errors,
            "fec_recovered": self.stats.fec_recovered,
            **playout,  # drift_ppm, correction_ppm, sink_ppm and the controller's beliefs
            "latency_ms": 1000 * jb.depth_samples / self.fmt.rate + self.output_latency_ms,
            "delay_ms": None if delay is None else round(delay[0], 2),
            "sink_ms": None if delay is None else round(delay[1], 2),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for sock in self._socks:
            sock.close()
        self._socks = []


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """``--allow`` values (``10.0.0.0/8``, ``fd00::/8``, a single address) as networks."""
    nets: list[Network] = []
    for text in cidrs:
        for item in text.replace(",", " ").split():
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"--allow {item!r}: give networks as ADDRESS/PREFIX "
                                  "(e.g. 192.168.1.0/24, fd00::/8) or single addresses"
                                  ) from None
    return tuple(nets)


def address_allowed(host: object, nets: Sequence[Network]) -> bool:
    """Whether ``host`` (a recvfrom address string; IPv4-mapped IPv6 counts as IPv4) is in
    one of ``nets``. Anything that is not an address is not allowed."""
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in nets)


EXPAND_HOLD_S = 0.04
EXPAND_FADE_S = 0.08


def _plc_frames(samples: int) -> int:
    """libopus conceals in multiples of 2.5 ms (120 samples at 48 kHz)."""
    return max(120, -(-samples // 120) * 120)


def _listen_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``ADDR``, ``ADDR:PORT``, ``[V6]:PORT``, empty (all, 1350)."""
    from deskcast.endpoints import parse_hostport

    text = text.strip()
    if text.isdigit():
        text = ":" + text
    return parse_hostport(text, DEFAULT_PORT) if text else ("", DEFAULT_PORT)
