from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_repair_packets_are_counted_not_raised(data: bytes) -> None:
    dec = FecDecoder()
    for seq, ts, payload in stream(8):
        dec.add_source(seq, ts, payload)
    dec.add_repair(data)


@pytest.mark.parametrize("text", ["4", "0:1", "4:5", "x:y", "17:2"])
def test_bad_schemes(text: str) -> None:
    with pytest.raises(ConfigError, match="K:R"):
        parse_scheme(text)
    assert parse_scheme("4:2") == (4, 2)
