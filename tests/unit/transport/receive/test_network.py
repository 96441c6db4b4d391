"""Network input: both ports read by one thread, each datagram handed on with where it came
from and when it arrived; reports sent back from the RTP port; a port in use is one line."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from deskcast.errors import DeviceError
from deskcast.transport.receive.network import NetworkInput, listen_address


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as a:
            a.bind(("::", 0))
            port: int = a.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as b:
                    b.bind(("::", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of ports")


def test_datagrams_on_both_ports_reach_the_handler_with_address_and_arrival() -> None:
    got: list[tuple[bytes, float, object]] = []
    idled = threading.Event()
    port = free_port_pair()
    net = NetworkInput("", port, time.monotonic, lambda d, t, a: got.append((d, t, a)),
                       idle=idled.set)
    net.open()
    try:
        assert idled.wait(1.0)                       # called while nothing arrives
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind(("127.0.0.1", 0))
            tx.settimeout(2.0)
            before = time.monotonic()
            tx.sendto(b"rtp", ("127.0.0.1", port))
            tx.sendto(b"rtcp", ("127.0.0.1", port + 1))
            deadline = time.monotonic() + 2.0
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            after = time.monotonic()
            assert sorted(d for d, _, _ in got) == [b"rtcp", b"rtp"]
            for _, arrival, addr in got:
                assert before - 0.001 <= arrival <= after
                assert isinstance(addr, tuple) and addr[0] == "::ffff:127.0.0.1"
                assert addr[1] == tx.getsockname()[1]
            peer = got[0][2]
            assert isinstance(peer, tuple)
            net.send(b"report", (peer[0], peer[1]))
            data, source = tx.recvfrom(64)
        assert data == b"report" and source[1] == port
    finally:
        net.close()


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as other:
        other.bind(("::", 0))
        port = other.getsockname()[1]
        net = NetworkInput("", port, time.monotonic, lambda d, t, a: None, idle=lambda: None)
        with pytest.raises(DeviceError, match=f"UDP port {port} is already in use"):
            net.open()


@pytest.mark.parametrize(("text", "address"), [
    ("", ("", 1350)), ("5004", ("", 5004)), (":5004", ("", 5004)),
    ("239.1.2.3", ("239.1.2.3", 1350)), ("239.1.2.3:5004", ("239.1.2.3", 5004)),
    ("[ff02::1]:5004", ("ff02::1", 5004)),
])
def test_listen_address_forms(text: str, address: tuple[str, int]) -> None:
    assert listen_address(text) == address
