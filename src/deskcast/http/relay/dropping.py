"""A queue for a consumer that must never wait for the network: bounded in bytes, it drops
its oldest chunks (and counts them) when full."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator


class DropOldest:
    """Chunks waiting for Icecast, at most ``limit_bytes`` (always at least one): the oldest
    are dropped and counted when it is full."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = max(1, limit_bytes)
        self.bytes = 0
        self.dropped_chunks = 0
        self.dropped_bytes = 0
        self.wakeup = asyncio.Event()
        self._chunks: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def put(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.bytes += len(chunk)
        while self.bytes > self.limit_bytes and len(self._chunks) > 1:
            old = self._chunks.popleft()
            self.bytes -= len(old)
            self.dropped_chunks += 1
            self.dropped_bytes += len(old)
        self.wakeup.set()

    def get(self) -> bytes:
        chunk = self._chunks.popleft()
        self.bytes -= len(chunk)
        return chunk

    def clear(self, *, dropped: bool = False) -> None:
        """Empty it; ``dropped``: count what it held as dropped."""
        if dropped:
            self.dropped_chunks += len(self._chunks)
            self.dropped_bytes += self.bytes
        self._chunks.clear()
        self.bytes = 0
