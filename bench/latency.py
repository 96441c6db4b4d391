"""Capture-to-playback latency of trx and deskcast, measured in the same run.

A private PulseAudio has two null sinks, ``hub`` and ``out``. The pipeline under test carries
``hub.monitor`` over UDP on 127.0.0.1 to ``out``. paplay plays a test signal into ``hub``: a
continuous 1 kHz tone at -30 dBFS (to see dropouts) with a 30 ms chirp (a "burst", 300 Hz to
6 kHz at -12 dBFS) every 0.5 s. ``hub.monitor`` and ``out.monitor`` are recorded at the same
time, put on one time axis from the arrival times of their chunks, and each burst's delay from
hub to out is found by cross-correlation.

Every configuration is run several times, interleaved (trx, deskcast, ..., trx, deskcast, ...)
so that background load hits them alike.

    .venv/bin/python bench/latency.py            # 3 runs x 16 bursts per configuration
    .venv/bin/python bench/latency.py --quick    # 1 run x 10 bursts, ~30 s
    .venv/bin/python bench/latency.py --sweep    # also try low-latency variations of deskcast
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    DESKCAST_DEFAULT,
    LOW_LATENCY,
    RATE,
    TRX_DEFAULT,
    BenchError,
    BenchServer,
    MachineLoad,
    Pipeline,
    Procs,
    Progress,
    TimedRecorder,
    add_server_priority,
    block_levels_db,
    header,
    median,
    percentile,
    print_footer,
    silent_runs_ms,
    start_pipeline,
    table,
)
from rig.capture import CaptureError, play_file, wait_played  # noqa: E402
from rig.signals import (  # noqa: E402
    Audio,
    chirp,
    correlation,
    find_delay,
    tone,
    write_wav,
)
from rig.soundserver import SoundServer, SoundServerError  # noqa: E402

LEAD_S = 1.5
"""Tone only before the first burst (the jitter buffers settle on a steady stream)."""
PERIOD_S = 0.5
BURST_S = 0.03
TAIL_S = 0.7
MAX_DELAY_S = 0.45
"""Bursts are searched for in the output up to this long after they were in the hub."""
GAP_MS = 5.0
"""A silent run in the output at least this long counts as a gap (dropout)."""

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
class Result:
    pipeline: Pipeline
    delays_ms: list[float] = field(default_factory=list)
    run_medians_ms: list[float] = field(default_factory=list)
    per_run: list[list[float]] = field(default_factory=list)
    missed: int = 0
    silent_ms: float = 0.0
    checked_ms: float = 0.0
    gaps: int = 0
    gap_runs: list[list[float]] = field(default_factory=list)
    concealed_pct: list[float] = field(default_factory=list)
    align_err_ms: list[float] = field(default_factory=list)
    underruns: int = 0
    sink_latency_ms: list[float] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def test_signal(events: int) -> Audio:
    seconds = LEAD_S + events * PERIOD_S + TAIL_S
    x = tone(1000.0, seconds, RATE, level_db=-30.0)
    burst = chirp(300.0, 6000.0, BURST_S, RATE, level_db=-12.0)
    for i in range(events):
        start = round((LEAD_S + i * PERIOD_S) * RATE)
        x[start:start + burst.shape[0]] += burst
    return np.clip(x, -1.0, 1.0)


@dataclass
class Setup:
    bs: BenchServer
    signal: Audio
    wav: Path
    events: int
    warmup_s: float


def measure_once(pipeline: Pipeline, result: Result, setup: Setup, tag: str) -> None:
    server, signal, events = setup.bs.server, setup.signal, setup.events
    load = MachineLoad().start()
    with Procs(setup.bs.workdir) as procs:
        running = start_pipeline(procs, pipeline, setup.bs.env, setup.bs.workdir, tag)
        time.sleep(setup.warmup_s)
        configured = out_sink_latency_ms(server)
        hub = TimedRecorder(server, "hub.monitor")
        out = TimedRecorder(server, "out.monitor")
        check = TimedRecorder(server, "hub.monitor")
        with hub, out, check:
            wait_played(play_file(server, setup.wav, "hub"), timeout=signal.shape[0] / RATE + 15)
            time.sleep(0.3)
        setup.bs.check()
        procs.check_alive()
        procs.stop_all()
        stats = running.receiver_stats()
    setup.bs.check()
    load.stop()
    result.loads.append(load)
    if configured is not None:
        result.sink_latency_ms.append(configured)
    if stats is not None:
        result.concealed_pct.append(number(stats.get("concealed_pct")))
        result.underruns += int(number(stats.get("underruns")))

    h, o, c = hub.audio, out.audio, check.audio
    t_hub, t_out, t_check = hub.start_time(), out.start_time(), check.start_time()
    # Self-check of the common time axis: the second hub recording, aligned by content.
    true_offset = find_delay(c, h, RATE, max_delay=0.2)
    result.align_err_ms.append(1000 * abs((t_check - t_hub) - true_offset))

    first = round(find_delay(signal, h, RATE) * RATE)
    pre = round(0.005 * RATE)
    ref_len = round((BURST_S + 0.015) * RATE)
    delays: list[float] = []
    for i in range(events):
        e = first + round((LEAD_S + i * PERIOD_S) * RATE) - pre
        ref = h[e:e + ref_len]
        t_ref = t_hub + e / RATE
        w0 = round((t_ref - 0.01 - t_out) * RATE)
        w1 = w0 + round(MAX_DELAY_S * RATE)
        if w0 < 0 or w1 > o.shape[0] or ref.shape[0] < ref_len:
            result.missed += 1
            continue
        window = o[w0:w1]
        lag = find_delay(ref, window, RATE, max_delay=MAX_DELAY_S)
        k = round(lag * RATE)
        if lag < 0 or correlation(ref, window[k:k + ref_len]) < 0.5:
            result.missed += 1
            continue
        delays.append(1000 * (t_out + w0 / RATE + lag - t_ref))
    result.delays_ms.extend(delays)
    result.per_run.append(delays)
    if delays:
        result.run_medians_ms.append(median(delays))
        # Dropouts: silent runs in the steady part of the output (the tone never stops).
        d = median(delays) / 1000
        lo = round((t_hub + (first + 0.5 * RATE) / RATE + d - t_out) * RATE)
        hi = round((t_hub + (first + signal.shape[0] - TAIL_S * RATE) / RATE + d - t_out)
                   * RATE)
        seg = o[max(0, lo):min(o.shape[0], hi)]
        runs = silent_runs_ms(seg)
        result.silent_ms += sum(runs)
        result.checked_ms += block_levels_db(seg).size
        result.gaps += sum(1 for r in runs if r >= GAP_MS)
        result.gap_runs.append([r for r in runs if r >= GAP_MS])


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
    for r in results:
        d = r.delays_ms
        med = median(d)
        silent = 100 * r.silent_ms / r.checked_ms if r.checked_ms else float("nan")
        conc = fmt(max(r.concealed_pct), 2) if r.concealed_pct else "-"
        under = str(r.underruns) if r.pipeline.kind == "deskcast" else "-"
        clean = sum(1 for g in r.gap_runs if not g)
        ratio = f"{med / base:.2f}" if base and d else "-"
        rows.append([
            r.pipeline.label, f"{len(d)}/{len(d) + r.missed}", fmt(med), fmt(percentile(d, 95)),
            f"{fmt(min(d))}-{fmt(max(d))}" if d else "-",
            " ".join(fmt(m, 0) for m in r.run_medians_ms) or "-",
            fmt(silent, 2), f"{r.gaps} ({clean}/{len(r.gap_runs)})", under, conc,
            fmt(median(r.sink_latency_ms)) if r.sink_latency_ms else "-", ratio,
        ])
    return table(["configuration", "events", "median ms", "p95 ms", "min-max ms",
                  "run medians", "silent %", "gaps (clean runs)", "underruns", "concealed %",
                  "+ sink ms", "x trx"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--events", type=int, default=16, help="bursts per run (16)")
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds the pipeline runs before recording (1.5)")
    parser.add_argument("--quick", action="store_true", help="1 run x 10 bursts (~30 s)")
    parser.add_argument("--sweep", action="store_true",
                        help="also try low-latency variations (2 runs each unless --runs)")
    parser.add_argument("--configs", metavar="NAMES",
                        help="comma-separated configurations to run instead (labels as "
                        "printed; trx defaults is always included): " + ", ".join(
                            c.label for c in CATALOG))
    add_server_priority(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print every burst's delay and every gap, run by run")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.events = 1, 10
    configs = [TRX_DEFAULT, DESKCAST_DEFAULT, LOW_LATENCY]
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
    results = {c.label: Result(c) for c in configs}
    signal = test_signal(args.events)
    print(header("Latency: hub.monitor -> sender -> UDP 127.0.0.1 -> receiver -> out "
                 f"({args.server_priority} PulseAudio)"), flush=True)
    with BenchServer(realtime=args.server_priority == "realtime") as bs:
        wav = write_wav(bs.workdir / "signal.wav", signal, RATE)
        setup = Setup(bs, signal, wav, args.events, args.warmup)
        for run in range(args.runs):
            for c in configs:
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{configs.index(c)}")
                except (BenchError, CaptureError) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()  # the server's log, if it died
                    results[c.label].failures.append(str(err))
                    progress(f"  FAILED: {err}")
    ordered = list(results.values())
    print()
    print(report(ordered, results[TRX_DEFAULT.label]))
    print()
    print(f"events: bursts found / sent (found = correlation >= 0.5 within {MAX_DELAY_S:.2f} s);"
          f" median/p95/min-max over all runs' bursts; run medians: one per run.")
    print(f"silent %: share of 1 ms blocks below -50 dBFS in the output while the -30 dBFS tone"
          f" plays; gaps: silent runs >= {GAP_MS:.0f} ms (clean runs: runs without any); "
          "concealed %: the deskcast receiver's own count (worst run).")
    print("underruns: the deskcast receiver's jitter-buffer underruns (all runs).")
    print("+ sink ms: the latency the out null sink was configured to (median of the runs): it "
          "mixes that far ahead and its monitor hears the audio then; a sound card would add "
          "about this much to the delays above.")
    errs = [e for r in ordered for e in r.align_err_ms]
    if errs:
        print(f"time-axis self-check (second hub.monitor recording): max error "
              f"{max(errs):.2f} ms over {len(errs)} runs.")

    def per_run(r: Result) -> None:
        if args.verbose:
            for i, run_delays in enumerate(r.per_run):
                busy_pct = (f" (machine {100 * r.loads[i].busy:.0f}% busy)"
                            if i < len(r.loads) else "")
                print(f"    run {i + 1}{busy_pct} delays ms: " +
                      " ".join(fmt(d, 1) for d in run_delays))
            for i, gap_list in enumerate(r.gap_runs):
                if gap_list:
                    print(f"    run {i + 1} gaps ms: " + " ".join(fmt(g, 0) for g in gap_list))

    print_footer(bs, ordered, per_config=per_run)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
