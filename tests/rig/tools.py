"""What a test does when a tool it drives, or a piece of the network it needs, is missing."""

from __future__ import annotations

import os
import socket
import struct
from typing import NoReturn

import pytest


def required() -> bool:
    """Whether a missing tool or loopback fails the test rather than skipping it: under CI
    and under ``./bootstrap test`` (which sets ``DESKCAST_REQUIRE_AUDIO=1``)."""
    return any(os.environ.get(name, "") not in ("", "0")
               for name in ("CI", "DESKCAST_REQUIRE_AUDIO"))


def unavailable(message: str) -> NoReturn:
    """Fail under CI (``./bootstrap test`` installs every tool the tests drive and gives the
    loopback interface IPv6 and multicast, so a missing one is a broken set-up, never a
    reason to pass quietly); skip, with ``message`` as the reason, on a developer's machine
    that runs pytest by hand. ``DESKCAST_REQUIRE_AUDIO=1`` fails there too."""
    if required():
        pytest.fail(f"{message}: run ./bootstrap test, which provides it")
    pytest.skip(message)


def missing_tool(message: str) -> NoReturn:
    unavailable(message)


def ipv6_loopback_works() -> bool:
    """Whether ``::1`` can be bound (a container may start with IPv6 disabled)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def multicast_loopback_works(group: str = "239.255.77.77") -> bool:
    """Whether a datagram sent to an IPv4 multicast group comes back to a member on this
    machine (without a multicast-capable interface and a route for the group, joining
    fails with "No such device")."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("", 0))
            mreq = socket.inet_aton(group) + struct.pack("=I", socket.INADDR_ANY)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            s.settimeout(1.0)
            s.sendto(b"ping", (group, s.getsockname()[1]))
            return s.recv(16) == b"ping"
    except OSError:
        return False


def require_ipv6_loopback() -> None:
    if not ipv6_loopback_works():
        unavailable("no IPv6 on the loopback interface (::1 cannot be bound; "
                    "./bootstrap test runs sysctl net.ipv6.conf.lo.disable_ipv6=0)")


def require_multicast_loopback() -> None:
    if not multicast_loopback_works():
        unavailable("IPv4 multicast does not loop back on this machine (no multicast "
                    "interface or route; ./bootstrap test runs ip link set lo multicast on "
                    "and ip route add 239.0.0.0/8 dev lo)")
