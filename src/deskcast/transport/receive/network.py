"""Network input, the receiver's first stage: its sockets and the thread that reads them.

RTP arrives on PORT; RTCP on PORT too (RFC 5761) or on PORT+1, where trx sends it. Each
datagram is handed on with the time it arrived, from the kernel's stamp
(:mod:`~deskcast.transport.receive.arrival`), and the address it came from; after each wait
the thread calls ``idle`` (the receiver sends its reports from there).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable

from deskcast import realtime
from deskcast.endpoints import parse_hostport
from deskcast.errors import DeviceError
from deskcast.transport import DEFAULT_PORT
from deskcast.transport.receive.arrival import SO_TIMESTAMPNS, STAMP_SPACE, ArrivalClock

logger = logging.getLogger(__name__)

MAX_DATAGRAM = 65536

Handler = Callable[[bytes, float, object], None]
"""(datagram, arrival on the receiver's clock, sender's address) -> None."""


class NetworkInput:
    """UDP on ``host``:``port`` and ``port`` + 1, read by one thread into ``handle``."""

    def __init__(self, host: str, port: int, clock: Callable[[], float], handle: Handler,
                 idle: Callable[[], None]) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.handle = handle
        self.idle = idle
        self._socks: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self, rtprio: int = 0) -> None:
        """Bind and start reading; the thread runs at SCHED_FIFO ``rtprio`` (0: normal): a
        packet that waits for it is late for the jitter buffer, as if the network had held
        it back."""
        self._socks = [self._bind(self.port)]
        try:
            self._socks.append(self._bind(self.port + 1))  # RTCP, where trx sends it
        except DeviceError as err:
            logger.info("not listening for RTCP on port %d: %s", self.port + 1, err)
        self._thread = threading.Thread(target=self._loop, args=(rtprio,),
                                        name="deskcast-rtp-rx", daemon=True)
        self._thread.start()

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send from the RTP port (reports go back where the stream comes from)."""
        with contextlib.suppress(OSError):  # the sender went away; reports resume with it
            self._socks[0].sendto(data, addr)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for sock in self._socks:
            sock.close()
        self._socks = []

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
            with contextlib.suppress(OSError):  # not Linux: stamped when read (arrival.py)
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

    def _loop(self, rtprio: int) -> None:
        realtime.request(rtprio)
        arrivals = ArrivalClock(self.clock)
        sel = selectors.DefaultSelector()
        for sock in self._socks:
            sel.register(sock, selectors.EVENT_READ, data=sock)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    sock = key.data
                    try:
                        data, ancdata, _, addr = sock.recvmsg(MAX_DATAGRAM, STAMP_SPACE)
                    except OSError:
                        continue
                    self.handle(data, arrivals.arrival(ancdata), addr)
                self.idle()
        finally:
            sel.close()


def listen_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``ADDR``, ``ADDR:PORT``, ``[V6]:PORT``, empty (all, 1350)."""
    text = text.strip()
    if text.isdigit():
        text = ":" + text
    return parse_hostport(text, DEFAULT_PORT) if text else ("", DEFAULT_PORT)
