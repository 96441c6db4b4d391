"""Soak: send -> receive for an hour with clock drift; do delay, memory and CPU stay flat?
Judged from the sound that comes out.

A private PulseAudio has one 4-channel null sink ``meter`` with the sinks ``hub`` and ``out``
remapped onto its channels 0-1 and 2-3. pacat plays a marker signal into ``hub`` for the whole
run (a steady 1 kHz tone at -30 dBFS with a 30 ms chirp every 0.5 s). The sender captures
``hub.monitor`` as a sound card ``--ppm`` (300) fast would (``pulse:hub.monitor?clock_ppm=300``:
resampled so that each second of sound is 48,014.4 samples), so the receiver, playing into
``out`` at the sound server's pace, must follow the drift by resampling or its buffer fills up
(300 ppm is 1 s an hour). ``meter.monitor`` is recorded for the whole run: every chirp's delay
from hub to out is a sample offset inside that one recording, and every silence in the output
while the tone went in is a gap. Nothing the receiver says about itself is judged; its own
figure (``delay_ms`` of ``--stats-json``) is shown beside the measured one, and the difference
is a check of it (it leaves out the sender's capture and the network: it should be constant).

Every ``--every`` (10) seconds the script also samples both processes' resident memory (VmRSS)
and CPU time, and the hypervisor's steal (the longest stretch the CPUs were not run).

Verdict, over every minute (the first one included, unless ``--settle``): **flat** when, for
both processes, the RSS trend (least squares) is under 1 MB per 10 minutes, the per-minute
median delays measured from the audio stay within 10 ms of each other, and the CPU of the last
third is at most 20 % (relative, or 0.5 % of a core) above the first third's; otherwise
**grew**, naming what grew. Gaps and missed chirps are counted beside it.

    .venv/bin/python bench/soak.py                # 60 minutes (1.4 GB recording, deleted after)
    .venv/bin/python bench/soak.py --quick        # 3 minutes
    .venv/bin/python bench/soak.py --minutes 480 --ppm -150
    .venv/bin/python bench/soak.py --load 2     # with both CPUs kept busy beside it
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

from bench.common.measure import MachineLoad, cpu_seconds, load_summary, rss_mb  # noqa: E402
from bench.common.procs import (  # noqa: E402
    DESKCAST,
    BenchError,
    Child,
    Procs,
    add_load,
    cpu_load,
    free_port_pair,
    wait_for_log,
)
from bench.common.report import Progress, header, table  # noqa: E402
from bench.common.server import METER, RATE, BenchServer, add_server_priority  # noqa: E402
from rig.meter import (  # noqa: E402
    EventTracker,
    MarkerSignal,
    MeterRecording,
    SignalPlayer,
    steps,
)

RSS_SLOPE_MB_PER_10MIN = 1.0
DELAY_RANGE_MS = 10.0
CPU_GROWTH = 0.20
CPU_GROWTH_FLOOR_PCT = 0.5
STEAL_MS = 10.0
STEP_MS = 3.0
OWN_SPREAD_MS = 2.0
"""The receiver's own delay is checked: measured minus own should stay within this."""


@dataclass
class Sample:
    """Every ``--every`` seconds: the processes, the receiver's own report, the machine."""

    t_s: float
    rss_tx_mb: float
    rss_rx_mb: float
    cpu_tx_pct: float
    cpu_rx_pct: float
    own_delay_ms: list[float]
    """The receiver's ``delay_ms`` lines of the interval (one a second)."""
    drift_ppm: float
    concealed_pct: float
    underruns: int
    stolen_ms: float


@dataclass
class Minute:
    """One minute of the run, measured from the recording (and the samples that fall in it)."""

    index: int
    delays_ms: list[float]
    missed: int
    gaps_ms: list[float]
    own_ms: list[float]
    samples: list[Sample]


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    load: MachineLoad = field(default_factory=MachineLoad)
    tracker: EventTracker | None = None
    start_frame: int = 0
    """The recording's frame when the marker signal started (minute 0 begins there)."""
    minutes: float = 0.0


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
    soak = Soak(minutes=args.minutes)
    seconds = 60 * args.minutes
    with BenchServer(realtime=args.server_priority == "realtime") as bs, \
            Procs(bs.workdir) as procs, StealWatch() as steal, cpu_load(args.load):
        port = free_port_pair()
        rx_stats = bs.workdir / "rx.json"
        source = f"pulse:hub.monitor?clock_ppm={args.ppm:g}"
        rec = MeterRecording(METER, bs.workdir / "meter.raw", bs.server).start()
        try:
            rx = procs.start("receive", [*DESKCAST, "-v", "receive", f":{port}", "-o",
                                         "pulse:out", "--stats-json", str(rx_stats)], bs.env)
            wait_for_log(rx, "listening for RTP")
            tx = procs.start("send", [*DESKCAST, "-v", "send", f"127.0.0.1:{port}", "-s",
                                      source], bs.env)
            wait_for_log(tx, "sending Opus")
            progress(f"hub -> send -s {source} -> receive -o pulse:out for {args.minutes:g} "
                     f"min; recording meter.monitor to {rec.path}")
            soak.tracker = tracker = EventTracker(rec)
            soak.start_frame = rec.frames()
            tail = StatsTail(rx_stats)
            t0 = time.monotonic()
            last = (t0, cpu_seconds(tx.proc.pid), cpu_seconds(rx.proc.pid))
            soak.load.start()
            with SignalPlayer(bs.server, "hub", MarkerSignal(), seconds + 2,
                              latency_ms=500) as player:
                next_at = t0 + args.every
                while next_at <= t0 + seconds + 1e-6:
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += args.every
                    procs.check_alive()
                    bs.check()
                    if not player.running():
                        raise BenchError("pacat stopped playing the marker signal into hub")
                    s = sample(tx, rx, tail, last, t0, stolen_ms=steal.take())
                    soak.samples.append(s)
                    last = (time.monotonic(), cpu_seconds(tx.proc.pid),
                            cpu_seconds(rx.proc.pid))
                    tracker.update()
                    recent = [e.delay_ms for e in tracker.events[-20:]]
                    measured = f"{np.median(recent):.1f}" if recent else "-"
                    own = f"{np.nanmean(s.own_delay_ms):.1f}" if s.own_delay_ms else "-"
                    progress(f"{s.t_s:6.0f} s  delay {measured} ms (own {own})  gaps "
                             f"{len(tracker.gaps)}  missed {len(tracker.missed)}  rss "
                             f"{s.rss_tx_mb:.1f}/{s.rss_rx_mb:.1f} MB  cpu {s.cpu_tx_pct:.1f}/"
                             f"{s.cpu_rx_pct:.1f} %  drift {s.drift_ppm:+.0f} ppm")
            time.sleep(tracker.max_delay_s + 0.5)
            tracker.update()
            soak.load.stop()
        finally:
            rec.stop()
            if not os.environ.get("BENCH_KEEP"):
                rec.path.unlink(missing_ok=True)
    return soak


def sample(tx: Child, rx: Child, tail: StatsTail, last: tuple[float, float, float],
           t0: float, *, stolen_ms: float) -> Sample:
    now = time.monotonic()
    t_last, c_tx, c_rx = last
    span = max(1e-3, now - t_last)
    records = tail.new()
    if not records:
        raise BenchError("the receiver wrote no --stats-json line in the last interval")
    final = records[-1]
    return Sample(
        t_s=now - t0,
        rss_tx_mb=rss_mb(tx.proc.pid),
        rss_rx_mb=rss_mb(rx.proc.pid),
        cpu_tx_pct=100 * (cpu_seconds(tx.proc.pid) - c_tx) / span,
        cpu_rx_pct=100 * (cpu_seconds(rx.proc.pid) - c_rx) / span,
        own_delay_ms=[d for d in (number(r, "delay_ms") for r in records) if not math.isnan(d)],
        drift_ppm=number(final, "drift_ppm"),
        concealed_pct=number(final, "concealed_pct"),
        underruns=int(number(final, "underruns")),
        stolen_ms=stolen_ms,
    )


def minutes(soak: Soak) -> list[Minute]:
    """The run cut into minutes: chirps and gaps by where they entered the recording,
    samples by when they were taken."""
    tracker = soak.tracker
    if tracker is None:
        return []
    span = 60 * RATE
    count = math.ceil(soak.minutes - 1e-9)
    out: list[Minute] = []
    for m in range(count):
        lo, hi = soak.start_frame + m * span, soak.start_frame + (m + 1) * span
        samples = [s for s in soak.samples if m * 60 < s.t_s <= (m + 1) * 60 + 1e-6]
        out.append(Minute(
            index=m,
            delays_ms=[e.delay_ms for e in tracker.events if lo <= e.at < hi],
            missed=sum(1 for at in tracker.missed if lo <= at < hi),
            gaps_ms=[ms for at, ms in tracker.gaps if lo <= at < hi],
            own_ms=[d for s in samples for d in s.own_delay_ms],
            samples=samples,
        ))
    return out


def slope_per_10min(t_s: list[float], values: list[float]) -> float:
    if len(t_s) < 2:
        return math.nan
    return float(np.polyfit(np.asarray(t_s), np.asarray(values), 1)[0]) * 600


def verdict(soak: Soak, rows: list[Minute], settle_s: float) -> tuple[bool, list[str]]:
    """(flat, one line per criterion with its value)."""
    settled = [s for s in soak.samples if s.t_s >= settle_s]
    judged = [m for m in rows if (m.index + 1) * 60 > settle_s and m.delays_ms]
    if len(settled) < 3 or not judged:
        return False, [f"only {len(settled)} samples after {settle_s:g} s: run longer"]
    lines: list[str] = []
    flat = True

    def check(ok: bool, text: str) -> None:
        nonlocal flat
        flat = flat and ok
        lines.append(f"{'ok  ' if ok else 'GREW'} {text}")

    t = [s.t_s for s in settled]
    for name, values in (("sender", [s.rss_tx_mb for s in settled]),
                         ("receiver", [s.rss_rx_mb for s in settled])):
        slope = slope_per_10min(t, values)
        check(abs(slope) < RSS_SLOPE_MB_PER_10MIN,
              f"{name} RSS trend {slope:+.2f} MB/10 min (limit {RSS_SLOPE_MB_PER_10MIN:g}), "
              f"{min(values):.1f}-{max(values):.1f} MB")
    medians = [float(np.median(m.delays_ms)) for m in judged]
    every = [d for m in judged for d in m.delays_ms]
    check(max(medians) - min(medians) < DELAY_RANGE_MS,
          f"delay from the audio, per-minute medians {min(medians):.1f}-{max(medians):.1f} ms, "
          f"range {max(medians) - min(medians):.1f} ms (limit {DELAY_RANGE_MS:g}); every chirp "
          f"{min(every):.1f}-{max(every):.1f} ms, median {np.median(every):.1f}, p95 "
          f"{np.percentile(every, 95):.1f}")
    third = max(1, len(settled) // 3)
    for name, values in (("sender", [s.cpu_tx_pct for s in settled]),
                         ("receiver", [s.cpu_rx_pct for s in settled])):
        first, final = float(np.mean(values[:third])), float(np.mean(values[-third:]))
        allowed = max(first * CPU_GROWTH, CPU_GROWTH_FLOOR_PCT)
        check(final - first <= allowed,
              f"{name} CPU first third {first:.1f} %, last third {final:.1f} % of a core "
              f"(allowed +{allowed:.1f})")
    gaps = [g for m in judged for g in m.gaps_ms]
    missed = sum(m.missed for m in judged)
    lines.append(f"info gaps in the output: {len(gaps)} ({sum(gaps):.0f} ms in all, longest "
                 f"{max(gaps, default=0):.0f} ms); chirps not found: {missed} of "
                 f"{missed + len(every)}")
    found = steps([d for m in judged for d in m.delays_ms], STEP_MS)
    lines.append(f"info the delay stepped {len(found)} times (>= {STEP_MS:g} ms, kept): " +
                 ", ".join(f"{ms:+.1f}" for _, ms in found[:20]))
    diff = [float(np.median(m.delays_ms) - np.median(m.own_ms)) for m in judged if m.own_ms]
    if diff:
        lines.append(f"info measured minus the receiver's own delay, per minute: "
                     f"{min(diff):.1f}-{max(diff):.1f} ms (spread {max(diff) - min(diff):.1f};"
                     f" {'within' if max(diff) - min(diff) <= OWN_SPREAD_MS else 'OVER'} "
                     f"{OWN_SPREAD_MS:g} ms: the sender's capture and the network, constant)")
    stolen = [s.stolen_ms for s in soak.samples]
    lines.append(f"info the hypervisor stopped the CPUs for >= {STEAL_MS:g} ms in "
                 f"{sum(v >= STEAL_MS for v in stolen)} of {len(stolen)} intervals (longest "
                 f"{max(stolen, default=0):.0f} ms)")
    return flat, lines


def report(soak: Soak, args: argparse.Namespace) -> bool:
    rows = minutes(soak)
    prev = 0
    cells: list[list[str]] = []
    for m in rows:
        d, own, ss = m.delays_ms, m.own_ms, m.samples
        dry = (ss[-1].underruns if ss else prev) - prev
        prev = ss[-1].underruns if ss else prev
        cells.append([
            str(m.index + 1),
            f"{np.median(d):.1f}" if d else "-",
            f"{min(d):.1f}-{max(d):.1f}" if d else "-",
            str(m.missed), f"{len(m.gaps_ms)}", f"{sum(m.gaps_ms):.0f}",
            f"{np.median(own):.1f}" if own else "-",
            f"{np.median(d) - np.median(own):.1f}" if d and own else "-",
            f"{ss[-1].drift_ppm:+.0f}" if ss else "-", str(dry),
            f"{ss[-1].concealed_pct:.2f}" if ss else "-",
            f"{max(s.stolen_ms for s in ss):.0f}" if ss else "-",
            f"{np.mean([s.cpu_tx_pct for s in ss]):.1f}" if ss else "-",
            f"{np.mean([s.cpu_rx_pct for s in ss]):.1f}" if ss else "-",
            f"{ss[-1].rss_tx_mb:.1f}" if ss else "-", f"{ss[-1].rss_rx_mb:.1f}" if ss else "-",
        ])
    print(table(["min", "delay ms", "min-max ms", "missed", "gaps", "gap ms", "own ms",
                 "meas-own", "drift ppm", "ran dry", "concealed%", "stolen ms", "tx cpu%",
                 "rx cpu%", "tx MB", "rx MB"], cells))
    print()
    flat, lines = verdict(soak, rows, args.settle)
    for line in lines:
        print(line)
    print(f"verdict: {'flat' if flat else 'grew'}")
    print()
    print("per minute of the marker signal: delay = median of the chirps' delays from hub to "
          "out, measured in one recording of meter.monitor (one sample clock), min-max of them;"
          " missed: chirps not found in the output (correlation < 0.5); gaps: silences >= 5 ms"
          " in the output while the tone went in, and their sum; own: the median of the "
          "receiver's own delay_ms (--stats-json, one a second), and meas-own the difference; "
          "drift (its clock estimate), ran dry (jitter-buffer underruns in the minute) and "
          "concealed% (running) are the receiver's own; stolen: the longest time the "
          "hypervisor did not run the CPUs (from /proc/stat's steal, every 20 ms); CPU: % of "
          "one core (user+system, all threads), RSS: VmRSS at the minute's end. "
          f"Judged from minute {int(args.settle // 60) + 1} on.")
    summary = load_summary([soak.load])
    if summary:
        print(summary)
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (60)")
    parser.add_argument("--quick", action="store_true", help="3 minutes")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds left out of the verdict at the start (0: every minute "
                        "is judged)")
    parser.add_argument("--ppm", type=float, default=300.0,
                        help="the sender's capture clock error in ppm (300; + is fast)")
    add_server_priority(parser)
    add_load(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 3.0
    progress = Progress(args.quiet)
    print(header(f"Soak: hub -> send (capture clock {args.ppm:+g} ppm) -> UDP 127.0.0.1 -> "
                 f"receive -> out, measured from the audio on one sample clock "
                 f"({args.server_priority} PulseAudio"
                 f"{f', {args.load} busy processes beside' if args.load else ''}), "
                 f"{args.minutes:g} min"), flush=True)
    try:
        soak = run(args, progress)
    except BenchError as err:
        print(f"soak failed: {err}")
        return 1
    print()
    return 0 if report(soak, args) else 1


if __name__ == "__main__":
    sys.exit(main())
