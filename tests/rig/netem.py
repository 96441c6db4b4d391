"""A seeded UDP impairment proxy: netem for machines without netem.

:class:`ImpairmentProxy` listens on a UDP address and forwards every datagram
to a target, dropping, delaying, reordering, duplicating or corrupting them as
an :class:`Impairment` says.  Datagrams the target sends back (e.g. RTCP
receiver reports) go to the last client address seen, untouched unless
``impair_reverse=True``.

Determinism
    Every random decision is taken by an :class:`Impairer`, which draws exactly
    :data:`DRAWS_PER_PACKET` numbers from its own ``random.Random`` for each
    received datagram, in a fixed order, whatever the settings are and whether
    the values are used or not.  So the fate of the *n*-th datagram (dropped
    or not and why, duplicated, corrupted where and how, held back, its jitter)
    depends only on the seed, *n*, the datagram's length and the settings in
    force when it arrived -- not on timing, and not on settings that applied to
    other datagrams (a burst in progress carries over, though).  The reverse
    direction has its own generator (seeded from ``seed`` too), so reverse
    traffic never shifts the forward decisions.

What is *not* deterministic is wall-clock behaviour: the exact arrival order
of jittered datagrams, whether a held-back datagram is released by its
successor or by the hold timeout, and anything the kernel drops because a
socket buffer was full (send at a pace the receiver can take).

Example::

    with ImpairmentProxy(("127.0.0.1", rtp_port), Impairment(loss=0.02), seed=7) as proxy:
        sender.send_to(proxy.address)
        proxy.set(blackhole=True)   # network gone ...
        time.sleep(5)
        proxy.set(blackhole=False)  # ... and back
        print(proxy.stats)
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import math
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "DRAWS_PER_PACKET",
    "MAX_DATAGRAM",
    "DropReason",
    "Impairer",
    "Impairment",
    "ImpairmentProxy",
    "ProxyStats",
    "Verdict",
]

#: Largest UDP payload that can be received (IPv6 allows 65527, IPv4 65507).
MAX_DATAGRAM = 65535
#: Random numbers an :class:`Impairer` draws per datagram, always.
DRAWS_PER_PACKET = 9

_RECV_BUFFER = 1 << 16
_SOCKET_BUFFER = 4 << 20  # asked for; the kernel caps it at net.core.[rw]mem_max
_STOP_TIMEOUT_S = 1.0

DropReason = Literal["loss", "burst", "blackhole"]
Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)


@dataclass(frozen=True)
class Impairment:
    """What to do to the datagrams.  All probabilities are per datagram."""

    loss: float = 0.0
    """Independent random loss probability."""
    burst_loss: float = 0.0
    """Probability that a loss burst starts at a datagram (not checked inside a burst)."""
    burst_length: tuple[int, int] = (3, 10)
    """A burst drops this many consecutive datagrams, drawn uniformly in [a, b]."""
    delay_ms: float = 0.0
    """Fixed one-way delay."""
    jitter_ms: float = 0.0
    """Extra delay drawn uniformly in [0, jitter_ms] (reorders datagrams naturally)."""
    reorder: float = 0.0
    """Probability a datagram is held back and sent after the next one that is forwarded."""
    duplicate: float = 0.0
    """Probability a datagram is sent twice (back to back)."""
    corrupt: float = 0.0
    """Probability one random byte is changed (XOR with a random non-zero mask)."""
    blackhole: bool = False
    """Drop everything, including datagrams already delayed and not yet sent."""

    def __post_init__(self) -> None:
        for name in ("loss", "burst_loss", "reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        low, high = self.burst_length
        if not 1 <= low <= high:
            raise ValueError(f"burst_length must be (a, b) with 1 <= a <= b, got {(low, high)}")
        object.__setattr__(self, "burst_length", (int(low), int(high)))
        object.__setattr__(self, "blackhole", bool(self.blackhole))


@dataclass(frozen=True)
class Verdict:
    """The fate of one datagram, as decided by :meth:`Impairer.decide`."""

    drop: DropReason | None
    delay_s: float
    hold: bool
    duplicate: bool
    corrupt_at: int | None
    corrupt_mask: int

    def apply(self, data: bytes) -> bytes:
        """``data`` with the corruption (if any) applied."""
        if self.corrupt_at is None or self.corrupt_at >= len(data):
            return data
        out = bytearray(data)
        out[self.corrupt_at] ^= self.corrupt_mask
        return bytes(out)

    def describe(self) -> str:
        """Short text for logs: ``drop:burst``, ``forward+duplicate+corrupt@12`` ..."""
        if self.drop is not None:
            return f"drop:{self.drop}"
        parts = ["forward"]
        if self.hold:
            parts.append("hold")
        if self.duplicate:
            parts.append("duplicate")
        if self.corrupt_at is not None:
            parts.append(f"corrupt@{self.corrupt_at}")
        return "+".join(parts)


class Impairer:
    """The seeded decision maker (no sockets, no clock, not thread-safe).

    Draws :data:`DRAWS_PER_PACKET` uniform numbers per call, in this order:
    loss, burst start, burst length, jitter, reorder, duplicate, corrupt,
    corrupt position, corrupt mask.
    """

    def __init__(self, seed: int | str = 0) -> None:
        self._rng = random.Random(seed)
        self._burst_left = 0  # datagrams still to drop in the current burst

    @property
    def in_burst(self) -> bool:
        return self._burst_left > 0

    def decide(self, size: int, imp: Impairment) -> Verdict:
        """Decide about the next datagram of ``size`` bytes under ``imp``."""
        r = self._rng.random
        u_loss, u_burst, u_length, u_jitter = r(), r(), r(), r()
        u_reorder, u_duplicate, u_corrupt, u_position, u_mask = r(), r(), r(), r(), r()

        drop: DropReason | None = None
        if self._burst_left > 0:
            self._burst_left -= 1
            drop = "burst"
        elif u_burst < imp.burst_loss:
            low, high = imp.burst_length
            length = min(high, low + int(u_length * (high - low + 1)))
            self._burst_left = length - 1
            drop = "burst"
        elif u_loss < imp.loss:
            drop = "loss"
        if imp.blackhole:
            drop = "blackhole"

        corrupt_at: int | None = None
        mask = 0
        if drop is None and size > 0 and u_corrupt < imp.corrupt:
            corrupt_at = min(size - 1, int(u_position * size))
            mask = 1 + min(254, int(u_mask * 255))
        return Verdict(
            drop=drop,
            delay_s=(imp.delay_ms + u_jitter * imp.jitter_ms) / 1000.0 if drop is None else 0.0,
            hold=drop is None and u_reorder < imp.reorder,
            duplicate=drop is None and u_duplicate < imp.duplicate,
            corrupt_at=corrupt_at,
            corrupt_mask=mask,
        )


@dataclass(frozen=True)
class ProxyStats:
    """Counters (a snapshot).  Forward direction unless named ``reverse_*``.

    Counts are datagrams.  Once nothing is in flight and no send failed,
    ``received + duplicated == forwarded + dropped``.
    """

    received: int = 0
    """Datagrams received from clients."""
    forwarded: int = 0
    """Datagrams handed to the OS for the target (duplicate copies included)."""
    dropped: int = 0
    """Datagrams dropped: random loss, bursts, blackhole (also ones already in flight)."""
    burst_dropped: int = 0
    """Part of ``dropped`` that was due to loss bursts."""
    blackholed: int = 0
    """Part of ``dropped`` that was due to the blackhole."""
    duplicated: int = 0
    """Extra copies made."""
    reordered: int = 0
    """Held-back datagrams that were sent after a later one (not those the hold timeout let go)."""
    corrupted: int = 0
    """Datagrams with one byte changed."""
    send_errors: int = 0
    """OS errors sending (either direction), incl. ECONNREFUSED reported later on receive."""
    reverse_received: int = 0
    """Datagrams received from the target."""
    reverse_forwarded: int = 0
    """Datagrams sent on to the client."""
    reverse_dropped: int = 0
    """Reverse datagrams dropped (impairments, or no client known yet)."""
    internal_errors: int = 0
    """Unexpected exceptions caught in the proxy threads (should stay 0; see ``last_error``)."""


@dataclass
class _Held:
    ident: int
    due: float
    copies: list[bytes]


@dataclass
class _Direction:
    """Per-direction state; guarded by the proxy's lock."""

    forward: bool
    impaired: bool
    impairer: Impairer
    held: _Held | None = None


class ImpairmentProxy:
    """Listens on a UDP address and forwards every datagram to ``target`` with
    seeded impairments.  Datagrams coming back from the target are forwarded
    to the last client address (impaired only if ``impair_reverse=True``).

    Two threads: one receives (both directions) and forwards at once when
    there is no delay; a scheduler sends delayed datagrams in due-time order.
    A held-back (reordered) datagram is sent right after the next forwarded
    one, or ``hold_timeout_ms`` after its own due time if none comes.
    ``log`` keeps ``(index, action)`` for the first ``log_limit`` forward
    datagrams (index counts from 0 in arrival order; action from
    :meth:`Verdict.describe`, ``hold`` only if it was actually held).
    """

    def __init__(
        self,
        target: tuple[str, int],
        impairment: Impairment | None = None,
        *,
        seed: int = 0,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        impair_reverse: bool = False,
        hold_timeout_ms: float = 100.0,
        log_limit: int = 1000,
    ) -> None:
        self._target = target
        self._listen = listen
        self._imp = impairment if impairment is not None else Impairment()
        self._seed = seed
        self._hold_timeout_s = hold_timeout_ms / 1000.0
        self._log_limit = log_limit

        self._lock = threading.Lock()  # impairment, directions, counters, log, client
        self._counts = {f.name: 0 for f in dataclasses.fields(ProxyStats)}
        self._log: list[tuple[int, str]] = []
        self._index = 0
        self._client: Address | None = None
        self._hold_ids = itertools.count()
        self._forward = _Direction(True, True, Impairer(seed))
        self._reverse = _Direction(False, impair_reverse, Impairer(f"netem-reverse-{seed}"))
        self.last_error: BaseException | None = None

        self._cond = threading.Condition()  # scheduler heap
        self._heap: list[tuple[float, int, _Direction, list[bytes] | int]] = []
        self._order = itertools.count()

        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._downstream: socket.socket | None = None  # clients talk to this one
        self._upstream: socket.socket | None = None  # connected to the target
        self._waker_r: socket.socket | None = None
        self._waker_w: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._address: tuple[str, int] | None = None

    # ------------------------------------------------------------------ public

    @property
    def address(self) -> tuple[str, int]:
        """Where senders should send (host, port); valid once started."""
        if self._address is None:
            raise RuntimeError("ImpairmentProxy not started")
        return self._address

    @property
    def target(self) -> tuple[str, int]:
        return self._target

    @property
    def impairment(self) -> Impairment:
        """The settings in force now."""
        with self._lock:
            return self._imp

    @property
    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(**self._counts)

    @property
    def log(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._log)

    @property
    def threads(self) -> list[threading.Thread]:
        """The proxy's threads (for checking that :meth:`stop` ended them)."""
        return list(self._threads)

    def set(self, **changes: Any) -> None:
        """Change impairment fields at runtime, e.g. ``set(blackhole=True)``.

        Applies to datagrams received from now on (and blackhole also to
        those in flight).  Raises TypeError/ValueError for unknown fields or
        bad values, leaving the settings unchanged.
        """
        with self._lock:
            self._imp = dataclasses.replace(self._imp, **changes)

    def start(self) -> ImpairmentProxy:
        if self._started:
            raise RuntimeError("ImpairmentProxy already started")
        self._started = True
        try:
            self._downstream = _bound_socket(self._listen)
            self._upstream = _connected_socket(self._target)
            self._waker_r, self._waker_w = socket.socketpair()
            for sock in (self._downstream, self._upstream, self._waker_r, self._waker_w):
                sock.setblocking(False)
            name = self._downstream.getsockname()
            self._address = (str(name[0]), int(name[1]))
        except BaseException:
            self._close_sockets()
            raise
        port = self.address[1]
        self._threads = [
            threading.Thread(target=self._receive_loop, name=f"netem-recv-{port}", daemon=True),
            threading.Thread(target=self._schedule_loop, name=f"netem-sched-{port}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the threads (within 1 s), drop what is in flight, close the sockets."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._waker_w is not None:
            with contextlib.suppress(OSError):
                self._waker_w.send(b"\0")
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._close_sockets()

    def __enter__(self) -> ImpairmentProxy:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._address or self._listen
        return f"<ImpairmentProxy {where} -> {self._target} {self.impairment}>"

    # ----------------------------------------------------------------- threads

    def _close_sockets(self) -> None:
        for sock in (self._downstream, self._upstream, self._waker_r, self._waker_w):
            if sock is not None:
                sock.close()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _internal_error(self, exc: BaseException) -> None:
        with self._lock:
            self._counts["internal_errors"] += 1
            self.last_error = exc

    def _receive_loop(self) -> None:
        assert self._downstream and self._upstream and self._waker_r
        down, up, waker = self._downstream, self._upstream, self._waker_r
        with selectors.DefaultSelector() as sel:
            sel.register(down, selectors.EVENT_READ)
            sel.register(up, selectors.EVENT_READ)
            sel.register(waker, selectors.EVENT_READ)
            while not self._stopping.is_set():
                try:
                    events = sel.select()
                except OSError as exc:  # pragma: no cover - should not happen
                    self._internal_error(exc)
                    time.sleep(0.01)
                    continue
                for key, _ in events:
                    if key.fileobj is waker:
                        return
                    if key.fileobj is down:
                        self._drain(down, self._forward)
                    else:
                        self._drain(up, self._reverse)

    def _drain(self, sock: socket.socket, direction: _Direction) -> None:
        for _ in range(256):  # then look at the other sockets again
            if self._stopping.is_set():
                return
            try:
                data, addr = sock.recvfrom(_RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # A connected socket reports an earlier send's ICMP error (e.g.
                # ECONNREFUSED: target not listening) here.
                self._count("send_errors")
                continue
            try:
                self._on_datagram(direction, data, addr)
            except Exception as exc:
                self._internal_error(exc)

    def _on_datagram(self, direction: _Direction, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        index = -1
        released: _Held | None = None
        held: _Held | None = None
        with self._lock:
            if direction.forward:
                self._counts["received"] += 1
                self._client = addr
                index = self._index
                self._index += 1
            else:
                self._counts["reverse_received"] += 1
                if self._client is None:
                    self._counts["reverse_dropped"] += 1
                    return
            if not direction.impaired:
                verdict = Verdict(None, 0.0, False, False, None, 0)
            else:
                verdict = direction.impairer.decide(len(data), self._imp)
            if verdict.drop is not None:
                self._count_drop(direction, verdict.drop)
            hold = verdict.hold and verdict.drop is None and direction.held is None
            if direction.forward and index < self._log_limit:
                action = verdict.describe()
                if verdict.hold and not hold:
                    action = action.replace("+hold", "")
                self._log.append((index, action))
            if verdict.drop is not None:
                return
            if direction.forward:
                if verdict.corrupt_at is not None:
                    self._counts["corrupted"] += 1
                if verdict.duplicate:
                    self._counts["duplicated"] += 1
            payload = verdict.apply(data)
            copies = [payload, payload] if verdict.duplicate else [payload]
            due = now + verdict.delay_s
            if hold:
                held = direction.held = _Held(next(self._hold_ids), due, copies)
            else:
                released, direction.held = direction.held, None
                if released is not None and direction.forward:
                    self._counts["reordered"] += 1
        if held is not None:
            self._push(due + self._hold_timeout_s, direction, held.ident)
            return
        self._send_at(due, now, direction, copies)
        if released is not None:
            self._send_at(max(due, released.due), now, direction, released.copies)

    def _count_drop(self, direction: _Direction, reason: DropReason, n: int = 1) -> None:
        # caller holds self._lock
        if not direction.forward:
            self._counts["reverse_dropped"] += n
            return
        self._counts["dropped"] += n
        if reason == "burst":
            self._counts["burst_dropped"] += n
        elif reason == "blackhole":
            self._counts["blackholed"] += n

    def _send_at(self, due: float, now: float, direction: _Direction, copies: list[bytes]) -> None:
        if due <= now:
            self._send(direction, copies)
        else:
            self._push(due, direction, copies)

    def _push(self, due: float, direction: _Direction, job: list[bytes] | int) -> None:
        with self._cond:
            entry = (due, next(self._order), direction, job)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()

    def _send(self, direction: _Direction, copies: list[bytes]) -> None:
        with self._lock:
            if direction.impaired and self._imp.blackhole:
                self._count_drop(direction, "blackhole", len(copies))
                return
            client = self._client
        assert self._downstream and self._upstream
        for data in copies:
            try:
                if direction.forward:
                    self._upstream.send(data)
                elif client is not None:
                    self._downstream.sendto(data, client)
                else:  # pragma: no cover - reverse datagrams wait for a client
                    continue
            except OSError:
                self._count("send_errors")
            else:
                self._count("forwarded" if direction.forward else "reverse_forwarded")

    def _flush_held(self, direction: _Direction, ident: int) -> None:
        with self._lock:
            held = direction.held
            if held is None or held.ident != ident:
                return  # already released by a later datagram
            direction.held = None
        self._send(direction, held.copies)

    def _schedule_loop(self) -> None:
        while True:
            due_jobs: list[tuple[_Direction, list[bytes] | int]] = []
            with self._cond:
                while not self._stopping.is_set():
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait > 0:
                        self._cond.wait(wait)
                        continue
                    now = time.monotonic()
                    while self._heap and self._heap[0][0] <= now:
                        _, _, direction, job = heapq.heappop(self._heap)
                        due_jobs.append((direction, job))
                    break
                else:
                    self._heap.clear()
                    return
            for direction, job in due_jobs:
                if self._stopping.is_set():
                    return
                try:
                    if isinstance(job, int):
                        self._flush_held(direction, job)
                    else:
                        self._send(direction, job)
                except Exception as exc:
                    self._internal_error(exc)


def _resolve(address: tuple[str, int]) -> tuple[socket.AddressFamily, Address]:
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {address}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _new_socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    return sock


def _bound_socket(address: tuple[str, int]) -> socket.socket:
    family, sockaddr = _resolve(address)
    sock = _new_socket(family)
    try:
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _connected_socket(address: tuple[str, int]) -> socket.socket:
    family, sockaddr = _resolve(address)
    sock = _new_socket(family)
    try:
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock
