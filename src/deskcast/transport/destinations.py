"""Where one RTP stream goes: ``deskcast send HOST1 HOST2 ...`` sends every datagram (RTP, FEC,
RTCP sender reports) to each destination, unicast or multicast, and keeps what each
destination's receiver says about it.

One socket per address family, all bound to one local port: every receiver sees the stream
come from the same place and sends its receiver reports back there, where the sender reads
them (with their source address, which tells the destinations apart). An unconnected UDP
socket reports no ICMP errors of earlier datagrams (Linux, without ``IP_RECVERR``), so a
``sendto`` fails only for the destination it names: one that nobody listens at, or that is
unreachable, disturbs no other.

Destinations come and go while the stream runs (:func:`follow_commands` reads ``+HOST[:PORT]``
and ``-HOST[:PORT]`` lines). The audio thread reads :attr:`Destinations.current`, a tuple that
a change replaces whole (under a lock, names resolved before it is taken): a change lands
between two packets, never half-way through one, and the audio thread never waits for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from deskcast.endpoints import format_hostport, parse_hostport
from deskcast.errors import DeskcastError, DeviceError, EndpointError
from deskcast.transport.receive.arrival import SO_TIMESTAMPNS
from deskcast.transport.rtcp import ReceiverReport, RtcpPacket, SenderReport
from deskcast.transport.rtcpsession import Feedback

logger = logging.getLogger(__name__)

SockAddr = tuple[Any, ...]


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, SockAddr]:
    """The first UDP address for ``host`` (system resolver: names, IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as err:
        raise EndpointError(f"cannot resolve {host!r}: {err.strerror}") from None
    family, _, _, _, addr = infos[0]
    return family, addr


@dataclass(eq=False)
class Destination:
    """One receiver's address (or a multicast group), and what came back from there."""

    host: str
    """As given (a name, or an address)."""
    port: int
    addr: SockAddr
    """What ``host`` resolved to, as ``sendto`` takes it."""
    sock: socket.socket
    feedback: Feedback = field(default_factory=Feedback)
    packets: int = 0
    """RTP audio packets sent here."""
    send_errors: int = 0
    reporters: set[int] = field(default_factory=set)
    """SSRCs of the receivers whose reports came from here (a group has several)."""
    first_sr_at: float | None = None
    """A destination added to a running stream gets its first sender report then."""
    warned: bool = False

    @property
    def name(self) -> str:
        return format_hostport(self.host, self.port)

    @property
    def rtcp_addr(self) -> SockAddr:
        """RTCP goes to PORT+1, as trx does."""
        return (self.addr[0], self.port + 1, *self.addr[2:])

    @property
    def multicast(self) -> bool:
        return ipaddress.ip_address(str(self.addr[0]).split("%", 1)[0]).is_multicast

    def fields(self, now: float) -> dict[str, object]:
        """This destination in ``--stats-json`` (times in seconds since, on ``now``'s clock)."""
        return {
            "destination": self.name,
            "address": str(self.addr[0]),
            "packets": self.packets,
            "send_errors": self.send_errors,
            **self.feedback.fields(now),
        }


class Destinations:
    """The destinations of one stream and their sockets; changed from any thread."""

    def __init__(self, default_port: int, *, ttl: int | None = None,
                 dscp: int | None = None) -> None:
        self.default_port = default_port
        self.ttl = ttl
        self.dscp = dscp
        self.current: tuple[Destination, ...] = ()
        """Read without a lock (one attribute read); replaced whole on every change."""
        self.sockets: tuple[socket.socket, ...] = ()
        self.stray_reports = 0
        """Receiver reports about our stream from none of the destinations: counted, dropped."""
        self._families: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._closed = False

    # --- changes (any thread) ------------------------------------------------------------------

    def add(self, text: str, *, first_sr_at: float | None = None) -> tuple[Destination, bool]:
        """Add ``HOST[:PORT]``; returns it and whether it is new (a destination named, or
        resolving to the address of, one already there is not added twice)."""
        host, port = parse_hostport(text, self.default_port)
        if not host:
            raise EndpointError(f"no host in {text!r}: give HOST[:PORT]")
        family, addr = resolve(host, port)  # before the lock: a name may take a while
        with self._lock:
            if self._closed:
                raise DeviceError(f"cannot add {text}: the sender has stopped")
            for dest in self.current:
                if dest.name == format_hostport(host, port) or dest.addr[:2] == addr[:2]:
                    return dest, False
            dest = Destination(host, port, addr, self._socket(family), first_sr_at=first_sr_at)
            self.current = (*self.current, dest)
        return dest, True

    def remove(self, text: str) -> Destination:
        """Remove the destination named ``HOST[:PORT]`` (or at the address it resolves to)."""
        host, port = parse_hostport(text, self.default_port)
        name = format_hostport(host, port)
        dest = next((d for d in self.current if d.name == name), None)
        if dest is None:
            addr = resolve(host, port)[1] if host else None
            dest = next((d for d in self.current if addr and d.addr[:2] == addr[:2]), None)
        with self._lock:
            if dest is None or dest not in self.current:
                now = ", ".join(d.name for d in self.current) or "none"
                raise EndpointError(f"{name} is not a destination (they are: {now})")
            self.current = tuple(d for d in self.current if d is not dest)
        return dest

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.current = ()
            sockets, self.sockets = self.sockets, ()
            self._families.clear()
        for sock in sockets:
            sock.close()

    def _socket(self, family: socket.AddressFamily) -> socket.socket:
        """The socket for ``family``, made on first use on the other family's port."""
        sock = self._families.get(family)
        if sock is not None:
            return sock
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _set_options(sock, family, self.ttl, self.dscp)
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            port = next((int(s.getsockname()[1]) for s in self.sockets), 0)
            try:
                sock.bind((wildcard, port))
            except OSError:
                sock.bind((wildcard, 0))
                logger.info("port %d is taken for %s: its destinations get the stream from "
                            "port %d", port, family.name, sock.getsockname()[1])
        except OSError as err:
            sock.close()
            raise DeviceError(f"cannot set up a UDP socket ({family.name}) to send from: "
                              f"{err.strerror}") from None
        sock.setblocking(False)  # only to pick up receiver reports between packets
        with contextlib.suppress(OSError):  # a clock question's arrival, stamped by the kernel
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._families[family] = sock
        self.sockets = (*self.sockets, sock)
        return sock

    # --- the audio thread ----------------------------------------------------------------------

    def send(self, data: bytes, to: Sequence[Destination], *, rtcp: bool = False,
             audio: bool = False) -> int:
        """Send ``data`` to each of ``to`` (RTCP: to PORT+1); how many it went to."""
        sent = 0
        for dest in to:
            try:
                dest.sock.sendto(data, dest.rtcp_addr if rtcp else dest.addr)
            except OSError as err:
                # Unreachable networks and refused ports are normal while a receiver restarts.
                dest.send_errors += 1
                if not dest.warned:
                    dest.warned = True
                    logger.warning("sending to %s failed (%s); still trying", dest.name,
                                   err.strerror)
                continue
            sent += 1
            if audio:
                dest.packets += 1
        return sent

    def reported(self, packets: Sequence[RtcpPacket], source: SockAddr, ssrc: int
                 ) -> Destination | None:
        """The destination whose receiver sent ``packets`` (from ``source``) about our
        stream ``ssrc``: the one at that address, else the one that reporter (its SSRC)
        reported for before, else a multicast group on that port (its receivers answer from
        their own addresses), else the only one. None: not about us, or from a stranger."""
        reporters = {p.ssrc for p in packets if isinstance(p, ReceiverReport | SenderReport)
                     and any(block.ssrc == ssrc for block in p.reports)}
        if not reporters:
            return None
        dests = self.current
        dest = (next((d for d in dests if d.addr[:2] == source[:2]), None)
                or next((d for d in dests if d.reporters & reporters), None)
                or next((d for d in dests if d.multicast and d.port == source[1]), None)
                or (dests[0] if len(dests) == 1 else None))
        if dest is None:
            self.stray_reports += 1
            if self.stray_reports == 1:
                logger.info("a receiver report from %s, which is none of the destinations, "
                            "was dropped", source[0])
            return None
        dest.reporters |= reporters
        return dest

    def summary(self) -> Feedback:
        """All destinations in one: reports counted together, the latest report's time, the
        worst loss, jitter and round trip among those that report."""
        dests = self.current
        out = Feedback(receiver_reports=sum(d.feedback.receiver_reports for d in dests))
        heard = [d.feedback for d in dests if d.feedback.last_report is not None]
        if heard:
            out.last_report = max(f.last_report or 0.0 for f in heard)
            out.receiver_loss_pct = max(f.receiver_loss_pct for f in heard)
            out.receiver_jitter_ms = max(f.receiver_jitter_ms for f in heard)
            rtts = [f.rtt_ms for f in heard if f.rtt_ms is not None]
            out.rtt_ms = max(rtts) if rtts else None
        return out


def _set_options(sock: socket.socket, family: socket.AddressFamily, ttl: int | None,
                 dscp: int | None) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 has its own
    if ttl is not None:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    if dscp is not None:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)


# --- changes while the stream runs -----------------------------------------------------------

COMMANDS_HELP = "+HOST[:PORT] to add a destination, -HOST[:PORT] to remove one"


def parse_command(line: str) -> tuple[str, str] | None:
    """``+HOST[:PORT]`` -> ``("+", "HOST[:PORT]")``, ``-HOST[:PORT]`` -> ``("-", ...)``;
    None for a blank line or a ``#`` comment; EndpointError for anything else."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    op, target = text[0], text[1:].strip()
    if op not in "+-" or not target:
        raise EndpointError(f"cannot read {text!r}: give {COMMANDS_HELP}")
    return op, target


def read_lines(fd: int) -> Iterator[str]:
    """The lines of file descriptor ``fd`` (standard input: 0) as they come. Read with
    ``os.read``, not through ``sys.stdin``: a thread blocked there holds no lock of Python's
    that the interpreter's exit would wait for."""
    pending = b""
    while chunk := os.read(fd, 4096):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def follow_commands(lines: Iterable[str], add: Callable[[str], object],
                    remove: Callable[[str], object]) -> None:
    """Apply each command of ``lines`` (e.g. standard input) as it comes; a bad one is a
    warning and changes nothing. Returns at the end of ``lines``."""
    for line in lines:
        try:
            command = parse_command(line)
            if command is not None:
                (add if command[0] == "+" else remove)(command[1])
        except DeskcastError as err:
            logger.warning("standard input: %s; the destinations stay as they were", err)
    logger.info("no more destination commands (standard input closed): the destinations "
                "stay as they are")
