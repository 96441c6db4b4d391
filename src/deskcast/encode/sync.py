"""Cutting a byte stream of self-synchronising audio frames (MPEG audio, ADTS) into whole frames.

Both formats start every frame with a sync pattern and a header that gives the frame's length;
:func:`split_synced` is the one scanner behind :func:`deskcast.encode.mp3.split_frames` and
:func:`deskcast.encode.aac.split_adts`, each giving its own header parser and the rule for
which headers belong to one stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar


class SyncHeader(Protocol):
    @property
    def frame_length(self) -> int:
        """Bytes in the whole frame, header included."""
        ...


H = TypeVar("H", bound=SyncHeader)


def split_synced(data: bytes, header_bytes: int, parse: Callable[[bytes], H],
                 consistent: Callable[[H, H], bool]) -> tuple[list[bytes], bytes]:
    """Cut ``data`` into whole frames; returns (frames, remainder).

    ``parse`` reads the header at the start of the bytes it is given (``header_bytes`` of
    them), raising ValueError if there is none. Bytes that cannot start a frame (garbage, tags,
    a broken frame) are skipped. A frame found right after the previous one, with a
    ``consistent`` header, is trusted; one found after skipped bytes (or at the very start)
    must be confirmed by a consistent header right after it, or end exactly at the end of
    ``data``, so a stray 0xFF in garbage is not taken for a frame. The remainder starts where
    a frame may begin that is not complete yet: prepend it to the next chunk of the stream.
    """
    frames: list[bytes] = []
    n = len(data)
    i = 0
    previous: H | None = None  # header of the frame that ended at i, while in sync
    while i < n:
        if data[i] != 0xFF:
            previous = None
            i += 1
            continue
        if n - i < header_bytes:
            break
        try:
            header = parse(data[i:i + header_bytes])
        except ValueError:
            previous = None
            i += 1
            continue
        end = i + header.frame_length
        if end > n:
            break
        in_sync = previous is not None and consistent(previous, header)
        if not in_sync and end != n:
            if n - end < header_bytes:
                break  # cannot confirm yet: wait for the next header
            try:
                following = parse(data[end:end + header_bytes])
            except ValueError:
                following = None
            if following is None or not consistent(header, following):
                previous = None
                i += 1
                continue
        frames.append(data[i:end])
        previous = header
        i = end
    return frames, data[i:]
