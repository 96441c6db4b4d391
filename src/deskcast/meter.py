"""The live status line of ``play``: elapsed time and a level bar per channel (terminals only)."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 24
FLOOR_DB = -60.0


def bar(db: float, width: int = BAR_WIDTH) -> str:
    filled = round(width * min(1.0, max(0.0, (db - FLOOR_DB) / -FLOOR_DB)))
    return "#" * filled + "-" * (width - filled)


def clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def status_line(elapsed_s: float, peak_db: list[float], rms_db: list[float]) -> str:
    labels = ["L", "R"] if len(peak_db) == 2 else [str(i + 1) for i in range(len(peak_db))]
    parts = [clock(elapsed_s)]
    for label, peak, rms in zip(labels, peak_db, rms_db, strict=False):
        parts.append(f"{label} [{bar(rms)}] {max(peak, -99.9):5.1f} dBFS")
        if len(peak_db) > 2:
            break
    return "  ".join(parts)


class Meter:
    """Redraws one line on a terminal at most ``fps`` times a second."""

    def __init__(self, stream: TextIO, fps: float = 10.0) -> None:
        self.stream = stream
        self.interval = 1.0 / fps
        self._last = 0.0
        self._width = 0

    def update(self, elapsed_s: float, peak_db: list[float], rms_db: list[float],
               force: bool = False, extra: str = "") -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        line = status_line(elapsed_s, peak_db, rms_db) + (f"  {extra}" if extra else "")
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def finish(self) -> None:
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
