"""Measurements: the meter recording's frame clock, levels and dropouts of the recorded audio,
the CPU time and memory of processes, how loaded the machine was, percentiles."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from bench.common.procs import BenchError
from bench.common.server import RATE
from rig.meter import MeterRecording
from rig.signals import Audio, to_mono

SILENT_DB = -50.0
"""Below this RMS level (dBFS) a block of the output counts as silent."""


class FrameClock:
    """When the meter mixed frame 0 of a growing :class:`MeterRecording`, in
    ``time.monotonic()`` (:attr:`t0`), from when the recording grew: a thread notes the time
    right after it sees the file longer; ``now - frames / rate`` is never earlier than when
    the last of those frames was mixed (the null sink hands its monitor each block as it
    mixes it), and its smallest value over many blocks is that moment to within a
    millisecond (the same convention as the delays of bench/latency.py: when the sound is
    mixed, a sink's latency before a sound card would play it). A frame inside a block was
    mixed with the whole block, up to one block (15 ms here) earlier than ``t0 + f / rate``.
    :meth:`stop` it before the meter's block size can change (a new client asking for
    another latency): it puts the one wall-clock event of a run, navigation start, onto the
    recording."""

    def __init__(self, rec: MeterRecording, poll_s: float = 0.002) -> None:
        self.rec, self.poll_s = rec, poll_s
        self.t0 = math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-clock", daemon=True)

    def _run(self) -> None:
        rate, last = self.rec.meter.rate, 0
        while not self._stop.wait(self.poll_s):
            frames = self.rec.frames()
            if frames != last:
                self.t0 = min(self.t0, time.monotonic() - frames / rate)
                last = frames

    def frame_at(self, t: float) -> float:
        """The frame of the recording rendered at ``time.monotonic()`` = ``t``."""
        if math.isinf(self.t0):
            raise BenchError("the recording never grew")
        return (t - self.t0) * self.rec.meter.rate

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def __enter__(self) -> FrameClock:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def block_levels_db(x: npt.ArrayLike, rate: int = RATE, block_ms: float = 1.0
                    ) -> npt.NDArray[np.float64]:
    """RMS level in dBFS of each whole ``block_ms`` block of the mono mix."""
    m = to_mono(x)
    block = max(1, round(rate * block_ms / 1000.0))
    n = m.size // block
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    blocks = m[: n * block].reshape(n, block)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    return np.asarray(20.0 * np.log10(np.maximum(rms, 1e-12)), dtype=np.float64)


def silent_runs_ms(x: Audio, rate: int = RATE, block_ms: float = 1.0,
                   threshold_db: float = SILENT_DB) -> list[float]:
    """Lengths (ms) of the runs of consecutive ``block_ms`` blocks below ``threshold_db``."""
    return true_runs_ms(block_levels_db(x, rate, block_ms) < threshold_db, block_ms)


def true_runs_ms(flags: npt.ArrayLike, block_ms: float) -> list[float]:
    """Lengths (ms) of the runs of consecutive true ``flags``, each flag one ``block_ms``."""
    runs: list[float] = []
    length = 0
    for flag in np.asarray(flags, dtype=bool):
        if flag:
            length += 1
        elif length:
            runs.append(length * block_ms)
            length = 0
    if length:
        runs.append(length * block_ms)
    return runs


def cpu_seconds(pid: int) -> float:
    """utime+stime (all threads) plus cutime+cstime (waited-for children) of ``pid`` and of
    every living descendant, in seconds."""
    tick = float(os.sysconf("SC_CLK_TCK"))
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
        ppid = int(fields[1])
        cpu = sum(int(v) for v in fields[11:15]) / tick
        stats[int(entry)] = (ppid, cpu)
    total = 0.0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in stats:
            continue
        seen.add(p)
        total += stats[p][1]
        todo.extend(q for q, (pp, _) in stats.items() if pp == p)
    return total


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of ``pid`` in MB (10^6 bytes); NaN if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


class MachineLoad:
    """How loaded the machine was between :meth:`start` and :meth:`stop`, from /proc/stat:
    :attr:`busy` is the share of all CPUs' time that was busy (anything but idle/iowait, so
    including the other processes on the machine), :attr:`steal` the share the hypervisor
    gave to other virtual machines."""

    def __init__(self) -> None:
        self._start: tuple[int, int, int] | None = None
        self.busy: float = math.nan
        self.steal: float = math.nan

    @staticmethod
    def read_proc_stat() -> tuple[int, int, int]:
        """(total, idle, steal) of all CPUs so far, in clock ticks."""
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        steal = values[7] if len(values) > 7 else 0
        return sum(values[:8]), idle, steal

    def start(self) -> MachineLoad:
        self._start = self.read_proc_stat()
        return self

    def stop(self) -> float:
        if self._start is None:
            return math.nan
        total, idle, steal = self.read_proc_stat()
        t0, i0, s0 = self._start
        span = max(1, total - t0)
        self.busy = 1.0 - (idle - i0) / span
        self.steal = (steal - s0) / span
        return self.busy


def load_summary(loads: Sequence[MachineLoad]) -> str:
    """One line on how busy the machine was during the runs."""
    busy = [100 * m.busy for m in loads if not math.isnan(m.busy)]
    steal = [100 * m.steal for m in loads if not math.isnan(m.steal)]
    if not busy:
        return ""
    return (f"machine during the runs (all CPUs, all processes, this benchmark included): busy "
            f"median {median(busy):.0f}%, max {max(busy):.0f}%; stolen by the hypervisor: "
            f"median {median(steal):.1f}%, max {max(steal):.1f}%.")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)
