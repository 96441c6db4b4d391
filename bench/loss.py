"""Audio quality of trx and deskcast under packet loss and jitter, measured in the same run.

A private PulseAudio has one 4-channel null sink ``meter`` with the stereo sinks ``hub`` and
``out`` remapped onto its channels 0-1 and 2-3 (as in bench/latency.py). pacat plays a
continuous gliding tone (a log sweep 300 Hz -> 3 kHz -> 300 Hz every 8 s, -12 dBFS) into
``hub``; the pipeline under test carries ``hub.monitor`` over UDP on 127.0.0.1 to ``out``
through the test rig's seeded impairment proxy (5 % random loss + 0-10 ms uniform extra delay
by default). The same seeds are used for every configuration, so each sees the same loss
pattern (per packet). ``meter.monitor`` is recorded: the hub and the output on one sample
clock, so the output is compared with the input at a sample offset inside one recording,
with nothing to align. After skipping 1 s at either end, and wherever the hub itself was
silent (the player fell behind on a busy machine; shown per run as "hub gap ms"):

* silent %: share of 10 ms blocks of the output below -50 dBFS (``rig.signals.silence_fraction``)
  while the tone plays -- the tone never stops, so that is all dropout;
* dropouts/min: runs of >= 20 ms below -50 dBFS (1 ms blocks);
* correlation: every 40 ms of the input against the output around the running delay (best
  match within +-25 ms; concealment and distortion lower it); median, 5th percentile, and the
  share of windows below 0.9 (per run, and per 20 s of each run: the steady state against the
  first seconds);
* level: output minus input level over the whole run, and the 95th percentile of the
  deviation over 40 ms windows;
* delay: hub -> out once a second (median, min-max, and its steps within a run).

Every configuration is run several times, interleaved (trx, deskcast, trx, deskcast, ...) so
that background load hits them alike. A run is a minute by default: the adaptive jitter buffer
and the drift controller settle within the first seconds, and a minute of 5 % loss is ~150
lost packets per run, so the steady state dominates each run and the per-20-s columns show
whether the first stretch differs. The table gives the median (min-max) over runs; a second
table gives every run.

    .venv/bin/python bench/loss.py            # 3 runs x 60 s per configuration (~7 min)
    .venv/bin/python bench/loss.py --quick    # 1 run x 16 s (~45 s; not for the record)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from bench.common.measure import (  # noqa: E402
    SILENT_DB,
    MachineLoad,
    block_levels_db,
    median,
    percentile,
)
from bench.common.pipelines import (  # noqa: E402
    DESKCAST_DEFAULT,
    LOW_LATENCY,
    TRX_DEFAULT,
    Pipeline,
    start_pipeline,
)
from bench.common.procs import BenchError, Procs, free_port_pair  # noqa: E402
from bench.common.report import Progress, header, print_footer, table  # noqa: E402
from bench.common.server import METER, RATE, BenchServer, add_server_priority  # noqa: E402
from rig.capture import CaptureError  # noqa: E402
from rig.meter import MeterRecording, SignalPlayer, steps  # noqa: E402
from rig.netem import Impairment, ImpairmentProxy  # noqa: E402
from rig.signals import chirp, find_delay, level_db  # noqa: E402
from rig.soundserver import SoundServerError  # noqa: E402

SWEEP_S = 8.0
DROPOUT_MS = 20.0
WINDOW_S = 0.04
SEARCH_S = 0.025
SKIP_S = 1.0
"""Input seconds ignored at the start (the receivers settle) and at the end of each run."""
MAX_DELAY_S = 0.6
"""The output is searched for the input up to this long after it was in the hub."""
SLICE_S = 20.0
"""The share of poorly matching windows is also given per this many seconds of a run."""
GAP_PAD_MS = 25
"""Where the hub was silent (a gap in what went in), the output is not judged within this many
ms either side (the delay moves that much within a run)."""
STEP_MS = 3.0
"""A step: the median of 5 one-second delays at least this far from the median of the 5 before."""

CATALOG: tuple[Pipeline, ...] = (
    TRX_DEFAULT,
    DESKCAST_DEFAULT,
    Pipeline("deskcast --no-inband-fec", "deskcast", rx=("--no-inband-fec",)),
    Pipeline("deskcast --fec 4:2", "deskcast", tx=("--fec", "4:2")),
    Pipeline("deskcast --no-drift", "deskcast", rx=("--no-drift",)),
    LOW_LATENCY,
)


@dataclass(frozen=True)
class GlidingTone:
    """The log sweep 300 Hz -> 3 kHz over half of ``period_s``, then back down (the
    time-reversed sweep: continuous at the joints, only the slope turns), repeated."""

    rate: int = RATE
    period_s: float = SWEEP_S
    level_db: float = -12.0

    @cached_property
    def period(self) -> npt.NDArray[np.float64]:
        up = chirp(300.0, 3000.0, self.period_s / 2, self.rate, 1, level_db=self.level_db)[:, 0]
        return np.concatenate([up, up[::-1]])

    def render(self, start: int, frames: int) -> npt.NDArray[np.float64]:
        """Mono samples for frames [start, start + frames)."""
        p = self.period
        return p[(start + np.arange(frames, dtype=np.int64)) % p.size]

    def pcm(self, start: int, frames: int) -> bytes:
        """Stereo s16le bytes for frames [start, start + frames)."""
        s16 = np.round(np.clip(self.render(start, frames), -1.0, 1.0) * 32767).astype("<i2")
        return np.repeat(s16[:, None], 2, axis=1).tobytes()


@dataclass
class Run:
    """One run of one configuration, measured from the recording."""

    seconds: float
    lost_pct: float
    silent: float
    dropouts: int
    hub_gap_ms: float
    """ms of the hub (widened by GAP_PAD_MS) that were silent: not judged."""
    corr: list[float]
    corr_starts_s: list[float]
    """Seconds into the compared stretch of each correlation window."""
    level_delta: float
    window_dev: list[float]
    delays_ms: list[float]
    """hub -> out, once a second."""
    steps: list[tuple[float, float]]
    """(seconds into the run, ms) of each step of the delay."""
    concealed_pct: float = math.nan
    late: int = 0
    underruns: int = 0

    def below(self, lo_s: float = 0.0, hi_s: float = math.inf) -> float:
        """% of correlation windows below 0.9 among those starting in [lo_s, hi_s)."""
        sel = [c for c, t in zip(self.corr, self.corr_starts_s, strict=True) if lo_s <= t < hi_s]
        return 100 * sum(1 for c in sel if c < 0.9) / len(sel) if sel else math.nan


@dataclass
class Result:
    pipeline: Pipeline
    runs: list[Run] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


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
    signal: GlidingTone
    seconds: float
    impairment: Impairment
    warmup_s: float


def measure_once(pipeline: Pipeline, result: Result, setup: Setup, tag: str, seed: int) -> None:
    server = setup.bs.server
    load = MachineLoad().start()
    port = free_port_pair()
    path = setup.bs.workdir / f"{tag}-meter.raw"
    with ImpairmentProxy(("127.0.0.1", port), setup.impairment, seed=seed) as proxy, \
            Procs(setup.bs.workdir) as procs:
        running = start_pipeline(procs, pipeline, setup.bs.env, setup.bs.workdir, tag,
                                 listen_port=port, send_to=proxy.address)
        time.sleep(setup.warmup_s)
        with MeterRecording(METER, path, server) as rec, \
                SignalPlayer(server, "hub", setup.signal, setup.seconds, latency_ms=500) as player:
            deadline = time.monotonic() + setup.seconds + 15
            while player.running():
                if time.monotonic() > deadline:
                    raise BenchError("the gliding tone did not finish playing")
                time.sleep(0.5)
                procs.check_alive()
            time.sleep(MAX_DELAY_S + 0.2)
            x = rec.read(0, rec.frames())
        setup.bs.check()
        procs.check_alive()
        procs.stop_all()
        stats = running.receiver_stats()
        ps = proxy.stats
        lost_pct = 100 * ps.dropped / max(1, ps.received)
    if not os.environ.get("BENCH_KEEP"):
        path.unlink(missing_ok=True)
    setup.bs.check()
    load.stop()
    result.loads.append(load)
    run = analyse(x, setup, lost_pct)
    if stats is not None:
        run.concealed_pct = number(stats.get("concealed_pct"))
        run.late = int(number(stats.get("late")))
        run.underruns = int(number(stats.get("underruns")))
    result.runs.append(run)


def analyse(x: npt.NDArray[np.float32], setup: Setup, lost_pct: float) -> Run:
    """``x``: the meter's recording (hub and out on one sample clock)."""
    c_hub, c_out = METER.channel("hub"), METER.channel("out")
    hub = np.asarray(x[:, c_hub:c_hub + 2], dtype=np.float64)
    out = np.asarray(x[:, c_out:c_out + 2], dtype=np.float64)
    h, o = hub.mean(axis=1), out.mean(axis=1)
    first = round(find_delay(setup.signal.render(0, 2 * RATE), h[: 6 * RATE], RATE) * RATE)
    lo = first + round(SKIP_S * RATE)
    hi = first + round((setup.seconds - SKIP_S) * RATE)
    if hi - lo < RATE or hi + round(MAX_DELAY_S * RATE) > o.size:
        raise BenchError("recording too short")
    # Delay once a second (it changes at underruns and with drift correction).
    coarse: list[tuple[int, float]] = []
    for start in range(lo, hi - RATE, RATE):
        lag = find_delay(h[start:start + RATE], o[start:start + round((1 + MAX_DELAY_S) * RATE)],
                         RATE, max_delay=MAX_DELAY_S)
        if lag >= 0:
            coarse.append((start, lag))
    if not coarse:
        raise BenchError("the output never matched the input")
    delays = np.asarray([d for _, d in coarse])
    starts = np.asarray([s for s, _ in coarse])

    # The steady output: where the input's [lo, hi) came out, judged only where the hub was
    # sounding (a gap in what went in, the player's, is not the pipeline's).
    d_med = round(float(np.median(delays)) * RATE)
    seg = out[lo + d_med:hi + d_med]
    hub_gap = _dilate(block_levels_db(hub[lo:hi], RATE, 1.0) < SILENT_DB, GAP_PAD_MS)
    silent, dropouts = _silences(seg, hub_gap)
    win, search = round(WINDOW_S * RATE), round(SEARCH_S * RATE)
    corr: list[float] = []
    corr_at: list[float] = []
    dev: list[float] = []
    for start in range(lo, hi - win, win):
        d = round(float(delays[int(np.argmin(np.abs(starts - start)))]) * RATE)
        ref = h[start:start + win]
        o0 = start + d - search
        ms = (start - lo) // (RATE // 1000)
        if o0 < 0 or o0 + win + 2 * search > o.size or hub_gap[ms:ms + 1000 * win // RATE].any():
            continue
        c, k = best_match(ref, o[o0:o0 + win + 2 * search])
        corr.append(c)
        corr_at.append((start - lo) / RATE)
        matched = o[o0 + k:o0 + k + win]
        dev.append(abs(max(level_db(matched), SILENT_DB) - level_db(ref)))
    delays_ms = [1000 * float(d) for d in delays]
    at_s = [float(s - first) / RATE for s in starts]
    return Run(
        seconds=seg.shape[0] / RATE, lost_pct=lost_pct,
        silent=silent, dropouts=dropouts, hub_gap_ms=float(np.sum(hub_gap)), corr=corr,
        corr_starts_s=corr_at,
        level_delta=level_db(seg) - level_db(hub[lo:hi]), window_dev=dev,
        delays_ms=delays_ms, steps=[(at_s[i], ms) for i, ms in steps(delays_ms, STEP_MS)])


def _dilate(mask: npt.NDArray[np.bool_], pad: int) -> npt.NDArray[np.bool_]:
    """``mask`` widened by ``pad`` elements either side."""
    return np.asarray(np.convolve(mask, np.ones(2 * pad + 1), mode="same") > 0)


def _silences(seg: npt.NDArray[np.float64], hub_gap: npt.NDArray[np.bool_]
              ) -> tuple[float, int]:
    """(share of the 10 ms blocks of ``seg`` below SILENT_DB, runs of 1 ms blocks below it
    of DROPOUT_MS or more), counting only where ``hub_gap`` (per ms) is false."""
    quiet = block_levels_db(seg, RATE, 1.0) < SILENT_DB
    n = min(quiet.size, hub_gap.size) // 10 * 10
    quiet, gap = quiet[:n], hub_gap[:n]
    q10 = block_levels_db(seg[: n * RATE // 1000], RATE, 10.0) < SILENT_DB
    g10 = gap.reshape(-1, 10).any(axis=1)
    silent = float(np.mean(q10[~g10])) if (~g10).any() else math.nan
    dropouts, run = 0, 0
    for q in [*(quiet & ~gap).tolist(), False]:
        if q:
            run += 1
            continue
        dropouts += run >= DROPOUT_MS
        run = 0
    return silent, dropouts


def spread(values: list[float], digits: int = 2, signed: bool = False) -> str:
    """median (min-max) over runs."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "-"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    if len(v) == 1:
        return f.format(v[0])
    return f"{f.format(median(v))} ({f.format(min(v))}-{f.format(max(v))})"


def report(results: list[Result]) -> str:
    rows: list[list[str]] = []
    for r in results:
        runs = r.runs
        if not runs:
            rows.append([r.pipeline.label, f"0/{len(r.failures)}", *["-"] * 11])
            continue
        seconds = sum(x.seconds for x in runs)
        corr = [c for x in runs for c in x.corr]
        delays = [d for x in runs for d in x.delays_ms]
        deskcast = r.pipeline.kind == "deskcast"
        rows.append([
            r.pipeline.label, f"{len(runs)}/{len(runs) + len(r.failures)}",
            f"{median([x.lost_pct for x in runs]):.1f}",
            spread([100 * x.silent for x in runs]),
            f"{sum(x.dropouts for x in runs) / (seconds / 60):.1f}" if seconds else "-",
            f"{median(corr):.3f}", f"{percentile(corr, 5):.3f}",
            spread([x.below() for x in runs], 1),
            spread([x.level_delta for x in runs], signed=True),
            f"{percentile([d for x in runs for d in x.window_dev], 95):.2f}",
            f"{median(delays):.0f} ({min(delays):.0f}-{max(delays):.0f})",
            spread([x.concealed_pct for x in runs], 1) if deskcast else "-",
            f"{sum(x.late for x in runs)}/{sum(x.underruns for x in runs)}" if deskcast else "-",
        ])
    return table(["configuration", "runs", "lost %", "silent %", "dropouts/min",
                  "corr med", "corr p5", "corr<0.9 %", "level dB", "|dev| p95 dB",
                  "delay ms", "concealed %", "late/underruns"], rows)


def report_runs(results: list[Result]) -> str:
    rows: list[list[str]] = []
    for r in results:
        for i, x in enumerate(r.runs):
            slices = [x.below(a, a + SLICE_S) for a in np.arange(0.0, x.seconds, SLICE_S)]
            deskcast = r.pipeline.kind == "deskcast"
            rows.append([
                r.pipeline.label, str(i + 1), f"{x.lost_pct:.1f}", f"{100 * x.silent:.2f}",
                str(x.dropouts), f"{median(x.corr):.3f}", f"{percentile(x.corr, 5):.3f}",
                f"{x.below():.1f}", " ".join(f"{s:.1f}" for s in slices if not math.isnan(s)),
                f"{x.level_delta:+.2f}", f"{median(x.delays_ms):.0f}",
                f"{min(x.delays_ms):.0f}-{max(x.delays_ms):.0f}",
                " ".join(f"{ms:+.0f}@{t:.0f}s" for t, ms in x.steps) or "-",
                f"{x.concealed_pct:.1f}" if deskcast else "-",
                f"{x.late}/{x.underruns}" if deskcast else "-", f"{x.hub_gap_ms:.0f}",
            ])
    return table(["configuration", "run", "lost %", "silent %", "dropouts", "corr med",
                  "corr p5", "corr<0.9 %", f"... per {SLICE_S:g} s", "level dB", "delay ms",
                  "min-max", "steps", "concealed %", "late/underruns", "hub gap ms"], rows,
                 right=[False, *[True] * 15])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--seconds", type=float, default=60.0, help="signal seconds per run (60)")
    parser.add_argument("--loss", type=float, default=0.05, help="random loss (0.05)")
    parser.add_argument("--jitter-ms", type=float, default=10.0,
                        help="extra delay, uniform in [0, this] (10)")
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds the pipeline runs before the signal (1.5)")
    parser.add_argument("--quick", action="store_true",
                        help="1 run x 16 s (~45 s; not for the record)")
    parser.add_argument("--configs", metavar="NAMES",
                        help="comma-separated configurations (trx defaults is always "
                        "included): " + ", ".join(c.label for c in CATALOG))
    add_server_priority(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 16.0
    if args.seconds < 2 * SKIP_S + 2:
        parser.error(f"--seconds must be at least {2 * SKIP_S + 2:g}")
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
                 f"0-{args.jitter_ms:g} ms jitter) -> receiver -> out, both on one sample clock "
                 f"({args.server_priority} PulseAudio), {args.runs} x {args.seconds:g} s"),
          flush=True)
    with BenchServer(realtime=args.server_priority == "realtime") as bs:
        setup = Setup(bs, GlidingTone(), args.seconds, impairment, args.warmup)
        for run in range(args.runs):
            for i, c in enumerate(configs):
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{i}", seed=1000 + run)
                except (BenchError, CaptureError, SoundServerError) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()  # the server's log, if it died
                    results[c.label].failures.append(str(err))
                    progress(f"  FAILED: {err}")
                else:
                    last = results[c.label].runs[-1]
                    progress(f"  silent {100 * last.silent:.2f} %, corr<0.9 "
                             f"{last.below():.1f} %, delay {median(last.delays_ms):.0f} ms")
    ordered = list(results.values())
    print()
    print(report(ordered))
    print()
    print("runs: measured/run; lost %: datagrams the proxy dropped (median of runs); silent %: "
          "10 ms blocks of the output below -50 dBFS; dropouts: silent runs >= "
          f"{DROPOUT_MS:g} ms (per minute over all runs); corr: best match of each "
          f"{1000 * WINDOW_S:g} ms of input in the output (median and p5 over every window of "
          "every run); level dB: output - input; |dev| p95: 95th percentile of the per-window "
          "level deviation; delay: hub -> out once a second, median (min-max) over all runs; "
          "concealed %, late/underruns: the deskcast receiver's own counts (late/underruns "
          "summed over runs). X (a-b): median (min-max) over runs.")
    print()
    print(report_runs(ordered))
    print()
    print(f"per run: corr<0.9 % per {SLICE_S:g} s: the same share for each {SLICE_S:g} s of the "
          f"run in turn; delay min-max: of the one-second delays; steps: the delay moving to a "
          f"new level and staying (median of 5 seconds >= {STEP_MS:g} ms from the 5 before), "
          "size @ seconds into the run; hub gap ms: where the hub itself was silent (the "
          f"player fell behind), widened by {GAP_PAD_MS} ms either side: the output is not "
          "judged there (silence, dropouts, correlation).")
    print_footer(bs, ordered)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
