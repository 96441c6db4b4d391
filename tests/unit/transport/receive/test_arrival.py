"""Arrival times on the monotonic clock from the kernel's wall-clock stamps, with the two
clocks faked: a stamp's age carries over, a step of the wall clock never does."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from deskcast.transport.receive.arrival import (
    SO_TIMESTAMPNS,
    STAMP_SPACE,
    ArrivalClock,
    kernel_stamp,
)

SOL_SOCKET = 1


class Clocks:
    """A monotonic clock and a wall clock ``offset`` ahead of it; each reading of the
    monotonic one advances it by ``tick`` (the time a reading takes)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.offset = 1_700_000_000.0
        self.tick = 1e-6

    def mono(self) -> float:
        self.t += self.tick
        return self.t

    def wall(self) -> float:
        return self.t + self.offset

    def stamp(self, seconds_ago: float) -> list[tuple[int, int, bytes]]:
        """Ancillary data as recvmsg returns it: stamped ``seconds_ago`` on the wall clock."""
        return stamped(self.wall() - seconds_ago)


def stamped(wall: float) -> list[tuple[int, int, bytes]]:
    sec = int(wall)
    return [(SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@ll", sec, round((wall - sec) * 1e9)))]


@pytest.fixture
def clocks() -> Iterator[Clocks]:
    yield Clocks()


def test_the_stamps_age_is_carried_onto_the_monotonic_clock(clocks: Clocks) -> None:
    arrivals = ArrivalClock(clocks.mono, clocks.wall)
    data = clocks.stamp(0.150)                   # read 150 ms after it came
    assert arrivals.arrival(data) == pytest.approx(clocks.t - 0.150, abs=1e-5)
    assert (arrivals.steps, arrivals.unstamped) == (0, 0)


def test_without_a_usable_stamp_a_datagram_arrived_when_it_was_read(clocks: Clocks) -> None:
    arrivals = ArrivalClock(clocks.mono, clocks.wall)
    assert arrivals.arrival([]) == pytest.approx(clocks.t, abs=1e-5)
    assert arrivals.arrival([(SOL_SOCKET, SO_TIMESTAMPNS, b"\0" * 4)]) == \
        pytest.approx(clocks.t, abs=1e-5)                       # truncated
    assert arrivals.arrival(clocks.stamp(-0.2)) == pytest.approx(clocks.t, abs=1e-5)  # future
    assert arrivals.arrival(clocks.stamp(1.5)) == pytest.approx(clocks.t, abs=1e-5)   # stale
    assert arrivals.unstamped == 4
    assert arrivals.steps == 0


@pytest.mark.parametrize("step", [0.05, -0.05, 3.0, -3.0, -3600.0])
def test_a_step_of_the_wall_clock_never_moves_an_arrival(clocks: Clocks, step: float) -> None:
    """Datagrams stamped before the wall clock was set and read after it arrived when they
    were read, as far as we can tell (their stamps are on the old wall clock); those
    stamped after it are used again at once after a step forward, and after a step back
    once the wall clock has passed where it was (at most a second: max_age_s)."""
    arrivals = ArrivalClock(clocks.mono, clocks.wall)
    assert arrivals.arrival(clocks.stamp(0.01)) == pytest.approx(clocks.t - 0.01, abs=1e-5)
    before = [clocks.stamp(ago) for ago in (0.004, 0.002)]  # in the socket, not yet read
    clocks.t += 0.003
    clocks.offset += step
    for data in before:
        assert arrivals.arrival(data) == pytest.approx(clocks.t, abs=1e-5)
    assert arrivals.steps == 1
    resume = 0.0 if step > 0 else min(-step, arrivals.max_age_s)
    clocks.t += 0.01
    after = clocks.stamp(0.005)                  # stamped after the step
    got = arrivals.arrival(after)
    if resume < 0.01:
        assert got == pytest.approx(clocks.t - 0.005, abs=1e-5)
    else:
        assert got == pytest.approx(clocks.t, abs=1e-5)
    clocks.t += resume
    assert arrivals.arrival(clocks.stamp(0.005)) == pytest.approx(clocks.t - 0.005, abs=1e-5)
    assert arrivals.steps == 1


def test_slewing_is_no_step_and_changes_nothing(clocks: Clocks) -> None:
    """NTP's slewing speeds both clocks up or slows them down alike: the difference between
    them stays, however long a run."""
    arrivals = ArrivalClock(clocks.mono, clocks.wall)
    for _ in range(1000):
        clocks.t += 0.02 * (1 + 500e-6)
        assert arrivals.arrival(clocks.stamp(0.003)) == pytest.approx(clocks.t - 0.003,
                                                                      abs=1e-5)
    assert (arrivals.steps, arrivals.unstamped) == (0, 0)


def test_a_reader_preempted_between_the_clocks_reads_them_again(clocks: Clocks) -> None:
    """The wall clock read 30 ms after the monotonic one would age every datagram by as
    much and look like a step: the pair is read again, until its readings are close."""
    arrivals = ArrivalClock(clocks.mono, clocks.wall)
    slow = iter([0.03, 0.02])

    def preempted_wall() -> float:
        clocks.t += next(slow, 0.0)
        return clocks.wall()

    arrivals.wall = preempted_wall
    came = clocks.t - 0.010
    assert arrivals.arrival(clocks.stamp(0.010)) == pytest.approx(came, abs=1e-5)
    assert (arrivals.steps, arrivals.unstamped) == (0, 0)
    # Preempted every time: the closest pair is used (off by half its spread at most),
    # but not to judge a step from (the next close pair will).
    slow = iter([0.03, 0.02, 0.025])
    clocks.offset += 0.2
    came = clocks.t - 0.010
    assert arrivals.arrival(clocks.stamp(0.010)) == pytest.approx(came, abs=0.0101)
    assert arrivals.steps == 0


def test_the_stamp_is_read_from_recvmsgs_ancillary_data() -> None:
    assert kernel_stamp(stamped(1_700_000_123.25)) == pytest.approx(1_700_000_123.25, abs=1e-6)
    assert kernel_stamp([(SOL_SOCKET, 29, b"\0" * 16)]) is None   # SO_TIMESTAMP: not ours
    assert kernel_stamp([]) is None


def test_arrival_is_when_the_kernel_received_the_datagram_not_when_it_was_read() -> None:
    """A network thread that gets the CPU late must not see jitter the network never had.

    The kernel switches stamping on for the machine's first socket that asks by a work item
    of its own, which on a loaded machine runs tens of ms later; until then datagrams are
    stamped when read (the flake this test had: 2 runs in 58 under load). The test waits
    for that as the receiver does not need to: a datagram read at once is none the worse."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        arrivals = ArrivalClock()
        deadline = time.monotonic() + 10.0
        while True:                               # until the kernel stamps on receipt
            tx.sendto(b"probe", rx.getsockname())
            time.sleep(0.01)
            _, ancdata, _, _ = rx.recvmsg(64, STAMP_SPACE)
            stamp = kernel_stamp(ancdata)
            assert stamp is not None, "no SO_TIMESTAMPNS stamp"
            if time.time() - stamp > 0.005:
                break
            assert time.monotonic() < deadline, "the kernel never stamped on receipt"
        sent = time.monotonic()
        tx.sendto(b"x", rx.getsockname())
        time.sleep(0.15)                          # the reader is late
        _, ancdata, _, _ = rx.recvmsg(64, STAMP_SPACE)
        arrival = arrivals.arrival(ancdata)
        read = time.monotonic()
    assert read - sent >= 0.15
    assert sent - 0.001 <= arrival < sent + 0.05
    assert arrivals.unstamped == 0
