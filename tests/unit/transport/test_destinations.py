"""One stream, many destinations (deskcast.transport.destinations and the sender's use of it):
the bookkeeping, the commands that change it, and real datagrams over loopback."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.errors import EndpointError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.destinations import (
    Destinations,
    follow_commands,
    parse_command,
    read_lines,
)
from deskcast.transport.rtcp import (
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from deskcast.transport.rtp import RtpPacket, is_rtcp
from deskcast.transport.sender import RtpSender
from rig.tools import require_ipv6_loopback

FMT = AudioFormat()


# --- commands --------------------------------------------------------------------------------

def test_commands_add_and_remove() -> None:
    assert parse_command("+box") == ("+", "box")
    assert parse_command("  -box:5004\n") == ("-", "box:5004")
    assert parse_command("+ [::1]:5004") == ("+", "[::1]:5004")
    assert parse_command("") is None and parse_command("   ") is None
    assert parse_command("# kitchen comes later") is None


@pytest.mark.parametrize("line", ["box", "+", "-", "*box", "=box"])
def test_a_bad_command_says_what_to_write(line: str) -> None:
    with pytest.raises(EndpointError, match=r"give \+HOST\[:PORT\] to add a destination, "
                       r"-HOST\[:PORT\] to remove one"):
        parse_command(line)


def test_following_commands_applies_good_lines_and_warns_about_bad_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    def remove(text: str) -> None:
        if text == "nobody":
            raise EndpointError("nobody:1350 is not a destination (they are: a:1350)")
        done.append("-" + text)

    with caplog.at_level(logging.WARNING):
        follow_commands(["+a\n", "oops\n", "-nobody\n", "\n", "-a\n"],
                        lambda text: done.append("+" + text), remove)
    assert done == ["+a", "-a"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(w.startswith("standard input: ") and w.endswith(
        "; the destinations stay as they were") for w in warnings)
    assert "cannot read 'oops'" in warnings[0] and "nobody:1350" in warnings[1]


def test_lines_of_a_pipe_arrive_as_they_are_written() -> None:
    read_fd, write_fd = os.pipe()
    lines = read_lines(read_fd)
    os.write(write_fd, b"+a\n+b")
    assert next(lines) == "+a"
    os.write(write_fd, b"\n-a\n")
    assert next(lines) == "+b" and next(lines) == "-a"
    os.write(write_fd, b"-b")
    os.close(write_fd)
    assert list(lines) == ["-b"]
    os.close(read_fd)


# --- the bookkeeping -------------------------------------------------------------------------

@pytest.fixture
def dests() -> Iterator[Destinations]:
    d = Destinations(1350)
    yield d
    d.close()


def test_destinations_are_added_once_and_removed_by_name(dests: Destinations) -> None:
    a, new_a = dests.add("127.0.0.1:5004")
    b, new_b = dests.add("127.0.0.2")
    assert new_a and new_b and (a.name, b.name) == ("127.0.0.1:5004", "127.0.0.2:1350")
    assert dests.add("127.0.0.1:5004") == (a, False)
    assert dests.add("localhost:5004") == (a, False)  # the same address: not twice
    assert dests.current == (a, b)
    assert len(dests.sockets) == 1 and a.sock is b.sock  # one socket for IPv4
    assert dests.remove("127.0.0.2") is b
    assert list(dests.current) == [a]
    with pytest.raises(EndpointError, match=r"127.0.0.2:1350 is not a destination \(they "
                       r"are: 127.0.0.1:5004\)"):
        dests.remove("127.0.0.2:1350")
    assert dests.remove("localhost:5004") is a  # by the address it resolves to
    assert not dests.current


def test_an_unknown_host_is_one_line(dests: Destinations) -> None:
    with pytest.raises(EndpointError, match=r"cannot resolve 'no-such-host\.invalid'"):
        dests.add("no-such-host.invalid")
    assert dests.current == ()


def test_ipv6_destinations_share_the_ipv4_port(dests: Destinations) -> None:
    require_ipv6_loopback()  # ./bootstrap test gives the loopback IPv6: never skipped in CI
    a, _ = dests.add("127.0.0.1:5004")
    b, _ = dests.add("[::1]:5004")
    assert a.sock is not b.sock
    assert a.sock.getsockname()[1] == b.sock.getsockname()[1]


def report(reporter: int, about: int, lost_256: int = 0) -> list[RtcpPacket]:
    data = serialize_rtcp([ReceiverReport(reporter, (ReportBlock(about, lost_256),)),
                           SourceDescription.cname(reporter, "rx@there")])
    return list(parse_rtcp(data))


def test_reports_go_to_the_destination_they_came_from(dests: Destinations) -> None:
    a, _ = dests.add("127.0.0.1:5004")
    b, _ = dests.add("127.0.0.2:5004")
    group, _ = dests.add("239.1.2.3:6000")
    ours = 0x1234
    assert dests.reported(report(7, ours), ("127.0.0.2", 5004), ours) is b
    # b's receiver, later from another address: known by its SSRC
    assert dests.reported(report(7, ours), ("10.9.9.9", 7000), ours) is b
    # a group's receivers answer from their own addresses, from the group's port
    assert dests.reported(report(8, ours), ("10.0.0.8", 6000), ours) is group
    assert dests.reported(report(9, ours), ("10.0.0.9", 6000), ours) is group
    assert group.reporters == {8, 9}
    # not about our stream, or from a stranger: nobody's
    assert dests.reported(report(7, 0x999), ("127.0.0.1", 5004), ours) is None
    assert dests.reported(report(5, ours), ("10.1.1.1", 5555), ours) is None
    assert dests.stray_reports == 1 and a.reporters == set()


def test_with_one_destination_every_report_is_its_receivers(dests: Destinations) -> None:
    """As before there were several: a receiver behind NAT answers from elsewhere."""
    a, _ = dests.add("127.0.0.1:5004")
    assert dests.reported(report(5, 1), ("10.1.1.1", 5555), 1) is a


def test_the_summary_is_the_worst_destination(dests: Destinations) -> None:
    a, _ = dests.add("127.0.0.1:5004")
    b, _ = dests.add("127.0.0.2:5004")
    c, _ = dests.add("127.0.0.3:5004")
    assert dests.summary().last_report is None
    a.feedback.receiver_reports, a.feedback.last_report = 3, 10.0
    a.feedback.receiver_loss_pct, a.feedback.rtt_ms = 1.0, 2.0
    b.feedback.receiver_reports, b.feedback.last_report = 2, 12.0
    b.feedback.receiver_loss_pct, b.feedback.receiver_jitter_ms = 0.5, 3.0
    s = dests.summary()
    assert (s.receiver_reports, s.last_report, s.receiver_loss_pct, s.receiver_jitter_ms,
            s.rtt_ms) == (5, 12.0, 1.0, 3.0, 2.0)
    assert c.fields(20.0)["since_report_s"] is None
    assert a.fields(20.0)["since_report_s"] == 10.0


def test_a_failing_destination_disturbs_no_other(dests: Destinations,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """255.255.255.255 without SO_BROADCAST: sendto fails (EACCES) for it alone."""
    catcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("127.0.0.1", 0))
    catcher.settimeout(1.0)
    try:
        bad, _ = dests.add("255.255.255.255:5004")
        good, _ = dests.add(f"127.0.0.1:{catcher.getsockname()[1]}")
        with caplog.at_level(logging.WARNING):
            sent = [dests.send(b"x%d" % i, dests.current, audio=True) for i in range(3)]
        assert sent == [1, 1, 1]
        assert [catcher.recv(100) for _ in range(3)] == [b"x0", b"x1", b"x2"]
        assert (bad.send_errors, bad.packets, good.send_errors, good.packets) == (3, 0, 0, 3)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1  # once per destination
        assert warnings[0].startswith("sending to 255.255.255.255:5004 failed (")
    finally:
        catcher.close()


# --- the sender ------------------------------------------------------------------------------

def catchers(n: int) -> list[socket.socket]:
    out: list[socket.socket] = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        out.append(s)
    return out


def blocks(n: int) -> Iterator[PcmBlock]:
    t = np.arange(960) / 48000
    x = np.repeat(0.25 * np.sin(2 * np.pi * 440 * t)[:, None], 2, axis=1)
    for i in range(n):
        yield PcmBlock.from_float(x, FMT, i * 960)


def rtp_from(sock: socket.socket) -> list[RtpPacket]:
    sock.settimeout(0.2)
    out: list[RtpPacket] = []
    while True:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return out
        if not is_rtcp(data):
            out.append(RtpPacket.parse(data))


def test_one_stream_to_each_destination_and_their_reports_apart() -> None:
    a, b = catchers(2)
    tx = RtpSender(Endpoint("rtp", f"127.0.0.1:{a.getsockname()[1]}", {}, Direction.SINK),
                   FMT, 960, encoder=OpusEncoder(FMT, frame_ms=20),
                   also=[f"127.0.0.1:{b.getsockname()[1]}"])
    tx.open()
    try:
        for block in blocks(5):
            tx.write(block)
        got_a, got_b = rtp_from(a), rtp_from(b)
        # the same packets: one SSRC, one sequence and timestamp line
        assert [bytes(p) for p in got_a] == [bytes(p) for p in got_b]
        assert len(got_a) == 5 and len({p.ssrc for p in got_a}) == 1
        # b's receiver reports back to the port the stream came from; a's does not
        src = tx.destinations.current[0].sock.getsockname()
        rr = serialize_rtcp([ReceiverReport(0xB, (ReportBlock(tx.ssrc, 64),))])
        b.sendto(rr, ("127.0.0.1", src[1]))
        for block in blocks(1):
            tx.write(block)
        fields = tx.status_fields()
    finally:
        tx.close()
        a.close()
        b.close()
    dests = fields["destinations"]
    assert isinstance(dests, list)
    assert [(d["receiver_reports"], d["receiver_loss_pct"]) for d in dests] == [
        (0, 0.0), (1, 25.0)]
    assert [d["packets"] for d in dests] == [6, 6]
    assert (fields["receiver_reports"], fields["receiver_loss_pct"]) == (1, 25.0)
    assert fields["packets"] == 6


def test_destinations_change_between_packets_while_the_audio_thread_sends() -> None:
    """A thread adds and removes a destination 50 times while 200 packets go out: the one that
    stays gets every packet, in order; the other gets whole packets only."""
    stay, come_and_go = catchers(2)
    for s in (stay, come_and_go):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tx = RtpSender(Endpoint("rtp", f"127.0.0.1:{stay.getsockname()[1]}", {}, Direction.SINK),
                   FMT, 960, encoder=OpusEncoder(FMT, frame_ms=20))
    tx.open()
    other = f"127.0.0.1:{come_and_go.getsockname()[1]}"
    done = threading.Event()

    def churn() -> None:
        for _ in range(50):
            tx.add_destination(other)
            time.sleep(0.002)
            tx.remove_destination(other)
            time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=churn)
    try:
        thread.start()
        for block in blocks(200):
            tx.write(block)
            time.sleep(0.001)
        thread.join(10)
        assert done.is_set()
        got, extra = rtp_from(stay), rtp_from(come_and_go)
    finally:
        tx.close()
        stay.close()
        come_and_go.close()
    assert len(got) == 200
    assert all((q.sequence - p.sequence) & 0xFFFF == 1 for p, q in itertools.pairwise(got))
    assert 0 < len(extra) < 200
    first = {p.sequence: bytes(p) for p in got}
    assert all(first[p.sequence] == bytes(p) for p in extra)
