"""What every leg of a route can do; the daemon (:mod:`deskcast.route.daemon`) restarts dead
legs through this interface alone."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Leg(ABC):
    kind: str = ""

    def __init__(self, word: str) -> None:
        self.word = word
        self.started = 0.0

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def wait(self) -> str:
        """Return (with the reason) when the leg has died."""

    @abstractmethod
    async def stop(self) -> None: ...

    async def info(self) -> dict[str, Any]:
        return {}

    @property
    def pid(self) -> int | None:
        """The leg's process, if it has its own."""
        return None

