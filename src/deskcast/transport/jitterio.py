"""What goes in and out of the jitter buffer (:mod:`deskcast.transport.jitter`): the frame
it hands out, what a playout controller asks of it at each read and what it tells back, and
its counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Frame:
    """What to play next: a packet, or ``payload is None`` for ``samples`` to conceal."""

    timestamp: int
    samples: int
    payload: bytes | None
    next_payload: bytes | None = None
    """For a lost frame: the packet right after the gap, if it is here (its inband FEC may
    carry the lost audio)."""
    expand: bool = False
    """Concealment that consumes nothing: the buffer grows by ``samples``."""


@dataclass(frozen=True, slots=True)
class Hold:
    """What a playout controller asks of the buffer at one pop (:meth:`JitterBuffer.take`)."""

    level_samples: float | None = None
    """The level the controller holds (None: none does). A backlog is dropped back to it
    rather than to the bare target (at most ``slack`` above the target), and only what piles
    up beyond it counts as a backlog: a sink that reads in bursts needs that margin, and
    dropping below it runs the buffer dry right after."""
    leave_backlog: bool = False
    """The controller is dropping what a stall of the device piled up (it sees what the sink
    has queued too, which took part of the loss): the backlog is its to drop, and dropping it
    here as well runs the buffer dry."""
    drop_samples: int = 0
    """Audio to drop before the pop (whole packets, :meth:`JitterBuffer.skip`): what piled up
    while the device lost time."""
    on_time: bool = False
    """The controller keeps a schedule (:mod:`deskcast.transport.playout.schedule`, started
    with :meth:`JitterBuffer.seek`): a frame not here when it is due is concealed and its
    time played (never waited for, never expanded), and no backlog is dropped: what is
    buffered is what the schedule's latency needs."""


NO_HOLD = Hold()
"""No controller: the buffer keeps its own target."""


@dataclass(frozen=True, slots=True)
class Taken:
    """One pop as a playout controller sees it (:meth:`JitterBuffer.take`)."""

    frame: Frame | None
    """What to play (None while (re)buffering)."""
    depth_samples: int | None
    """Buffered before the pop (None while it was not playing): counts the frame popped."""
    target_samples: int
    """The target before the pop."""
    skipped_samples: int
    """Audio dropped by this take: what the hold asked for and any backlog."""


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    duplicates: int = 0
    late: int = 0
    concealed_samples: int = 0
    expanded_samples: int = 0
    """Concealment inserted while dry, that real audio then followed: the delay grew by
    this much, and no audio was lost."""
    skipped_samples: int = 0
    underruns: int = 0
    overflows: int = 0
