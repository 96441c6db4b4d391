from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from deskcast.errors import ConfigError
from deskcast.transport.fec import FecDecoder, FecEncoder, parse_scheme


def stream(n: int, seed: int = 0) -> list[tuple[int, int, bytes]]:
    rng = random.Random(seed)
    return [((65530 + i) & 0xFFFF, i * 960, rng.randbytes(rng.randrange(20, 300)))
            for i in range(n)]


@pytest.mark.parametrize("k, r", [(4, 2), (5, 1), (8, 3)])
def test_any_r_losses_per_group_are_rebuilt(k: int, r: int) -> None:
    enc, dec = FecEncoder(k, r), FecDecoder()
    packets = stream(k * 20)
    rng = random.Random(k * 10 + r)
    recovered = {}
    for g in range(20):
        group = packets[g * k:(g + 1) * k]
        lost = set(rng.sample(range(k), r))
        repairs: list[bytes] = []
        for i, (seq, ts, payload) in enumerate(group):
            repairs += enc.add(seq, ts, payload)
            if i not in lost:
                dec.add_source(seq, ts, payload)
        assert len(repairs) == r
        for rep in repairs:
            for got in dec.add_repair(rep):
                recovered[got.sequence] = (got.timestamp, got.payload)
        for i in lost:
            seq, ts, payload = group[i]
            assert recovered[seq] == (ts, payload)
    assert dec.recovered == 20 * r


def test_more_losses_than_repairs_rebuild_nothing() -> None:
    enc, dec = FecEncoder(4, 1), FecDecoder()
    repairs: list[bytes] = []
    for i, (seq, ts, payload) in enumerate(stream(4)):
        repairs += enc.add(seq, ts, payload)
        if i not in (1, 2):
            dec.add_source(seq, ts, payload)
    assert dec.add_repair(repairs[0]) == []


def _group(base: int, k: int) -> set[int]:
    return {(base + i) & 0xFFFF for i in range(k)}


def _well_formed_header(data: bytes) -> tuple[int, int] | None:
    """(base, k) if ``data`` passes for a repair packet's header, else None."""
    if len(data) <= 5:
        return None
    base, k, r, idx = data[0] << 8 | data[1], data[2], data[3], data[4]
    return (base, k) if 1 <= r <= k <= 16 and k <= idx < k + r else None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"")
@example(b"\xff\xfa\x04")                        # shorter than the header
@example(b"\xff\xfa\x11\x01\x11" + b"x" * 40)    # k = 17: over the largest group
@example(b"\xff\xfa\x04\x02\x02" + b"x" * 40)    # index 2 is an audio packet's, not a repair's
@example(b"\xff\xfa\x04\x01\x04" + b"x" * 40)    # a group we have whole: nothing to rebuild
@example(b"\x00\x00\x04\x02\x04" + b"x" * 30)    # 0..3 misses 2 and 3: one share waits
@example(b"\x00\x01\x02\x01\x02" + b"x" * 3)     # 1..2 misses 2; too short to hold 1
@example(b"\x00\x01\x02\x01\x02" + b"x" * 400)   # 1..2 misses 2: rebuilt from garbage
def test_garbage_repair_packets_are_counted_not_raised(data: bytes) -> None:
    """Whatever comes in as a repair packet: one that is no repair packet at all is counted
    as malformed and rebuilds nothing; one that passes for a repair rebuilds nothing but
    what its own group lacks (never a packet we have), and one that cannot be decoded is
    counted. Either way, the next real group with a loss is still rebuilt exactly."""
    enc, dec = FecEncoder(4, 2), FecDecoder()
    had = stream(8)                               # sequences 65530 .. 1
    for seq, ts, payload in had:
        dec.add_source(seq, ts, payload)
    out = dec.add_repair(data)
    header = _well_formed_header(data)
    if header is None:
        assert (out, dec.malformed) == ([], 1)
    else:
        lacking = _group(*header) - {seq for seq, _, _ in had}
        if len(lacking) != 1:
            # None lacking: a repair for a group that lost nothing. More: one share cannot
            # rebuild them, it waits for the group's other repairs. Neither is garbage yet.
            assert (out, dec.malformed) == ([], 0)
        else:
            # One lacking: rebuilt (from garbage: FEC has no checksum, the decoder after it
            # must cope) or counted, never neither.
            assert {got.sequence for got in out} <= lacking
            assert len(out) + dec.malformed == 1
    assert dec.recovered == len(out)
    # Good audio still comes through: a real group, away from the one the garbage named.
    base = 20000 if header is None or not _group(header[0], 16) & _group(20000, 4) else 40000
    real = [((base + i) & 0xFFFF, ts, payload) for i, (_, ts, payload) in enumerate(stream(4, 9))]
    repairs: list[bytes] = []
    for i, (seq, ts, payload) in enumerate(real):
        repairs += enc.add(seq, ts, payload)
        if i != 2:
            dec.add_source(seq, ts, payload)
    rebuilt = [got for rep in repairs for got in dec.add_repair(rep)]
    assert [(got.sequence, got.timestamp, got.payload) for got in rebuilt] == [real[2]]


@pytest.mark.parametrize("text", ["4", "0:1", "4:5", "x:y", "17:2"])
def test_bad_schemes(text: str) -> None:
    with pytest.raises(ConfigError, match="K:R"):
        parse_scheme(text)
    assert parse_scheme("4:2") == (4, 2)
