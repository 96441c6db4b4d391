"""Capture-to-playback latency of trx and deskcast, measured in the same run, from the sound.

A private PulseAudio has one 4-channel null sink ``meter`` with the stereo sinks ``hub`` and
``out`` remapped onto its channels 0-1 and 2-3. The pipeline under test carries ``hub.monitor``
over UDP on 127.0.0.1 to ``out``. pacat plays a marker signal into ``hub`` for the whole run: a
steady 1 kHz tone at -30 dBFS (a dropout is a run of silence) with a 30 ms chirp at -12 dBFS
every 0.5 s (four different chirps in turn). ``meter.monitor`` is recorded: the hub and the
output on one sample clock, so each chirp's delay from hub to out is a sample offset inside one
recording (cross-correlation), with nothing to align.

Every configuration is run several times, interleaved (trx, deskcast, ..., trx, deskcast, ...)
so that background load hits them alike; each run is a minute by default, so that the steady
state after the first seconds (a dry run, a drift step) is what the medians show. Per run: the
median delay, its steps (the delay moving to a new level and staying), and the gaps.

    .venv/bin/python bench/latency.py            # 3 runs x 60 s per configuration (~10 min)
    .venv/bin/python bench/latency.py --quick    # 1 run x 20 s
    .venv/bin/python bench/latency.py --ab 8a5dde2   # also the same configurations at 8a5dde2
    .venv/bin/python bench/latency.py --sweep    # also try low-latency variations of deskcast
    .venv/bin/python bench/latency.py --runs 1 --seconds 300 --server-priority normal --load 2
                                    # 5 minutes each, a normal-priority server, both CPUs busy
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402

from bench.common.measure import MachineLoad, median, percentile  # noqa: E402
from bench.common.pipelines import (  # noqa: E402
    DESKCAST_DEFAULT,
    LOW_LATENCY,
    TRX_DEFAULT,
    Pipeline,
    start_pipeline,
    worktree,
)
from bench.common.procs import BenchError, Procs, add_load, cpu_load  # noqa: E402
from bench.common.report import Progress, header, print_footer, table  # noqa: E402
from bench.common.server import METER, RATE, BenchServer, add_server_priority  # noqa: E402
from rig.capture import CaptureError  # noqa: E402
from rig.meter import EventTracker, MarkerSignal, MeterRecording, SignalPlayer, steps  # noqa: E402
from rig.soundserver import SoundServer, SoundServerError  # noqa: E402

MAX_DELAY_S = 1.0
"""Chirps are searched for in the output up to this long after they were in the hub."""
GAP_MS = 5.0
"""A silent run in the output at least this long counts as a gap (dropout)."""
STEP_MS = 3.0
"""A step: the median of 5 chirps' delays at least this far from the median of the 5 before."""

_LL_TX = LOW_LATENCY.tx
_LL_RX = ("--jitter-ms", "5", "--jitter-min-ms", "2", "--block-ms", "5")

PRESET = Pipeline("deskcast --low-latency", "deskcast", tx=("--low-latency",),
                  rx=("--low-latency",))
"""The preset itself (its settings: deskcast.config.LOW_LATENCY)."""

SWEEP: tuple[Pipeline, ...] = (
    # The chosen low-latency settings, then one change at a time.
    PRESET,
    LOW_LATENCY,
    Pipeline("ll rx buffer 5", "deskcast", tx=_LL_TX, rx=(*_LL_RX, "--buffer-ms", "5")),
    Pipeline("ll rx buffer 10", "deskcast", tx=_LL_TX, rx=(*_LL_RX, "--buffer-ms", "10")),
    Pipeline("ll rx buffer 15", "deskcast", tx=_LL_TX, rx=(*_LL_RX, "--buffer-ms", "15")),
    Pipeline("ll jitter max 5", "deskcast", tx=_LL_TX,
             rx=(*LOW_LATENCY.rx, "--jitter-max-ms", "5")),
    Pipeline("ll rx buffer 15 jitter max 5", "deskcast", tx=_LL_TX,
             rx=(*_LL_RX, "--buffer-ms", "15", "--jitter-max-ms", "5")),
    Pipeline("ll rx buffer 15 block 2.5", "deskcast", tx=_LL_TX,
             rx=("--jitter-ms", "5", "--jitter-min-ms", "2", "--block-ms", "2.5",
                 "--buffer-ms", "15")),
    Pipeline("ll rx buffer 10 block 2.5", "deskcast", tx=_LL_TX,
             rx=("--jitter-ms", "5", "--jitter-min-ms", "2", "--block-ms", "2.5",
                 "--buffer-ms", "10")),
    Pipeline("ll frame 2.5", "deskcast",
             tx=("--frame-ms", "2.5", "--buffer-ms", "10"),
             rx=LOW_LATENCY.rx),
    Pipeline("ll frame 10", "deskcast",
             tx=("--frame-ms", "10", "--buffer-ms", "10"),
             rx=LOW_LATENCY.rx),
    Pipeline("ll jitter 10", "deskcast", tx=_LL_TX,
             rx=("--jitter-ms", "10", "--jitter-min-ms", "5", "--block-ms", "5",
                 "--buffer-ms", "20")),
    Pipeline("ll jitter 2 fixed", "deskcast", tx=_LL_TX,
             rx=("--jitter-ms", "2", "--jitter-min-ms", "2", "--no-adaptive", "--block-ms", "5",
                 "--buffer-ms", "20")),
    Pipeline("ll no drift", "deskcast", tx=_LL_TX, rx=(*LOW_LATENCY.rx, "--no-drift")),
    # The defaults with one change, and trx at low latency.
    Pipeline("deskcast no drift", "deskcast", rx=("--no-drift",)),
    Pipeline("deskcast trx-like", "deskcast", rx=("--jitter-ms", "16", "--buffer-ms", "16")),
    Pipeline("trx low-latency", "trx", tx=("-f", "240", "-m", "8"), rx=("-j", "8", "-m", "8")),
)


CATALOG: tuple[Pipeline, ...] = (TRX_DEFAULT, DESKCAST_DEFAULT, *SWEEP)


@dataclass
class Run:
    """One run of one configuration, measured from the recording."""

    delays_ms: list[float]
    times_s: list[float]
    missed: int
    gaps_ms: list[float]
    silent_ms: float
    checked_ms: float
    steps: list[tuple[float, float]]
    """(seconds into the run, ms) of each step of the delay."""
    sink_ms: float | None
    concealed_pct: float = math.nan
    underruns: int = 0


@dataclass
class Result:
    pipeline: Pipeline
    runs: list[Run] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def delays_ms(self) -> list[float]:
        return [d for r in self.runs for d in r.delays_ms]


@dataclass
class Setup:
    bs: BenchServer
    seconds: float
    warmup_s: float


def measure_once(pipeline: Pipeline, result: Result, setup: Setup, tag: str) -> None:
    server = setup.bs.server
    load = MachineLoad().start()
    path = setup.bs.workdir / f"{tag}-meter.raw"
    with Procs(setup.bs.workdir) as procs, MeterRecording(METER, path, server) as rec:
        running = start_pipeline(procs, pipeline, setup.bs.env, setup.bs.workdir, tag)
        time.sleep(setup.warmup_s)
        configured = out_sink_latency_ms(server)
        tracker = EventTracker(rec, max_delay_s=MAX_DELAY_S, gap_ms=GAP_MS)
        with SignalPlayer(server, "hub", MarkerSignal(), setup.seconds, latency_ms=500) as player:
            deadline = time.monotonic() + setup.seconds + 15
            while player.running():
                if time.monotonic() > deadline:
                    raise BenchError("the marker signal did not finish playing")
                time.sleep(0.5)
                procs.check_alive()
                tracker.update()
            time.sleep(MAX_DELAY_S + 0.2)
        setup.bs.check()
        procs.check_alive()
        procs.stop_all()
        stats = running.receiver_stats()
    tracker.update()
    if not os.environ.get("BENCH_KEEP"):
        path.unlink(missing_ok=True)
    setup.bs.check()
    load.stop()
    result.loads.append(load)
    if not tracker.events:
        raise BenchError(f"no chirp came out ({len(tracker.missed)} went in)")
    t0 = tracker.events[0].at
    delays = [e.delay_ms for e in tracker.events]
    times = [(e.at - t0) / RATE for e in tracker.events]
    run = Run(delays, times, len(tracker.missed), [ms for _, ms in tracker.gaps],
              tracker.silent_ms, tracker.checked_ms,
              [(times[i], ms) for i, ms in steps(delays, STEP_MS)], configured)
    if stats is not None:
        run.concealed_pct = number(stats.get("concealed_pct"))
        run.underruns = int(number(stats.get("underruns")))
    result.runs.append(run)


def out_sink_latency_ms(server: SoundServer) -> float | None:
    """The latency the ``out`` null sink is configured to (what the pipeline's playback
    stream asked of it): the sink mixes that far ahead, and its monitor hears the audio when
    it is mixed, so a sound card would add this to the delays measured here."""
    try:
        text = server.pactl("list", "sinks")
    except SoundServerError:
        return None
    for block in text.split("\n\n"):
        if re.search(r"^\s*Name: out$", block, re.M):
            m = re.search(r"^\s*Latency: \d+ usec, configured (\d+) usec", block, re.M)
            return int(m.group(1)) / 1000 if m else None
    return None


def number(v: object) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


def fmt(v: float, digits: int = 1) -> str:
    return "-" if np.isnan(v) else f"{v:.{digits}f}"


def report(results: list[Result], baseline: Result | None) -> str:
    rows: list[list[str]] = []
    base = median(baseline.delays_ms) if baseline is not None and baseline.delays_ms else None
    base_sink = (median([r.sink_ms for r in baseline.runs if r.sink_ms is not None])
                 if baseline is not None else math.nan)
    for r in results:
        d = r.delays_ms
        med = median(d)
        sink = [x.sink_ms for x in r.runs if x.sink_ms is not None]
        sink_med = median(sink) if sink else math.nan
        checked = sum(x.checked_ms for x in r.runs)
        silent = 100 * sum(x.silent_ms for x in r.runs) / checked if checked else math.nan
        gaps = [len(x.gaps_ms) for x in r.runs]
        gap_ms = sum(sum(x.gaps_ms) for x in r.runs)
        conc = [x.concealed_pct for x in r.runs if not math.isnan(x.concealed_pct)]
        under = sum(x.underruns for x in r.runs) if r.pipeline.kind == "deskcast" else None
        ratio = f"{med / base:.2f}" if base and d else "-"
        ratio_sink = (f"{(med + sink_med) / (base + base_sink):.2f}"
                      if base and d and not math.isnan(sink_med + base_sink) else "-")
        rows.append([
            r.pipeline.label, f"{len(d)}/{len(d) + sum(x.missed for x in r.runs)}", fmt(med),
            fmt(percentile(d, 95)), f"{fmt(min(d))}-{fmt(max(d))}" if d else "-",
            " ".join(fmt(median(x.delays_ms), 1) for x in r.runs) or "-",
            " ".join(str(len(x.steps)) for x in r.runs) or "-",
            f"{sum(gaps)} ({' '.join(map(str, gaps))})", fmt(gap_ms, 0), fmt(silent, 2),
            "-" if under is None else str(under), fmt(max(conc), 2) if conc else "-",
            fmt(sink_med), ratio, ratio_sink,
        ])
    return table(["configuration", "chirps", "median ms", "p95 ms", "min-max ms",
                  "run medians ms", "steps/run", "gaps (per run)", "gap ms", "silent %",
                  "underruns", "concealed %", "+ sink ms", "x trx", "x trx +sink"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of each run's marker signal, s (60)")
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds the pipeline runs before the signal starts (1.5)")
    parser.add_argument("--quick", action="store_true", help="1 run x 20 s (not for the record)")
    parser.add_argument("--sweep", action="store_true",
                        help="also try low-latency variations (2 runs each unless --runs)")
    parser.add_argument("--configs", metavar="NAMES",
                        help="comma-separated configurations to run instead (labels as "
                        "printed; trx defaults is always included): " + ", ".join(
                            c.label for c in CATALOG))
    parser.add_argument("--ab", metavar="REV", action="append", default=[],
                        help="also run every deskcast configuration at git revision REV (a "
                        "worktree run by the same venv), interleaved with the others; repeat "
                        "for more revisions")
    add_server_priority(parser)
    add_load(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print every chirp's delay, the steps and the gaps, run by run")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 20.0
    configs = [TRX_DEFAULT, DESKCAST_DEFAULT, PRESET]
    if args.sweep:
        configs = list(CATALOG)
        if "--runs" not in sys.argv:
            args.runs = 2
    if args.configs:
        by_label = {c.label: c for c in CATALOG}
        wanted = [n.strip() for n in args.configs.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in by_label]
        if unknown:
            parser.error(f"unknown configuration(s) {', '.join(unknown)}")
        configs = [TRX_DEFAULT, *(by_label[n] for n in wanted if n != TRX_DEFAULT.label)]
    progress = Progress(args.quiet)
    load = f", {args.load} busy processes beside" if args.load else ""
    print(header("Latency: hub -> hub.monitor -> sender -> UDP 127.0.0.1 -> receiver -> out, "
                 f"both on one sample clock ({args.server_priority} PulseAudio{load}), "
                 f"{args.runs} x {args.seconds:g} s"), flush=True)
    with BenchServer(realtime=args.server_priority == "realtime") as bs, \
            contextlib.ExitStack() as trees, cpu_load(args.load):
        for rev in args.ab:
            try:
                src = trees.enter_context(worktree(rev, bs.workdir))
            except BenchError as err:
                parser.error(str(err))
            configs += [c.at(rev, src) for c in configs if c.kind == "deskcast" and not c.src]
        results = {c.label: Result(c) for c in configs}
        setup = Setup(bs, args.seconds, args.warmup)
        for run in range(args.runs):
            for c in configs:
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{configs.index(c)}")
                except (BenchError, CaptureError, SoundServerError) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()  # the server's log, if it died
                    results[c.label].failures.append(str(err))
                    progress(f"  FAILED: {err}")
                else:
                    last = results[c.label].runs[-1]
                    progress(f"  median {median(last.delays_ms):.1f} ms, {len(last.gaps_ms)} "
                             f"gaps, {len(last.steps)} steps")
    ordered = list(results.values())
    print()
    print(report(ordered, results[TRX_DEFAULT.label]))
    print()
    print("chirps: found in the output / sent (found: correlation >= 0.5 within "
          f"{MAX_DELAY_S:g} s); median, p95, min-max over every chirp of every run; run "
          "medians: one per run, in the order run.")
    print(f"steps/run: times per run the delay moved to a new level and stayed (median of 5 "
          f"chirps >= {STEP_MS:g} ms from the 5 before); gaps: silent runs >= {GAP_MS:g} ms in "
          "the output while the -30 dBFS tone went in (total, then per run); gap ms: their "
          "sum; silent %: share of 1 ms output blocks below -50 dBFS while the tone went in.")
    print("underruns, concealed %: the deskcast receiver's own counts (all runs; worst run).")
    print("+ sink ms: the latency the out sink was configured to (median of the runs): it mixes "
          "that far ahead and the meter hears the audio then; a sound card would add about "
          "this much. x trx: ratio of median delays; x trx +sink: of median delay + sink ms.")

    def per_run(r: Result) -> None:
        if not args.verbose:
            return
        for i, run in enumerate(r.runs):
            busy = f" (machine {100 * r.loads[i].busy:.0f}% busy)" if i < len(r.loads) else ""
            print(f"    run {i + 1}{busy}: delays ms " +
                  " ".join(fmt(d, 1) for d in run.delays_ms))
            if run.steps:
                print("      steps: " + ", ".join(f"{ms:+.1f} ms at {t:.1f} s"
                                                  for t, ms in run.steps))
            if run.gaps_ms:
                print("      gaps ms: " + " ".join(fmt(g, 0) for g in run.gaps_ms))

    print_footer(bs, ordered, per_config=per_run)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
