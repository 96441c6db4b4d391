"""ICY metadata interleaving: blocks exactly every metaint bytes, titles only when they change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskcast.http.icy import MAX_BLOCK, IcyInserter, metadata_block, split_icy


def test_block_layout() -> None:
    block = metadata_block("A - B")
    assert block[0] * 16 == len(block) - 1
    assert block[1:].rstrip(b"\x00") == b"StreamTitle='A - B';"
    assert metadata_block("")[1:].rstrip(b"\x00") == b"StreamTitle='';"
    # a quote cannot be escaped in ICY: it becomes a typographic one
    assert "\u2019" in metadata_block("Don't")[1:].rstrip(b"\x00").decode()
    long = metadata_block("\u00e9" * 5000)
    assert len(long) - 1 <= MAX_BLOCK and long[0] == 255
    long[1:].rstrip(b"\x00").decode("utf-8")  # never cut inside a character


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
       metaint=st.integers(min_value=1, max_value=2000))
def test_blocks_every_metaint_bytes_whatever_the_write_sizes(sizes: list[int],
                                                             metaint: int) -> None:
    ins = IcyInserter(metaint)
    audio = bytes(i % 251 for i in range(sum(sizes)))
    out = bytearray()
    pos = 0
    for k, size in enumerate(sizes):
        title = "first" if k < len(sizes) // 2 else "second"
        out += ins.feed(audio[pos:pos + size], title)
        pos += size
    got, blocks = split_icy(bytes(out), metaint)
    assert got == audio
    assert [b.offset for b in blocks] == list(range(metaint, len(audio) + 1, metaint))[
        :len(blocks)]
    assert len(blocks) == len(audio) // metaint
    titles = [b.title for b in blocks if b.title is not None]
    assert titles == list(dict.fromkeys(titles))  # each title sent once, when it changes
    if blocks:
        assert blocks[0].title in ("first", "second")


def test_bad_metaint_and_bad_block() -> None:
    with pytest.raises(ValueError):
        IcyInserter(0)
    with pytest.raises(ValueError, match="StreamTitle"):
        split_icy(b"ab" + bytes([1]) + b"garbage".ljust(16, b"\x00") + b"cd", 2)
