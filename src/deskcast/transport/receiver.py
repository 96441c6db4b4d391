"""The receiving end: a :class:`~deskcast.capture.base.Source` that listens for RTP/Opus on UDP
and yields decoded, concealed, in-order PCM at the sink's pace.

It is a chain, one stage a module, read top to bottom:

1. network input (:mod:`~deskcast.transport.receive.network`): the sockets, and a thread that
   stamps each datagram with the time the kernel received it;
2. admission (:mod:`~deskcast.transport.receive.admission`): ``--allow``, SRTP, RTCP to the
   session (:mod:`~deskcast.transport.rtcpsession`), which sender is played, FEC repair;
3. the jitter buffer (:mod:`~deskcast.transport.jitter`);
4. decode and conceal (:mod:`~deskcast.transport.receive.decode`);
5. playout (:mod:`~deskcast.transport.playout`): drift and level control, resampling, the
   place a "play this sample at time T" schedule plugs in;
6. the sink, which calls :meth:`RtpReceiver.read` from the audio thread.

Stages 1-2 run on the network thread, 3-5 on the audio thread; they meet in the jitter buffer
under one lock. Beside the chain: the counters (:mod:`~deskcast.transport.receive.stats`)
and the delay meter (:mod:`~deskcast.transport.receive.delay`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence

from deskcast.capture.base import Source
from deskcast.endpoints import Endpoint
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.pacing import Pacer
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.playout import DriftController, Playout
from deskcast.transport.playout.schedule import Schedule
from deskcast.transport.receive.admission import Admission
from deskcast.transport.receive.allow import AllowList
from deskcast.transport.receive.decode import FrameDecoder
from deskcast.transport.receive.delay import DelayMeter
from deskcast.transport.receive.network import NetworkInput, listen_address
from deskcast.transport.receive.stats import ReceiverStats
from deskcast.transport.rtcp import AppPacket
from deskcast.transport.rtcpsession import RtcpSession
from deskcast.transport.rtp import RtpError
from deskcast.transport.srtp import SrtpKey
from deskcast.transport.timesync import (
    SenderClock,
    TimelineAnnounce,
    TimeResponse,
    parse_time,
)

logger = logging.getLogger(__name__)

RR_INTERVAL_S = 2.0
"""How often the receiver reports back to the sender (loss, jitter, round trip)."""
ASK_EVERY_S = (0.02, 0.02) + (0.1,) * 18 + (1.0,)
"""When to ask the sender's clock after the answers so far (the last: from then on): three
quick ones to start on the timeline within a tenth of a second, ten a second for two seconds
while the rate is measured, then one a second."""
UNANSWERED_ASKS = 10
"""After this many questions without an answer (a sender behind a firewall that lets the
stream through but not the questions), ask only every ``NO_ANSWER_EVERY_S``."""
NO_ANSWER_EVERY_S = 5.0
WAIT_FOR_CLOCK_S = 0.3
"""How long a new stream waits for the sender's timeline before it plays without one."""


class RtpReceiver(Source):
    clocked = False

    def __init__(self, endpoint: Endpoint, fmt: AudioFormat, block_frames: int, *,
                 jitter: JitterBuffer, takeover_ms: float = 100.0, fec: bool = True,
                 drift: bool = True, clock: Callable[[], float] = time.monotonic,
                 key: SrtpKey | None = None, allow: Sequence[str] = (),
                 timeline: bool = True, output_offset_ms: float = 0.0) -> None:
        super().__init__(endpoint, fmt, block_frames)
        allowed = AllowList(allow)
        if fmt.rate != 48000:
            raise EndpointError("the receiver plays at 48000 Hz (Opus' clock); drop --rate")
        self.host, self.port = listen_address(endpoint.target)
        self.clock = clock
        self.stats = ReceiverStats()
        self.ssrc = secrets.randbits(32)
        self.rtcp = RtcpSession(self.ssrc, "deskcast-receiver", interval_s=RR_INTERVAL_S,
                                key=key, on_app=self._on_app)
        self.sender_clock = SenderClock()
        """The sender's clock as seen from ours (the clock exchange)."""
        schedule = Schedule(fmt.rate, self.sender_clock,
                            output_offset_s=output_offset_ms / 1000) if timeline else None
        self._lock = threading.Lock()
        # The chain, in order.
        self.jitter = jitter
        self.playout = Playout(jitter, fmt, DriftController(fmt.rate) if drift else None,
                               schedule, wait_for_schedule_s=WAIT_FOR_CLOCK_S)
        """Jitter buffer -> drift control -> resampling, one read at a time."""
        self.admission = Admission(fmt, jitter=jitter, playout=self.playout, rtcp=self.rtcp,
                                   stats=self.stats, lock=self._lock, allow=allowed, key=key,
                                   takeover_s=takeover_ms / 1000,
                                   on_new_sender=self._new_sender)
        self.network = NetworkInput(self.host, self.port, clock, self.admission.handle,
                                    idle=self._report_back)
        self.decoding = FrameDecoder(fmt, self.stats, use_fec=fec)
        self.delay = DelayMeter(fmt.rate)
        self.pacer: Pacer | None = Pacer(fmt.rate)
        self.rtprio = 0
        """SCHED_FIFO priority of the network thread (0: normal)."""
        self._pts = 0
        self._asks = 0
        self._next_ask = 0.0
        self._announced: int | None = None
        """The last sender that announced a timeline (its SSRC)."""

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

    # --- network thread -----------------------------------------------------------------------

    def open(self) -> None:
        self.rtcp.start(self.clock(), RR_INTERVAL_S)
        self.network.open(self.rtprio)
        logger.info("listening for RTP on %s", self.name)

    def handle(self, data: bytes, now: float, addr: object = None) -> None:
        """Check one datagram and queue it for playout (also used directly by tests)."""
        self.admission.handle(data, now, addr)

    def _new_sender(self) -> None:
        """Admission took another sender (under the lock): every later stage starts over."""
        self.jitter.reset()
        self.decoding.new_sender()
        self.playout.new_sender()
        self.delay.reset()
        self.playout.schedule_announced = self._announced == self.rtcp.remote_ssrc
        self._asks = 0
        self._next_ask = 0.0

    def _on_app(self, app: AppPacket, now: float, addr: object) -> None:
        """An APP packet came in (under the lock): the sender's answers to our clock
        questions are taken; anything else of ours is counted (``clock_dropped``: the
        datagram itself is counted as RTCP) and dropped."""
        try:
            packet = parse_time(app)
        except RtpError as err:
            self.sender_clock.drop(err.reason)
            return
        if packet is None:
            return
        if isinstance(packet, TimelineAnnounce):
            # It comes before the stream's first packet: kept for the sender it names.
            self._announced = packet.ssrc
            if packet.ssrc == self.rtcp.remote_ssrc:
                self.playout.schedule_announced = True
            return
        stream = self.admission.stream
        if not isinstance(packet, TimeResponse) or stream is None or \
                packet.ssrc != self.rtcp.remote_ssrc or packet.requester != self.ssrc or \
                (addr[:2] if isinstance(addr, tuple) else addr) != stream.peer:
            self.sender_clock.drop("time-stranger")
            return
        self.sender_clock.take(packet, now, stream.extended)

    def _report_back(self) -> None:
        """A receiver report to where the stream comes from, when due (not to trx: it does
        not care); a question about the sender's clock when one is due."""
        self._ask_time()
        if not self.rtcp.due(self.clock()):
            return
        with self._lock:
            stream = self.admission.stream
            if stream is None or stream.peer is None or self.stats.trx:
                return
            try:
                data = self.rtcp.receiver_report(self.clock(), stream.sequence,
                                                 round(stream.arrival.jitter))
            except ValueError as err:
                logger.debug("receiver report not sent: %s", err)
                return
            peer = stream.peer
        self.network.send(data, peer)

    def _ask_time(self) -> None:
        """Ask the sender what time it is, when due (:data:`ASK_EVERY_S`): only a sender that
        announced a timeline is asked (the others would not use the answer, or not answer)."""
        if self.playout.schedule is None or not self.playout.schedule_announced:
            return
        with self._lock:
            stream = self.admission.stream
            sender = self.rtcp.remote_ssrc
            if stream is None or stream.peer is None or self.stats.trx or sender is None:
                return
            now = self.clock()
            if now < self._next_ask:
                return
            answers = self.sender_clock.answers
            every = ASK_EVERY_S[min(answers, len(ASK_EVERY_S) - 1)]
            if self._asks >= UNANSWERED_ASKS and not answers:
                every = NO_ANSWER_EVERY_S
            self._asks += 1
            self._next_ask = now + every
            peer = stream.peer
            request = self.sender_clock.ask(self.ssrc, sender, self.clock())
            try:
                data = self.rtcp.application(request.app())
            except ValueError as err:
                logger.debug("clock question not sent: %s", err)
                return
        self.sender_clock.sent(request.nonce, self.clock())
        self.network.send(data, peer)

    # --- audio thread -------------------------------------------------------------------------

    def read(self) -> PcmBlock:
        # When the sink asks for more: the drift controller reads the sender's clock then.
        now = self.clock()
        with self._lock:
            opus = self.decoding.opus
            # What the sink still has queued ahead of this frame (when it can tell): the
            # frame is heard that much later, and what it has played tells its clock.
            sink = self.last_sink_timing
            queued_s = None if sink is None else sink.queued_s
            # Under the lock: the network thread feeds the controller the sender's clock.
            step = self.playout.read(
                now, None if queued_s is None else queued_s * self.fmt.rate,
                None if queued_s is None else self._pts - queued_s * self.fmt.rate)
            frame = step.frame
            if frame is not None and not frame.expand:
                self.delay.add(now, self.playout.sender.offset_s, frame.timestamp,
                               frame.samples,
                               0.0 if sink is None else sink.delay_s)
        samples = frame.samples if frame is not None else (
            step.silence or self.jitter.frame_samples or self.block_frames)
        self.pace(self._pts)
        if frame is None:
            block = PcmBlock(bytes(samples * self.fmt.frame_bytes), self.fmt, self._pts)
        else:
            block = self.decoding.decode(frame, opus, self._pts, step.trim)
            block = self.playout.resample(block, step.ratio)
        self._pts += block.frames
        return block

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
            "latency_ms": 1000 * (jb.depth_samples / self.fmt.rate + self._sink_latency_s),
            "delay_ms": None if delay is None else round(delay[0], 2),
            "sink_ms": None if delay is None else round(delay[1], 2),
        }

    @property
    def _sink_latency_s(self) -> float:
        """What the sink adds by design (its device buffer), as it declared it."""
        sink = self.last_sink_timing
        return 0.0 if sink is None else sink.latency_s

    def close(self) -> None:
        self.network.close()
