"""When a datagram arrived, on the receiver's monotonic clock, from the kernel's stamp.

A network thread that waited for the CPU or the interpreter lock (the playout thread
catching up after a sound server stall, a busy machine) reads datagrams late; stamped when
read, they would show jitter the network never had, and the jitter buffer would grow for it.
Linux stamps each datagram when it is received (``SO_TIMESTAMPNS``), but only on
``CLOCK_REALTIME``, the wall clock, which NTP, a hypervisor or an administrator may set at
any moment, while everything downstream (jitter buffer, drift, delay) runs on
``CLOCK_MONOTONIC``.

:class:`ArrivalClock` carries the stamp over: at each read it takes the two clocks as one
tight pair, so the datagram's age is the wall clock now minus its stamp, and its arrival is
the monotonic clock now minus that age. Slewing (NTP's gentle corrections) moves both clocks
alike and changes nothing. A step shows as a change of the difference between the two
clocks from one read to the next; a stamp that may have been taken on the other side of it
is not used, nor one that would make the datagram older than ``max_age_s`` or younger than
zero: those datagrams arrived when they were read, as without a stamp.

The kernel turns stamping on lazily: when the first socket of the machine asks for it, the
switch is made by a kernel work item, and datagrams received before that item has run are
stamped when they are read (on a loaded 2-core VM: 24 sockets of 200 saw their first
datagram so). Those read at once are none the worse; the first ones of a stream may look
as late as their reader was.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

SO_TIMESTAMPNS = 35
"""Linux: the kernel stamps each datagram with the time it arrived (``CLOCK_REALTIME``, as a
``struct timespec``). Python's socket module does not name it."""
_TIMESPEC = struct.Struct("@ll")
STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
"""The ancillary buffer size to pass to ``recvmsg`` for the stamp."""

PAIR_WITHIN_S = 50e-6
"""The two clocks are read as a pair when the monotonic readings around the wall clock's are
this close (a few µs unless the thread was preempted between them)."""
STEP_S = 0.001
"""A change of the wall clock against the monotonic one larger than this is a step (two
readings' pairing error is within :data:`PAIR_WITHIN_S`; slewing changes nothing)."""


def kernel_stamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The ``SO_TIMESTAMPNS`` stamp in ``recvmsg``'s ancillary data (wall clock, seconds)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and \
                len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) + int(nsec) / 1e9
    return None


class ArrivalClock:
    """Arrival times on ``clock`` (monotonic) from the kernel's wall-clock stamps.

    One per receiving thread: it remembers the two clocks' difference between reads, to see
    the wall clock stepped."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, max_age_s: float = 1.0) -> None:
        self.clock = clock
        self.wall = wall
        self.max_age_s = max_age_s
        self._offset: float | None = None
        """The wall clock minus ``clock`` at the last read."""
        self._trust_after = -float("inf")
        """Stamps up to this (wall clock) may be from before the last step."""
        self.steps = 0
        """Steps of the wall clock seen."""
        self.unstamped = 0
        """Datagrams taken as arrived when read: no stamp, or one that could not be used."""
        self._read()  # the clocks' difference from now on: steps after this show

    def now(self) -> tuple[float, float, float]:
        """``(clock, wall, uncertainty)``: the two read as close together as the scheduler
        allows, and how far apart the readings of ``clock`` around the wall clock's were."""
        best: tuple[float, float, float] | None = None
        for _ in range(3):
            before = self.clock()
            wall = self.wall()
            after = self.clock()
            if best is None or after - before < best[2]:
                best = ((before + after) / 2, wall, after - before)
            if after - before <= PAIR_WITHIN_S:
                break
        assert best is not None
        return best

    def _read(self) -> tuple[float, float]:
        """The two clocks now, as :meth:`now`; a step of the wall clock since the last
        reading is noted."""
        mono, wall, uncertainty = self.now()
        if uncertainty > STEP_S / 2:  # preempted three times over: no step to judge from it
            return mono, wall
        offset = wall - mono
        if self._offset is not None and abs(offset - self._offset) > STEP_S:
            step = offset - self._offset
            self.steps += 1
            # A stamp from before the step is at most the step's moment on the old wall
            # clock, which is before this reading: at most `wall - step`. After a step back
            # of more than max_age_s, one from before it that passes for younger than
            # max_age_s waited in the socket longer than that: not worth distrusting every
            # stamp for as long as the step.
            self._trust_after = wall - max(step, -self.max_age_s)
            logger.info("the wall clock was stepped by %+.3f s: arrival times from the "
                        "kernel's stamps resume after it", step)
        self._offset = offset
        return mono, wall

    def arrival(self, ancdata: list[tuple[int, int, bytes]]) -> float:
        """When the datagram ``recvmsg`` just returned with ``ancdata`` arrived, on
        ``clock``."""
        mono, wall = self._read()
        stamp = kernel_stamp(ancdata)
        if stamp is None or stamp <= self._trust_after:
            self.unstamped += 1
            return mono
        age = wall - stamp
        if not 0.0 <= age <= self.max_age_s:
            self.unstamped += 1
            return mono
        return mono - age
