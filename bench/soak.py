"""Soak: send -> receive for an hour with clock drift; do latency, memory and CPU stay flat?

A private PulseAudio has the null sinks ``hub`` and ``out``. The sender's source is a
generator whose clock runs ``--ppm`` (300) fast (``tone:1000?clock_ppm=300``, or noise), as a
sender whose sound card is off nominal would; the receiver plays to ``pulse:out``, paced by the
sound server's clock, so it must follow the drift by resampling or its buffer fills up (300 ppm
is 1 s an hour). Every ``--every`` (10) seconds the script samples, for both processes, resident
memory (VmRSS) and CPU time, and from the receiver's ``--stats-json`` lines of that interval
the mean delay, latency estimate and buffer depth, the drift estimate, and how much was
concealed, expanded or skipped.

The delay is what the listener hears: each sample's wait in the receiver, from its packet's
arrival on time (its RTP timestamp mapped onto the receiver's clock) to when it is handed to
the sink, plus what the sound server reports queued ahead of it then (``delay_ms``; the
part in the sound server is ``sink_ms``), averaged over all samples of each second.
The older latency estimate (the jitter buffer's depth at one instant a second, plus the
sink's buffer) is shown but not judged: the depth steps by whole packets and, read against
PulseAudio's bursts, swings by a frame or two that nobody hears.

Verdict, after ``--settle`` seconds (60; quick: 30): **flat** when, for both processes, the
RSS trend (least squares) is under 1 MB per 10 minutes, the range of the 10 s mean delays
is under 10 ms, and the CPU of the last third is at most 20 % (relative, or 0.5 % of a core)
above the first third's; otherwise **grew**, naming what grew.

    .venv/bin/python bench/soak.py                # 60 minutes
    .venv/bin/python bench/soak.py --quick        # 2 minutes
    .venv/bin/python bench/soak.py --minutes 480 --ppm -150 --signal noise
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

from bench.common import (  # noqa: E402
    DESKCAST,
    BenchError,
    BenchServer,
    Child,
    MachineLoad,
    Procs,
    Progress,
    add_server_priority,
    cpu_seconds,
    free_port_pair,
    header,
    load_summary,
    rss_mb,
    table,
    wait_for_log,
)

RSS_SLOPE_MB_PER_10MIN = 1.0
LATENCY_RANGE_MS = 10.0
CPU_GROWTH = 0.20
CPU_GROWTH_FLOOR_PCT = 0.5
JUMP_MS = 4.0
STEAL_MS = 10.0


@dataclass
class Sample:
    t_s: float
    rss_tx_mb: float
    rss_rx_mb: float
    cpu_tx_pct: float
    cpu_rx_pct: float
    delay_ms: float
    sink_ms: float
    """The part of the delay in the sound server's buffer (what it reports queued)."""
    latency_ms: float
    buffer_ms: float
    drift_ppm: float
    concealed_pct: float
    expanded_ms: float
    skipped_ms: float
    underruns: int
    jumps: int
    """Seconds whose delay rose more than ``JUMP_MS`` over the second before: the device lost
    time (it stalled and played silence) and the audio waiting piled up."""
    stolen_ms: float = 0.0
    """The longest time the hypervisor took the CPUs in the interval (see :class:`StealWatch`)."""


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    load: MachineLoad = field(default_factory=MachineLoad)


class StealWatch:
    """The hypervisor's steal time, read from /proc/stat every 20 ms in a thread: on a VM a
    virtual CPU is sometimes not run for tens of ms, everything on it stops (the sender's
    real-time thread included), and its packets come that much late. :meth:`take` returns
    the longest such stretch since the last call (consecutive reads with steal, summed over
    all CPUs, in ms; /proc/stat counts in 10 ms ticks)."""

    PERIOD_S = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._longest = self._run = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="steal-watch", daemon=True)

    def _watch(self) -> None:
        last = MachineLoad.read_proc_stat()[2]
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(self.PERIOD_S):
            now = MachineLoad.read_proc_stat()[2]
            with self._lock:
                if now > last:
                    self._run += (now - last) * tick_ms
                    self._longest = max(self._longest, self._run)
                else:
                    self._run = 0.0
            last = now

    def __enter__(self) -> StealWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> float:
        with self._lock:
            longest, self._longest = self._longest, self._run
        return longest


class StatsTail:
    """New JSON lines of a ``--stats-json`` file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.last_delay = math.nan
        """The delay of the newest line read (to count jumps across intervals)."""

    def new(self) -> list[dict[str, object]]:
        try:
            with self.path.open() as fh:
                fh.seek(self._offset)
                text = fh.read()
        except OSError:
            return []
        complete = text[: text.rfind("\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def number(record: dict[str, object], key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) else math.nan


def run(args: argparse.Namespace, progress: Progress) -> Soak:
    soak = Soak()
    with BenchServer(realtime=args.server_priority == "realtime") as bs, \
            Procs(bs.workdir) as procs, StealWatch() as steal:
        port = free_port_pair()
        rx_stats = bs.workdir / "rx.json"
        source = f"{args.signal}{':1000' if args.signal == 'tone' else ''}?clock_ppm={args.ppm:g}"
        rx = procs.start("receive", [*DESKCAST, "-v", "receive", f":{port}", "-o", "pulse:out",
                                     "--stats-json", str(rx_stats)], bs.env)
        wait_for_log(rx, "listening for RTP")
        tx = procs.start("send", [*DESKCAST, "-v", "send", f"127.0.0.1:{port}", "-s", source],
                         bs.env)
        wait_for_log(tx, "sending Opus")
        progress(f"running {source} -> receive -o pulse:out for {args.minutes:g} min, "
                 f"a sample every {args.every:g} s")
        tail = StatsTail(rx_stats)
        t0 = time.monotonic()
        end = t0 + 60 * args.minutes
        last = (t0, cpu_seconds(tx.proc.pid), cpu_seconds(rx.proc.pid))
        soak.load.start()
        next_at = t0 + args.every
        while next_at <= end + 1e-6:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += args.every
            procs.check_alive()
            bs.check()
            soak.samples.append(sample(tx, rx, tail, last, t0))
            soak.samples[-1].stolen_ms = steal.take()
            last = (time.monotonic(), cpu_seconds(tx.proc.pid), cpu_seconds(rx.proc.pid))
            s = soak.samples[-1]
            progress(f"{s.t_s:6.0f} s  rss {s.rss_tx_mb:.1f}/{s.rss_rx_mb:.1f} MB  cpu "
                     f"{s.cpu_tx_pct:.1f}/{s.cpu_rx_pct:.1f} %  delay {s.delay_ms:.1f} ms  "
                     f"drift {s.drift_ppm:+.0f} ppm")
        soak.load.stop()
    return soak


def sample(tx: Child, rx: Child, tail: StatsTail, last: tuple[float, float, float],
           t0: float) -> Sample:
    now = time.monotonic()
    t_last, c_tx, c_rx = last
    span = max(1e-3, now - t_last)
    records = tail.new()
    if not records:
        raise BenchError("the receiver wrote no --stats-json line in the last interval")
    delay = [number(r, "delay_ms") for r in records]
    lat = [number(r, "latency_ms") for r in records]
    sink = [number(r, "sink_ms") for r in records]
    buf = [number(r, "buffer_ms") for r in records]
    final = records[-1]
    jumps = 0
    for d in delay:
        if d - tail.last_delay > JUMP_MS:
            jumps += 1
        if not math.isnan(d):
            tail.last_delay = d
    return Sample(
        t_s=now - t0,
        rss_tx_mb=rss_mb(tx.proc.pid),
        rss_rx_mb=rss_mb(rx.proc.pid),
        cpu_tx_pct=100 * (cpu_seconds(tx.proc.pid) - c_tx) / span,
        cpu_rx_pct=100 * (cpu_seconds(rx.proc.pid) - c_rx) / span,
        delay_ms=float(np.nanmean(delay)) if not np.all(np.isnan(delay)) else math.nan,
        sink_ms=float(np.nanmean(sink)) if not np.all(np.isnan(sink)) else math.nan,
        latency_ms=float(np.nanmean(lat)),
        buffer_ms=float(np.nanmean(buf)),
        drift_ppm=number(final, "drift_ppm"),
        concealed_pct=number(final, "concealed_pct"),
        expanded_ms=number(final, "expanded_ms"),
        skipped_ms=number(final, "skipped_ms"),
        underruns=int(number(final, "underruns")),
        jumps=jumps,
    )


def slope_per_10min(t_s: list[float], values: list[float]) -> float:
    if len(t_s) < 2:
        return math.nan
    return float(np.polyfit(np.asarray(t_s), np.asarray(values), 1)[0]) * 600


def verdict(samples: list[Sample], settle_s: float) -> tuple[bool, list[str]]:
    """(flat, one line per criterion with its value)."""
    settled = [s for s in samples if s.t_s >= settle_s]
    if len(settled) < 3:
        return False, [f"only {len(settled)} samples after {settle_s:g} s of settling: "
                       "run longer"]
    t = [s.t_s for s in settled]
    lines: list[str] = []
    flat = True

    def check(ok: bool, text: str) -> None:
        nonlocal flat
        flat = flat and ok
        lines.append(f"{'ok  ' if ok else 'GREW'} {text}")

    for name, values in (("sender", [s.rss_tx_mb for s in settled]),
                         ("receiver", [s.rss_rx_mb for s in settled])):
        slope = slope_per_10min(t, values)
        check(abs(slope) < RSS_SLOPE_MB_PER_10MIN,
              f"{name} RSS trend {slope:+.2f} MB/10 min (limit {RSS_SLOPE_MB_PER_10MIN:g}), "
              f"{min(values):.1f}-{max(values):.1f} MB")
    delay = [s.delay_ms for s in settled]
    check(max(delay) - min(delay) < LATENCY_RANGE_MS,
          f"delay (10 s means) {min(delay):.1f}-{max(delay):.1f} ms, range "
          f"{max(delay) - min(delay):.1f} ms (limit {LATENCY_RANGE_MS:g})")
    jumps = sum(s.jumps for s in settled)
    lines.append(f"info the device lost time {jumps} times (a second's delay "
                 f"> {JUMP_MS:g} ms above the one before)")
    stolen = [s.stolen_ms for s in samples]
    long_steals = sum(v >= STEAL_MS for v in stolen)
    lines.append(f"info the hypervisor stopped the CPUs for >= {STEAL_MS:g} ms in {long_steals} "
                 f"of {len(stolen)} intervals (longest {max(stolen, default=0):.0f} ms)")
    prev = 0
    for s in samples:
        if s.underruns > prev:
            lines.append(f"info ran dry in the interval to {s.t_s:.0f} s ({s.underruns - prev}x); "
                         f"the longest steal in it: {s.stolen_ms:.0f} ms")
        prev = s.underruns
    lat = [s.latency_ms for s in settled]
    lines.append(f"info latency estimate (not judged) {min(lat):.1f}-{max(lat):.1f} ms")
    third = max(1, len(settled) // 3)
    for name, values in (("sender", [s.cpu_tx_pct for s in settled]),
                         ("receiver", [s.cpu_rx_pct for s in settled])):
        first, final = float(np.mean(values[:third])), float(np.mean(values[-third:]))
        allowed = max(first * CPU_GROWTH, CPU_GROWTH_FLOOR_PCT)
        check(final - first <= allowed,
              f"{name} CPU first third {first:.1f} %, last third {final:.1f} % of a core "
              f"(allowed +{allowed:.1f})")
    return flat, lines


def report(soak: Soak, args: argparse.Namespace) -> bool:
    rows = [[f"{s.t_s:.0f}", f"{s.rss_tx_mb:.1f}", f"{s.rss_rx_mb:.1f}", f"{s.cpu_tx_pct:.1f}",
             f"{s.cpu_rx_pct:.1f}", f"{s.delay_ms:.1f}", f"{s.sink_ms:.1f}", f"{s.latency_ms:.1f}",
             f"{s.buffer_ms:.1f}",
             f"{s.drift_ppm:+.0f}", f"{s.concealed_pct:.2f}", f"{s.expanded_ms:.0f}",
             f"{s.skipped_ms:.0f}", str(s.underruns), str(s.jumps), f"{s.stolen_ms:.0f}"]
            for s in soak.samples]
    print(table(["t s", "tx MB", "rx MB", "tx cpu%", "rx cpu%", "delay ms", "sink ms", "latency ms",
                 "buffer ms",
                 "drift ppm", "concealed%", "expanded ms", "skipped ms", "ran dry", "jumps",
                 "stolen ms"], rows))
    print()
    flat, lines = verdict(soak.samples, args.settle)
    for line in lines:
        print(line)
    print(f"verdict: {'flat' if flat else 'grew'}")
    print()
    print(f"every {args.every:g} s: RSS (VmRSS), CPU (user+system, all threads, % of one core "
          "over the interval) of sender and receiver; delay, latency and buffer are the means of "
          "the receiver's --stats-json lines of the interval (delay = each sample's wait from "
          "its packet's on-time arrival to when the sound server has played what it had "
          "queued ahead of it, averaged over every second's samples; sink: the part of it in "
          "the sound server's buffer, as it reports it; latency = jitter buffer depth at one "
          "instant + the device buffer); drift, concealed, expanded, skipped and 'ran dry' are its "
          f"running values; jumps: seconds whose delay rose > {JUMP_MS:g} ms over the second "
          f"before (the device lost time); stolen: the longest time the hypervisor did not "
          "run the CPUs in the interval (from /proc/stat's steal, every 20 ms). Settling: "
          f"the first {args.settle:g} s are left out of the verdict.")
    summary = load_summary([soak.load])
    if summary:
        print(summary)
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (60)")
    parser.add_argument("--quick", action="store_true", help="2 minutes, 30 s settling")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds left out of the verdict at the start (60)")
    parser.add_argument("--ppm", type=float, default=300.0,
                        help="the sender's clock error in ppm (300; + is fast)")
    parser.add_argument("--signal", choices=("tone", "noise"), default="tone",
                        help="what is sent: a 1 kHz tone (default) or white noise, -12 dBFS")
    add_server_priority(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.settle = 2.0, 30.0
    progress = Progress(args.quiet)
    print(header(f"Soak: {args.signal} with the sender's clock {args.ppm:+g} ppm off -> send -> "
                 f"UDP 127.0.0.1 -> receive -> pulse:out ({args.server_priority} PulseAudio), "
                 f"{args.minutes:g} min"
                 f"{' (quick)' if args.quick else ''}"), flush=True)
    try:
        soak = run(args, progress)
    except BenchError as err:
        print(f"soak failed: {err}")
        return 1
    print()
    return 0 if report(soak, args) else 1


if __name__ == "__main__":
    sys.exit(main())
