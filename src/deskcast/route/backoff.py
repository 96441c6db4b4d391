"""How long to wait before restarting a leg that died — pure logic, tested with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Exponential backoff: ``first_s``, doubled per crash in a row up to ``max_s``.

    A leg that ran at least ``stable_s`` before it died counts as healthy again: the next
    restart waits only ``first_s`` (a receiver that restarts once an hour is not punished).
    """

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 30.0
    failures: int = 0

    def next_delay(self, ran_s: float) -> float:
        """The wait before the next start, after a run of ``ran_s`` seconds that ended."""
        if ran_s >= self.stable_s:
            self.failures = 0
        delay = min(self.max_s, self.first_s * 2.0 ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
