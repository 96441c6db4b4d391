"""The clock exchange: every receiver learns the sender's clock to well under a millisecond.

Rooms play on one timeline only if each knows what time it is *at the sender*. RTCP's sender
reports pair an RTP timestamp with the sender's wall clock (RFC 3550), but say nothing about
how that clock reads here. So each receiver asks, NTP-style (RFC 5905's four timestamps), over
the ports the stream already uses, as RTCP APP packets named ``DCTM`` (inside SRTCP under
``--key``, so a forged or replayed one fails authentication before it is read):

* request (subtype 0, receiver -> sender): a random 64-bit nonce; ``t1``, when it left, stays
  with the receiver;
* response (subtype 1, sender -> receiver): the nonce, ``t2`` (when the request reached the
  sender: the kernel's receive stamp) and ``t3`` (when the answer left), both the sender's
  wall clock; beside them the sender's timeline at ``t3`` (:class:`TimelinePoint`: the RTP
  timestamp being captured then, how fast its audio clock runs, and the route's latency), so
  a receiver has everything it needs from its first answer.

``t4`` is the answer's arrival here. The round trip is ``(t4 - t1) - (t3 - t2)`` (time the
sender held it does not count) and the offset ``((t2 - t1) + (t3 - t4)) / 2``, exact when
the two ways take equally long: the answers with the shortest round trips are the ones to
believe (:class:`SenderClock` keeps those and follows offset and rate through them).

An answer is taken only for a nonce this receiver asked and has not had answered, from the
sender it plays: strangers' answers, replays and truncated packets are counted and dropped
and never move the clock.
"""

from __future__ import annotations

import logging
import secrets
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from deskcast.transport.ntp import ntp_from_unix, unix_from_ntp
from deskcast.transport.rtcp import AppPacket
from deskcast.transport.rtp import U32, RtpError

logger = logging.getLogger(__name__)

APP_NAME = b"DCTM"
"""The APP packets' name: deskcast time."""
REQUEST, RESPONSE, ANNOUNCE = 0, 1, 2
_REQUEST = struct.Struct("!QI4x")
_ANNOUNCE = struct.Struct("!I4x")
_RESPONSE = struct.Struct("!QQQIiII")


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """The sender's timeline as it stood at one moment of its wall clock."""

    rtp: int
    """The RTP timestamp being captured at that moment (32 bits)."""
    rate_ppb: int
    """How fast the sender's audio clock runs against its wall clock, parts per billion."""
    latency_us: int
    """The route's latency: a sample is heard this long after it was captured (0: the
    sender keeps no schedule, each receiver plays as soon as it safely can)."""


@dataclass(frozen=True, slots=True)
class TimeRequest:
    ssrc: int
    """The asking receiver's SSRC."""
    nonce: int
    sender: int
    """The SSRC of the sender asked."""

    def app(self) -> AppPacket:
        return AppPacket(REQUEST, self.ssrc, APP_NAME, _REQUEST.pack(self.nonce, self.sender))


@dataclass(frozen=True, slots=True)
class TimeResponse:
    ssrc: int
    """The answering sender's SSRC."""
    nonce: int
    t2_ntp: int
    t3_ntp: int
    point: TimelinePoint
    requester: int

    def app(self) -> AppPacket:
        p = self.point
        return AppPacket(RESPONSE, self.ssrc, APP_NAME, _RESPONSE.pack(
            self.nonce, self.t2_ntp, self.t3_ntp, p.rtp & U32, p.rate_ppb, p.latency_us,
            self.requester))


@dataclass(frozen=True, slots=True)
class TimelineAnnounce:
    """The sender keeps a timeline (sent with its sender reports, the first one before its
    first packet): a receiver waits for the clock exchange before it plays, rather than
    start off the timeline and jump onto it a moment later."""

    ssrc: int
    latency_us: int

    def app(self) -> AppPacket:
        return AppPacket(ANNOUNCE, self.ssrc, APP_NAME, _ANNOUNCE.pack(self.latency_us))


def parse_time(app: AppPacket) -> TimeRequest | TimeResponse | TimelineAnnounce | None:
    """The exchange's packet in ``app`` (None: another application's APP); raises
    :class:`~deskcast.transport.rtp.RtpError` for one of ours that is malformed."""
    if app.name != APP_NAME:
        return None
    if app.subtype == REQUEST:
        if len(app.data) != _REQUEST.size:
            raise RtpError("time-length", f"a time request of {len(app.data)} bytes "
                           f"(expected {_REQUEST.size})")
        nonce, sender = _REQUEST.unpack(app.data)
        return TimeRequest(app.ssrc, nonce, sender)
    if app.subtype == RESPONSE:
        if len(app.data) != _RESPONSE.size:
            raise RtpError("time-length", f"a time response of {len(app.data)} bytes "
                           f"(expected {_RESPONSE.size})")
        nonce, t2, t3, rtp, ppb, latency, requester = _RESPONSE.unpack(app.data)
        return TimeResponse(app.ssrc, nonce, t2, t3, TimelinePoint(rtp, ppb, latency),
                            requester)
    if app.subtype == ANNOUNCE:
        if len(app.data) != _ANNOUNCE.size:
            raise RtpError("time-length", f"a timeline announcement of {len(app.data)} bytes "
                           f"(expected {_ANNOUNCE.size})")
        return TimelineAnnounce(app.ssrc, _ANNOUNCE.unpack(app.data)[0])
    raise RtpError("time-subtype", f"a time packet of unknown subtype {app.subtype}")


def answer(request: TimeRequest, ssrc: int, t2_s: float, t3_s: float,
           point: TimelinePoint) -> TimeResponse:
    """The sender's answer to ``request``, which reached it at ``t2_s`` and leaves at
    ``t3_s`` (its wall clock, Unix seconds), with its timeline at ``t3_s``."""
    return TimeResponse(ssrc, request.nonce, ntp_from_unix(t2_s), ntp_from_unix(t3_s), point,
                        request.ssrc)


@dataclass(frozen=True, slots=True)
class _Sample:
    local_s: float
    """Our clock halfway through the exchange."""
    offset_s: float
    """The sender's clock minus ours, as this exchange saw it."""
    delay_s: float
    """Its round trip, less the time the sender held the request."""


class SenderClock:
    """The sender's wall clock as seen from ours: its offset and rate, from the exchanges
    with the shortest round trips.

    Pure: the caller passes in the times. The last ``window`` exchanges are fitted with a
    line (offset against our clock), each weighed by how close its round trip came to the
    shortest (a round trip that took longer one way than the other misleads by half the
    difference; the shortest ones can hardly do that); the line's slope (the rate) once they
    span ``min_span_s``, until then their weighted mean offset at the rate last measured.
    """

    def __init__(self, *, window: int = 64, min_span_s: float = 1.0,
                 max_round_trip_s: float = 1.0, keep_asked: int = 16,
                 trust_us: float = 50.0) -> None:
        self.window = window
        self.trust_s = trust_us / 1e6
        self.min_span_s = min_span_s
        self.max_round_trip_s = max_round_trip_s
        self.keep_asked = keep_asked
        self._asked: dict[int, float] = {}
        self._samples: deque[_Sample] = deque(maxlen=window)
        self._base = 0.0
        """Our clock at the line's reference point (keeps the fit's numbers small)."""
        self._offset = 0.0
        self.rate = 0.0
        """The sender's clock against ours, minus one."""
        self.point: TimelinePoint | None = None
        self.point_sender_s = 0.0
        """The sender's clock (Unix seconds) at :attr:`point`."""
        self.point_ext = 0
        """:attr:`point`'s RTP time as the stream's extended timestamp."""
        self.dropped: dict[str, int] = {}
        """Time packets not taken, by reason: ``unasked`` (a nonce we have no question for: a
        stranger's, or a replay of one answered), ``round-trip`` (negative or longer than
        ``max_round_trip_s``), and what the receiver drops before (``time-stranger``: not
        from the sender played, or not for us; ``time-length``, ``time-subtype``)."""
        self.answers = 0

    # --- asking ------------------------------------------------------------------------

    def ask(self, ssrc: int, sender: int, t1_s: float) -> TimeRequest:
        """A request from ``ssrc`` to ``sender`` leaving at ``t1_s`` (our clock)."""
        nonce = secrets.randbits(64)
        self._asked[nonce] = t1_s
        while len(self._asked) > self.keep_asked:  # unanswered: lost on the way
            del self._asked[next(iter(self._asked))]
        return TimeRequest(ssrc, nonce, sender)

    def sent(self, nonce: int, t1_s: float) -> None:
        """The request ``nonce`` left at ``t1_s``, later than it was made (it was sealed
        and sent outside the lock)."""
        if nonce in self._asked:
            self._asked[nonce] = t1_s

    def take(self, response: TimeResponse, t4_s: float,
             extend: Callable[[int], int] | None = None) -> bool:
        """The answer ``response`` arrived at ``t4_s`` (our clock): True if it was taken.
        ``extend`` turns the timeline's 32-bit RTP time into the stream's extended
        timestamps (:attr:`point_ext`)."""
        t1 = self._asked.pop(response.nonce, None)
        if t1 is None:
            return self.drop("unasked")
        t2, t3 = unix_from_ntp(response.t2_ntp), unix_from_ntp(response.t3_ntp)
        delay = (t4_s - t1) - (t3 - t2)
        if not 0.0 <= delay <= self.max_round_trip_s or t3 < t2:
            return self.drop("round-trip")
        self.answers += 1
        self._samples.append(_Sample((t1 + t4_s) / 2, ((t2 - t1) + (t3 - t4_s)) / 2, delay))
        self.point, self.point_sender_s = response.point, t3
        rtp = response.point.rtp
        self.point_ext = rtp if extend is None else extend(rtp)
        self._fit()
        return True

    def drop(self, reason: str) -> bool:
        """Count a time packet not taken (always False: nothing was)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return False

    def restart(self) -> None:
        """Another sender (another clock): forget all of it."""
        self._asked.clear()
        self._samples.clear()
        self.rate = self._offset = 0.0
        self.point = None

    # --- what we know ------------------------------------------------------------------

    @property
    def known(self) -> bool:
        """Whether the offset is known (three answers at least)."""
        return len(self._samples) >= 3

    @property
    def round_trip_s(self) -> float | None:
        """The shortest round trip of the recent exchanges."""
        return min((s.delay_s for s in self._samples), default=None)

    def offset_s(self, local_s: float) -> float:
        """The sender's clock minus ours at ``local_s`` (our clock)."""
        return self._offset + self.rate * (local_s - self._base)

    def to_sender(self, local_s: float) -> float:
        return local_s + self.offset_s(local_s)

    def to_local(self, sender_s: float) -> float:
        """Our clock when the sender's reads ``sender_s`` (the line inverted)."""
        return (sender_s - self._offset + self.rate * self._base) / (1.0 + self.rate)

    def _fit(self) -> None:
        """Weighted least squares of offset against our clock: each exchange weighs by how
        close its round trip came to the shortest (within ``trust_s`` of it: fully; twice
        that: a quarter), so the few clean ones decide and the queued ones barely count."""
        samples = self._samples
        shortest = min(s.delay_s for s in samples)
        weights = [1.0 / (1.0 + (s.delay_s - shortest) / self.trust_s) ** 2 for s in samples]
        total = sum(weights)
        base = samples[-1].local_s
        mean_t = sum(w * (s.local_s - base) for w, s in zip(weights, samples, strict=True)) / total
        mean_v = sum(w * s.offset_s for w, s in zip(weights, samples, strict=True)) / total
        sxx = sum(w * (s.local_s - base - mean_t) ** 2
                  for w, s in zip(weights, samples, strict=True))
        if len(samples) >= 4 and sxx > 0 and \
                samples[-1].local_s - samples[0].local_s >= self.min_span_s:
            self.rate = sum(w * (s.local_s - base - mean_t) * (s.offset_s - mean_v)
                            for w, s in zip(weights, samples, strict=True)) / sxx
        self._base = base + mean_t
        self._offset = mean_v

    def fields(self) -> dict[str, object]:
        """For --stats-json: the clock as measured (None until it is)."""
        rtt = self.round_trip_s
        return {"clock_answers": self.answers,
                "clock_rtt_ms": None if rtt is None else round(1000 * rtt, 3),
                "clock_ppm": round(self.rate * 1e6, 2) if self.known else None,
                "clock_dropped": dict(self.dropped)}
