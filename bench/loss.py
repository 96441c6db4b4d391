"""Audio quality of trx and deskcast under packet loss and jitter, measured in the same run.

A private PulseAudio has two null sinks, ``hub`` and ``out``. paplay plays a continuous gliding
tone (a log sweep 300 Hz -> 3 kHz -> 300 Hz every 8 s, -12 dBFS) into ``hub``; the pipeline under
test carries ``hub.monitor`` over UDP on 127.0.0.1 to ``out`` through the test rig's seeded
impairment proxy (5 % random loss + 0-10 ms uniform extra delay by default). The same seeds are
used for every configuration, so each sees the same loss pattern (per packet). ``hub.monitor``
and ``out.monitor`` are recorded together and compared:

* silent %: share of 10 ms blocks of the output below -50 dBFS (``rig.signals.silence_fraction``)
  while the tone plays -- the tone never stops, so that is all dropout;
* dropouts/min: runs of >= 20 ms below -50 dBFS (1 ms blocks);
* correlation: every 40 ms of the input against the output around the running delay (best
  match within +-25 ms; concealment and distortion lower it); median, 5th percentile, and the
  share of windows below 0.9;
* level: output minus input level over the whole run, and the 95th percentile of the
  deviation over 40 ms windows.

    .venv/bin/python bench/loss.py            # 3 runs x 20 s per configuration (~2.5 min)
    .venv/bin/python bench/loss.py --quick    # 1 run x 8 s (~30 s)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from bench.common import (  # noqa: E402
    DESKCAST_DEFAULT,
    LOW_LATENCY,
    RATE,
    SILENT_DB,
    TRX_DEFAULT,
    BenchError,
    BenchServer,
    MachineLoad,
    Pipeline,
    Procs,
    Progress,
    TimedRecorder,
    free_port_pair,
    header,
    median,
    percentile,
    print_footer,
    silent_runs_ms,
    start_pipeline,
    table,
)
from rig.capture import CaptureError, play_file, wait_played  # noqa: E402
from rig.netem import Impairment, ImpairmentProxy  # noqa: E402
from rig.signals import (  # noqa: E402
    Audio,
    chirp,
    find_delay,
    level_db,
    silence_fraction,
    to_mono,
    write_wav,
)

SWEEP_S = 8.0
DROPOUT_MS = 20.0
WINDOW_S = 0.04
SEARCH_S = 0.025
SKIP_S = 1.0
"""Input seconds ignored at the start (the receivers settle) and at the end of each run."""

CATALOG: tuple[Pipeline, ...] = (
    TRX_DEFAULT,
    DESKCAST_DEFAULT,
    Pipeline("deskcast --no-inband-fec", "deskcast", rx=("--no-inband-fec",)),
    Pipeline("deskcast --fec 4:2", "deskcast", tx=("--fec", "4:2")),
    Pipeline("deskcast --no-drift", "deskcast", rx=("--no-drift",)),
    LOW_LATENCY,
)


@dataclass
class Result:
    pipeline: Pipeline
    seconds: float = 0.0
    silent: list[float] = field(default_factory=list)
    dropouts: int = 0
    corr: list[float] = field(default_factory=list)
    level_delta: list[float] = field(default_factory=list)
    window_dev: list[float] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    lost_pct: list[float] = field(default_factory=list)
    concealed_pct: list[float] = field(default_factory=list)
    late: int = 0
    underruns: int = 0
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def test_signal(seconds: float) -> Audio:
    up = chirp(300.0, 3000.0, SWEEP_S / 2, RATE, level_db=-12.0)
    # Down again: the time-reversed sweep (continuous at the joints; only the slope turns).
    down = up[::-1]
    period = np.concatenate([up, down])
    reps = math.ceil(seconds / SWEEP_S)
    return np.tile(period, (reps, 1))[: round(seconds * RATE)]


def number(v: object) -> float:
    return float(v) if isinstance(v, int | float) else math.nan


def best_match(ref: npt.NDArray[np.float64], seg: npt.NDArray[np.float64]
               ) -> tuple[float, int]:
    """Largest normalised correlation of ``ref`` with a ``ref``-long stretch of ``seg``, and
    where it is (0 when ``seg`` is silent)."""
    n = ref.size
    r = ref - ref.mean()
    rn = float(np.sqrt(np.dot(r, r)))
    if rn == 0 or seg.size < n:
        return 0.0, 0
    raw = np.correlate(seg, r, mode="valid")
    csum = np.concatenate(([0.0], np.cumsum(seg)))
    csq = np.concatenate(([0.0], np.cumsum(seg * seg)))
    sums = csum[n:] - csum[:-n]
    energy = np.maximum(csq[n:] - csq[:-n] - sums * sums / n, 0.0)
    denom = rn * np.sqrt(energy)
    corr = np.where(denom > 1e-9, raw / np.maximum(denom, 1e-12), 0.0)
    k = int(np.argmax(corr))
    return float(corr[k]), k


@dataclass
class Setup:
    bs: BenchServer
    wav: Path
    signal: Audio
    impairment: Impairment
    warmup_s: float


def measure_once(pipeline: Pipeline, result: Result, setup: Setup, tag: str, seed: int) -> None:
    server = setup.bs.server
    load = MachineLoad().start()
    port = free_port_pair()
    with ImpairmentProxy(("127.0.0.1", port), setup.impairment, seed=seed) as proxy, \
            Procs(setup.bs.workdir) as procs:
        running = start_pipeline(procs, pipeline, setup.bs.env, setup.bs.workdir, tag,
                                 listen_port=port, send_to=proxy.address)
        time.sleep(setup.warmup_s)
        hub = TimedRecorder(server, "hub.monitor")
        out = TimedRecorder(server, "out.monitor")
        with hub, out:
            wait_played(play_file(server, setup.wav, "hub"),
                        timeout=setup.signal.shape[0] / RATE + 15)
            time.sleep(0.5)
        setup.bs.check()
        procs.check_alive()
        procs.stop_all()
        stats = running.receiver_stats()
        ps = proxy.stats
        result.lost_pct.append(100 * ps.dropped / max(1, ps.received))
    setup.bs.check()
    load.stop()
    result.loads.append(load)
    if stats is not None:
        result.concealed_pct.append(number(stats.get("concealed_pct")))
        result.late += int(number(stats.get("late")))
        result.underruns += int(number(stats.get("underruns")))
    analyse(result, setup.signal, hub, out)


def analyse(result: Result, signal: Audio, hub: TimedRecorder, out: TimedRecorder) -> None:
    h, o = to_mono(hub.audio), to_mono(out.audio)
    offset = hub.start_time() - out.start_time()  # hub frame i is out frame i + offset*RATE
    first = round(find_delay(signal[: 2 * RATE], hub.audio[: 6 * RATE], RATE) * RATE)
    lo = first + round(SKIP_S * RATE)
    hi = first + signal.shape[0] - round(SKIP_S * RATE)
    if hi - lo < RATE:
        raise BenchError("recording too short")
    # Coarse delay, once a second (it changes at underruns and with drift correction).
    coarse: list[tuple[int, float]] = []
    for start in range(lo, hi - RATE, RATE):
        ref = h[start:start + RATE]
        o0 = start + round(offset * RATE)
        seg = o[max(0, o0):o0 + RATE + round(0.6 * RATE)]
        if seg.size < RATE:
            continue
        lag = find_delay(ref, seg, RATE, max_delay=0.6)
        if lag >= 0:
            coarse.append((start, lag + max(0, o0) / RATE - start / RATE - offset))
    if not coarse:
        raise BenchError("the output never matched the input")
    delays = np.asarray([d for _, d in coarse])
    result.delays_ms.extend(1000 * delays)
    starts = np.asarray([s for s, _ in coarse])

    # The steady output: where the input's [lo, hi) came out.
    d_med = float(np.median(delays))
    o_lo = lo + round((offset + d_med) * RATE)
    o_hi = hi + round((offset + d_med) * RATE)
    seg = out.audio[max(0, o_lo):min(o.size, o_hi)]
    result.silent.append(silence_fraction(seg, RATE, block_ms=10.0, threshold_db=SILENT_DB))
    result.dropouts += sum(1 for r in silent_runs_ms(seg) if r >= DROPOUT_MS)
    result.seconds += seg.shape[0] / RATE
    result.level_delta.append(level_db(seg) - level_db(hub.audio[lo:hi]))

    win, search = round(WINDOW_S * RATE), round(SEARCH_S * RATE)
    for start in range(lo, hi - win, win):
        d = float(delays[int(np.argmin(np.abs(starts - start)))])
        ref = h[start:start + win]
        o0 = start + round((offset + d) * RATE) - search
        if o0 < 0 or o0 + win + 2 * search > o.size:
            continue
        c, k = best_match(ref, o[o0:o0 + win + 2 * search])
        result.corr.append(c)
        matched = o[o0 + k:o0 + k + win]
        dev = max(level_db(matched), SILENT_DB) - level_db(ref)
        result.window_dev.append(abs(dev))


def report(results: list[Result]) -> str:
    rows: list[list[str]] = []
    for r in results:
        n = len(r.silent)
        if not n:
            rows.append([r.pipeline.label, "0", *["-"] * 11])
            continue
        per_min = r.dropouts / (r.seconds / 60) if r.seconds else math.nan
        below = 100 * sum(1 for c in r.corr if c < 0.9) / len(r.corr) if r.corr else math.nan
        conc = f"{median(r.concealed_pct):.1f}" if r.concealed_pct else "-"
        extra = f"{r.late}/{r.underruns}" if r.pipeline.kind == "deskcast" else "-"
        rows.append([
            r.pipeline.label, str(n), f"{median(r.lost_pct):.1f}",
            f"{100 * median(r.silent):.2f} ({100 * max(r.silent):.2f})",
            f"{per_min:.1f}", f"{median(r.corr):.3f}", f"{percentile(r.corr, 5):.3f}",
            f"{below:.1f}", f"{median(r.level_delta):+.2f}", f"{percentile(r.window_dev, 95):.2f}",
            f"{median(r.delays_ms):.0f}", conc, extra,
        ])
    return table(["configuration", "runs", "lost %", "silent % (max)", "dropouts/min",
                  "corr med", "corr p5", "corr<0.9 %", "level dB", "|dev| p95 dB",
                  "delay ms", "concealed %", "late/underruns"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="signal seconds per run (20)")
    parser.add_argument("--loss", type=float, default=0.05, help="random loss (0.05)")
    parser.add_argument("--jitter-ms", type=float, default=10.0,
                        help="extra delay, uniform in [0, this] (10)")
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds the pipeline runs before the signal (1.5)")
    parser.add_argument("--quick", action="store_true", help="1 run x 8 s (~30 s)")
    parser.add_argument("--configs", metavar="NAMES",
                        help="comma-separated configurations (trx defaults is always "
                        "included): " + ", ".join(c.label for c in CATALOG))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 8.0
    configs = [TRX_DEFAULT, DESKCAST_DEFAULT]
    if args.configs:
        by_label = {c.label: c for c in CATALOG}
        wanted = [n.strip() for n in args.configs.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in by_label]
        if unknown:
            parser.error(f"unknown configuration(s) {', '.join(unknown)}")
        configs = [TRX_DEFAULT, *(by_label[n] for n in wanted if n != TRX_DEFAULT.label)]
    impairment = Impairment(loss=args.loss, jitter_ms=args.jitter_ms)
    progress = Progress(args.quiet)
    results = {c.label: Result(c) for c in configs}
    print(header(f"Loss: hub.monitor -> sender -> impairment proxy ({100 * args.loss:g} % loss, "
                 f"0-{args.jitter_ms:g} ms jitter) -> receiver -> out"), flush=True)
    signal = test_signal(args.seconds)
    with BenchServer() as bs:
        wav = write_wav(bs.workdir / "signal.wav", signal, RATE)
        setup = Setup(bs, wav, signal, impairment, args.warmup)
        for run in range(args.runs):
            for i, c in enumerate(configs):
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{i}", seed=1000 + run)
                except (BenchError, CaptureError) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()  # the server's log, if it died
                    results[c.label].failures.append(str(err))
                    progress(f"  FAILED: {err}")
    ordered = list(results.values())
    print()
    print(report(ordered))
    print()
    print("lost %: datagrams the proxy dropped; silent %: 10 ms blocks below -50 dBFS, median "
          f"(max) over runs; dropouts: silent runs >= {DROPOUT_MS:g} ms; corr: best match of each"
          f" {1000 * WINDOW_S:g} ms of input in the output; level dB: output - input; "
          "|dev| p95: 95th percentile of the per-window level deviation; delay: median "
          "hub -> out; concealed %, late/underruns: the deskcast receiver's own counts.")
    print_footer(bs, ordered)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
