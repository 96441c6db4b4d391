"""What a receiver report carries (deskcast.transport.receive.stats): sequence numbers extended
and loss counted (RFC 3550 A.1/A.3), interarrival jitter (A.8)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskcast.transport.receive.stats import JitterEstimator, SequenceTracker
from deskcast.transport.rtcp import ReceiverReport, ReportBlock

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RICH = settings(FAST, max_examples=150)  # for the costlier generated packets and streams


# --------------------------------------------------------------------------------------------
# SequenceTracker


def feed(tracker: SequenceTracker, seqs: list[int]) -> list[int | None]:
    return [tracker.update(seq) for seq in seqs]


def test_tracker_in_order_across_wrap() -> None:
    tracker = SequenceTracker()
    seqs = [65530 + i & 0xFFFF for i in range(20)]
    assert feed(tracker, seqs) == list(range(65530, 65550))
    assert tracker.highest == 65549
    assert (tracker.received, tracker.expected, tracker.lost) == (20, 20, 0)
    assert (tracker.duplicates, tracker.ignored, tracker.restarts) == (0, 0, 0)
    block = tracker.report_block(7)
    assert block.highest_seq == 0x1_0000 + 13  # one cycle, seq 13
    assert (block.fraction_lost, block.cumulative_lost) == (0, 0)


def test_tracker_many_wraps() -> None:
    tracker = SequenceTracker()
    last = None
    for i in range(3 * 65536 + 10):
        last = tracker.update(i & 0xFFFF)
    assert last == 3 * 65536 + 9
    assert tracker.lost == 0


def test_tracker_duplicates() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [1, 2, 2, 3, 1, 3, 2]) == [1, 2, None, 3, None, None, None]
    assert (tracker.received, tracker.duplicates, tracker.lost) == (3, 4, 0)


def test_tracker_reordering() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [10, 12, 11, 13]) == [10, 12, 11, 13]
    assert tracker.lost == 0
    # reordered across the wrap
    tracker = SequenceTracker()
    assert feed(tracker, [65534, 65535, 1, 0, 2]) == [65534, 65535, 65537, 65536, 65538]
    assert tracker.lost == 0


def test_tracker_reorder_window() -> None:
    tracker = SequenceTracker()
    feed(tracker, [1000, 1200])
    assert tracker.update(1200 - 99) == 1101  # 99 behind: late but accepted
    assert tracker.update(1200 - 100) is None  # 100 behind: treated as a stray jump
    assert tracker.ignored == 1
    assert tracker.update(1201) == 1201  # and the stream goes on
    assert tracker.restarts == 0


def test_tracker_packet_before_the_first() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [10, 11, 8]) == [10, 11, 8]
    assert (tracker.expected, tracker.received, tracker.lost) == (4, 3, 1)  # 9 is missing
    # before the first packet and before extended number 0: nothing to number it with
    tracker = SequenceTracker()
    assert feed(tracker, [5, 65534]) == [5, None]
    assert tracker.ignored == 1


def test_tracker_gap_below_dropout_is_loss() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [100, 2000, 3099]) == [100, 2000, 3099]
    assert (tracker.expected, tracker.received, tracker.lost) == (3000, 3, 2997)
    assert tracker.restarts == 0


def test_tracker_dropout_boundary() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [0, 2999]) == [0, 2999]  # MAX_DROPOUT - 1 ahead: loss
    assert tracker.update(5999) is None  # MAX_DROPOUT ahead: a stray until confirmed
    assert tracker.lost == 2998


def test_tracker_restart_after_jump() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [100, 101, 102, 103, 104]) == [100, 101, 102, 103, 104]
    assert tracker.update(30104) is None  # one packet far away: ignored
    assert tracker.restarts == 0
    assert tracker.update(30105) == 30105  # confirmed by the next one: a new stream
    assert tracker.restarts == 1
    assert (tracker.received, tracker.expected, tracker.lost) == (1, 1, 0)
    assert feed(tracker, [30106, 30108]) == [30106, 30108]
    assert tracker.lost == 1
    assert tracker.update(104) is None  # the old stream is now far away


def test_tracker_restart_backwards_keeps_numbers_increasing() -> None:
    tracker = SequenceTracker()
    feed(tracker, [40000, 40001])
    assert feed(tracker, [7, 8, 9]) == [None, 65536 + 8, 65536 + 9]
    assert tracker.restarts == 1
    assert tracker.report_block(1).highest_seq == 65536 + 9


def test_tracker_single_stray_is_not_a_restart() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [100, 101, 30000, 102, 103]) == [100, 101, None, 102, 103]
    assert (tracker.restarts, tracker.ignored, tracker.lost) == (0, 1, 0)
    # the confirming packet may come later, between packets of the old stream (RFC A.1)
    assert feed(tracker, [30001]) == [30001]
    assert tracker.restarts == 1


def test_tracker_loss_over_wrap() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [65533, 65534, 1, 2]) == [65533, 65534, 65537, 65538]
    assert (tracker.expected, tracker.received, tracker.lost) == (6, 4, 2)
    assert tracker.fraction_lost() == (2 << 8) // 6
    assert tracker.fraction_lost() == 0  # a new interval, nothing new lost
    feed(tracker, [3, 5])
    assert tracker.fraction_lost() == 256 // 3  # 1 of 3 in this interval
    block = tracker.report_block(0xABC, jitter=12, lsr=34, dlsr=56)
    assert block == ReportBlock(0xABC, 0, 3, 65536 + 5, 12, 34, 56)


def test_tracker_cumulative_lost_clamps() -> None:
    tracker = SequenceTracker()
    seq = 0
    for _ in range(3000):  # 2999 lost per step
        seq = seq + 2999 & 0xFFFF
        tracker.update(seq)
    assert tracker.lost > 0x7FFFFF
    block = tracker.report_block(1)
    assert block.cumulative_lost == 0x7FFFFF
    assert block.fraction_lost == 255
    assert bytes(ReceiverReport(2, (block,)))  # and it serializes


def test_tracker_probation() -> None:
    tracker = SequenceTracker(min_sequential=2)  # the RFC's sample behaviour
    assert tracker.highest is None
    assert feed(tracker, [500, 700, 701, 702]) == [None, None, 701, 702]
    assert (tracker.received, tracker.expected, tracker.ignored) == (2, 2, 2)
    tracker = SequenceTracker(min_sequential=2)
    assert feed(tracker, [65535, 0]) == [None, 0]
    with pytest.raises(ValueError):
        SequenceTracker(min_sequential=0)


def test_tracker_rejects_bad_seq() -> None:
    with pytest.raises(ValueError):
        SequenceTracker().update(65536)


@st.composite
def jittery_streams(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    """(first seq, true extended offsets in arrival order incl. duplicates, distinct offsets)."""
    first = draw(st.integers(0, 0xFFFF))
    # gaps small enough that nothing arrives MAX_MISORDER (100) or more behind the newest
    gaps = draw(st.lists(st.integers(1, 15), min_size=1, max_size=150))
    offsets = [0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    arrival = list(offsets)
    for i in range(1, len(arrival) - 1):  # swap neighbours (never the first packet)
        if draw(st.integers(0, 4)) == 0:
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
    for _ in range(draw(st.integers(0, 10))):  # duplicates shortly after the original
        i = draw(st.integers(0, len(arrival) - 1))
        arrival.insert(min(i + draw(st.integers(1, 3)), len(arrival)), arrival[i])
    return first, arrival, offsets


@RICH
@given(jittery_streams())
def test_tracker_property(stream: tuple[int, list[int], list[int]]) -> None:
    first, arrival, offsets = stream
    tracker = SequenceTracker()
    seen: set[int] = set()
    for offset in arrival:
        got = tracker.update((first + offset) & 0xFFFF)
        if offset in seen:
            assert got is None
        else:
            assert got == first + offset
            seen.add(offset)
    assert tracker.received == len(offsets)
    assert tracker.duplicates == len(arrival) - len(offsets)
    assert tracker.expected == offsets[-1] + 1
    assert tracker.lost == offsets[-1] + 1 - len(offsets)
    assert tracker.restarts == tracker.ignored == 0


# --------------------------------------------------------------------------------------------
# JitterEstimator


@pytest.mark.parametrize(("rate", "step"), [(48000, 960), (8000, 160)])
def test_jitter_regular_arrival_is_zero(rate: int, step: int) -> None:
    estimator = JitterEstimator(rate)
    ts = 0xFFFFFFFF - 20 * step  # crosses the 32-bit wrap
    for i in range(200):
        estimator.update(ts & 0xFFFFFFFF, 1000.0 + i * 0.02)
        ts += step
    assert estimator.jitter_seconds < 1e-6
    assert estimator.report_value == 0


def test_jitter_uniform_5ms() -> None:
    rng = random.Random(7587)
    estimator = JitterEstimator(48000)
    tail = []
    for i in range(4000):
        arrival = i * 0.02 + rng.uniform(-0.005, 0.005)
        estimator.update(i * 960 & 0xFFFFFFFF, arrival)
        if i >= 1000:
            tail.append(estimator.jitter_seconds)
    # D = difference of two independent U(-5, 5) ms delays: E|D| = 2 * 5 / 3 ms
    mean = sum(tail) / len(tail)
    assert mean == pytest.approx(10 / 3 * 1e-3, rel=0.1)
    assert 0.002 < estimator.jitter_seconds < 0.005
    assert estimator.report_value == int(estimator.jitter)


def test_jitter_constant_offset_and_step() -> None:
    # a fixed network delay is not jitter; one 10 ms delay step adds one spike of 10/16 ms
    estimator = JitterEstimator(8000)
    for i in range(50):
        estimator.update(i * 160, 3.0 + i * 0.02)
    assert estimator.jitter == pytest.approx(0, abs=1e-9)
    assert estimator.update(50 * 160, 3.0 + 50 * 0.02 + 0.010) == pytest.approx(80 / 16)
    with pytest.raises(ValueError):
        JitterEstimator(0)
