"""Rooms in sync: how far apart several rooms play the same sound, for Snapcast (the anchor)
and deskcast, measured in the same run from one recording.

A private PulseAudio has one null sink ``meter`` with the stereo sinks ``hub``, ``room1``,
``room2``, ``room3`` remapped onto its channel pairs (rig.meter). pacat plays clicks into
``hub``: 20 ms bursts of band-limited noise (0.4-5 kHz, so Opus carries them) every 0.5 s, in a
cycle of eight different ones (rig.rooms). Each system under test carries ``hub.monitor`` to
every room's sink. ``meter.monitor`` is recorded: the hub and every room on one sample clock.
Each click is found in each room by cross-correlation with the hub's own click, to a fraction
of a sample: per room a delay, per pair of rooms an offset, per click. A click not found in a
room (correlation below 0.5 within 2 s) is lost there.

The systems (bench/common/rooms.py; ``--systems`` takes their specs, comma-separated):
``check`` is the harness alone (the same samples into every room: offsets must be 0),
``snapcast`` a private snapserver with a snapclient per room, ``deskcast`` a ``deskcast send``
and a ``deskcast receive`` per room, as ``deskcast route ROOM1 ROOM2 ...`` runs them today.
Every system is run several times, interleaved, so that background load hits them alike.

    .venv/bin/python bench/rooms.py                 # 3 runs x 60 s of each default system
    .venv/bin/python bench/rooms.py --quick         # 1 run x 20 s
    .venv/bin/python bench/rooms.py --systems check,snapcast:buffer=100:chunk=10:player=20
    .venv/bin/python bench/rooms.py --systems 'deskcast:room2-rx=--buffer-ms 100'
    .venv/bin/python bench/rooms.py --lock /tmp/deskcast-bench.lock   # the lock per run only

Ctrl-C stops it and prints the report of the runs that finished.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

from bench.common.measure import MachineLoad, load_summary  # noqa: E402
from bench.common.procs import BenchError, Procs, add_load, cpu_load, one_line  # noqa: E402
from bench.common.report import Progress, header, package_version, table  # noqa: E402
from bench.common.rooms import System, parse_system, start  # noqa: E402
from bench.common.server import RATE, BenchServer, add_server_priority  # noqa: E402
from rig.capture import CaptureError  # noqa: E402
from rig.meter import Meter, MeterRecording, SignalPlayer  # noqa: E402
from rig.rooms import Click, ClickSignal, ClickTracker, Spread, delays, offsets  # noqa: E402
from rig.soundserver import SoundServerError  # noqa: E402

DEFAULT_SYSTEMS = ("check", "snapcast", "snapcast:buffer=100:chunk=10:player=20",
                   "snapcast:room2-player=300:label=snapcast room2 pulse buffer 300",
                   "deskcast",
                   "deskcast:room2-rx=--buffer-ms 100:label=deskcast room2 --buffer-ms 100")
"""The harness; Snapcast at its defaults and at its smallest stable setting; deskcast as
``route`` runs it today; and each with one room's output path longer than the others'."""
MAX_DELAY_S = 2.0
"""Clicks are searched for in each room up to this long after they were in the hub."""


@dataclass
class Result:
    system: System
    runs: list[list[Click]] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def clicks(self) -> list[Click]:
        return [c for run in self.runs for c in run]


@dataclass
class Setup:
    bs: BenchServer
    rooms: tuple[str, ...]
    seconds: float
    warmup_s: float
    signal: ClickSignal
    lock: Path | None


@contextlib.contextmanager
def locked(path: Path | None) -> Iterator[None]:
    """Hold ``flock(path)`` (the shared benchmark lock) while the ``with`` runs."""
    if path is None:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def measure_once(result: Result, setup: Setup, tag: str) -> None:
    bs = setup.bs
    path = bs.workdir / f"{tag}-meter.raw"
    with locked(setup.lock):
        load = MachineLoad().start()
        with Procs(bs.workdir) as procs, contextlib.ExitStack() as stack:
            check = start(result.system, stack, procs, bs, setup.rooms, tag=tag)
            time.sleep(setup.warmup_s)
            check()
            server = bs.server
            with MeterRecording(bs.meter, path, server) as rec:
                tracker = ClickTracker(rec, setup.rooms, max_delay_s=MAX_DELAY_S)
                with SignalPlayer(server, "hub", setup.signal, setup.seconds,
                                  latency_ms=500) as player:
                    deadline = time.monotonic() + setup.seconds + 15
                    while player.running():
                        if time.monotonic() > deadline:
                            raise BenchError("the clicks did not finish playing")
                        time.sleep(0.5)
                        check()
                        tracker.update()
                    time.sleep(MAX_DELAY_S + 0.3)
                check()
                tracker.update()
            bs.check()
        load.stop()
    if not os.environ.get("BENCH_KEEP"):
        path.unlink(missing_ok=True)
    result.loads.append(load)
    if not tracker.clicks:
        raise BenchError("no click was found in the hub")
    result.runs.append(tracker.clicks)


def pairs(rooms: Sequence[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(rooms, 2))


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def fmt(v: float, digits: int = 2) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def report(results: Sequence[Result], rooms: Sequence[str]) -> str:
    rows = []
    for r in results:
        clicks = r.clicks
        apart = Spread.of([o for a, b in pairs(rooms) for o in offsets(clicks, a, b)])
        worst = max((Spread.of(offsets(run, a, b)).median for run in r.runs
                     for a, b in pairs(rooms)), default=math.nan)
        lost = [sum(1 for c in clicks if c.delays_ms[room] is None) for room in rooms]
        rows.append([
            r.system.label, str(len(clicks)),
            " / ".join(fmt(Spread.of(delays(clicks, room)).median, 1) for room in rooms),
            " ".join(f"{fmt(min(v), 0)}-{fmt(max(v), 0)}" for v in
                     ([d for room in rooms for d in delays(run, room)] for run in r.runs) if v)
            or "-",
            fmt(apart.median), fmt(apart.p95), fmt(apart.max), fmt(worst),
            f"{sum(lost)} ({' '.join(map(str, lost))})",
            f"{len(r.runs)}" + (f" (+{len(r.failures)} failed)" if r.failures else ""),
        ])
    return table(["system", "clicks", f"delay ms median ({' / '.join(rooms)})",
                  "delay ms min-max per run", "|offset| median", "p95", "max",
                  "worst pair-run median", "lost (per room)", "runs"], rows)


def pair_report(results: Sequence[Result], rooms: Sequence[str]) -> str:
    rows = []
    for r in results:
        for a, b in pairs(rooms):
            s = Spread.of(offsets(r.clicks, a, b))
            per_run = [Spread.of(offsets(run, a, b)).median for run in r.runs]
            rows.append([r.system.label, f"{a}-{b}", str(s.count), fmt(s.median), fmt(s.p95),
                         fmt(s.max), " ".join(fmt(m) for m in per_run) or "-"])
    return table(["system", "pair", "clicks", "|offset| ms median", "p95", "max",
                  "run medians"], rows)


def run_all(results: Sequence[Result], setup: Setup, runs: int, progress: Progress) -> None:
    rooms = setup.rooms
    for run in range(runs):
        for i, r in enumerate(results):
            progress(f"run {run + 1}/{runs}: {r.system.label}")
            try:
                measure_once(r, setup, f"run{run}-{i}")
            except (BenchError, CaptureError, SoundServerError) as err:
                with contextlib.suppress(BenchError):
                    setup.bs.check()
                r.failures.append(str(err))
                progress(f"  FAILED: {one_line(str(err))}")
            else:
                last = r.runs[-1]
                apart = Spread.of([o for a, b in pairs(rooms) for o in offsets(last, a, b)])
                lost = sum(1 for c in last for room in rooms if c.delays_ms[room] is None)
                progress(f"  {len(last)} clicks, delay " + " / ".join(
                    fmt(Spread.of(delays(last, room)).median, 1) for room in rooms) +
                    f" ms; |offset| median {fmt(apart.median)} p95 {fmt(apart.p95)} "
                    f"max {fmt(apart.max)} ms; {lost} lost")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), metavar="SPECS",
                        help="comma-separated systems, each NAME[:KEY=VALUE]... (see "
                        "bench/common/rooms.py); default: " + ",".join(DEFAULT_SYSTEMS))
    parser.add_argument("--rooms", type=int, default=3, choices=(2, 3, 4),
                        help="rooms per system (3)")
    parser.add_argument("--runs", type=int, default=3, help="runs per system (3)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of each run's clicks, s (60)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds a system plays (silence) before the clicks start (5)")
    parser.add_argument("--quick", action="store_true", help="1 run x 20 s (not for the record)")
    parser.add_argument("--lock", type=Path, metavar="FILE",
                        help="hold flock(FILE) during each run only, not between them (e.g. "
                        "/tmp/deskcast-bench.lock, so that others' measurements can go between)")
    add_server_priority(parser)
    add_load(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print every click's delays, run by run")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 20.0
    try:
        systems = [parse_system(s) for s in args.systems.split(",") if s.strip()]
    except ValueError as err:
        parser.error(str(err))
    rooms = tuple(f"room{i}" for i in range(1, args.rooms + 1))
    signal = ClickSignal()
    if signal.cycle_s <= MAX_DELAY_S:
        parser.error("the search window must be shorter than the clicks' cycle")
    progress = Progress(args.quiet)
    print(header(f"Rooms in sync: hub -> each system -> {', '.join(rooms)}, all on one sample "
                 f"clock ({args.server_priority} PulseAudio), {args.runs} x {args.seconds:g} s"
                 f" per system"), flush=True)
    print(f"snapserver/snapclient {package_version('snapserver')}")
    meter = Meter(("hub", *rooms), RATE)
    results = [Result(s) for s in systems]
    with BenchServer(realtime=args.server_priority == "realtime", meter=meter) as bs, \
            cpu_load(args.load):
        setup = Setup(bs, rooms, args.seconds, args.warmup, signal, args.lock)
        try:
            run_all(results, setup, args.runs, progress)
        except KeyboardInterrupt:
            progress("interrupted: the report covers the runs that finished")
    print()
    print(report(results, rooms))
    print()
    print(pair_report(results, rooms))
    print()
    print(f"clicks: found in the hub (every run); delay: from the hub to each room, median over "
          f"every click found there; |offset|: |delay in one room - delay in another| per click "
          f"found in both, over every pair of rooms and run; worst pair-run median: the largest "
          f"median of one pair in one run; lost: clicks not found in a room (normalised "
          f"correlation < 0.5 within {MAX_DELAY_S:g} s of the hub). Delays include what each "
          f"room's stream buffers in the sound server (the meter hears a room when it mixes it).")
    summary = load_summary([m for r in results for m in r.loads])
    if summary:
        print(summary)
    for r in results:
        print(f"  {r.system.label}: {r.system.describe(rooms)}")
        for f in r.failures:
            print(f"    failed run: {one_line(f)}")
        if args.verbose:
            for n, clicks in enumerate(r.runs, start=1):
                print(f"    run {n}: " + "; ".join(
                    " ".join(fmt(_nan(c.delays_ms[room]), 3) for room in rooms)
                    for c in clicks))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
