"""CPU cost of trx and deskcast at equal settings, measured in the same run.

A private PulseAudio has the sinks ``hub`` and ``out`` (remapped onto one 4-channel null sink
``meter``, as for every benchmark; nothing records it here). paplay plays stereo white noise
(or a tone) into ``hub``; the pipeline under test carries ``hub.monitor`` over UDP on 127.0.0.1
to ``out`` with 20 ms Opus frames at 128 kbit/s, stereo (trx's defaults, and deskcast's). After a
warm-up, the utime+stime of the sender and the receiver (with all their threads and children)
is read from /proc before and after a fixed wall-clock window: CPU seconds per second of audio.
The sound server's own CPU time over the same window is shown too (it does the capture and
playback for either pipeline, and the remapping onto ``meter``).

Configurations are interleaved (trx, deskcast, trx, deskcast, ...) so that background load
hits them alike.

    .venv/bin/python bench/cpu.py             # 3 runs x 20 s per configuration (~2.5 min)
    .venv/bin/python bench/cpu.py --quick     # 1 run x 8 s (~30 s)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

from bench.common.measure import MachineLoad, cpu_seconds, median  # noqa: E402
from bench.common.pipelines import (  # noqa: E402
    DESKCAST_DEFAULT,
    LOW_LATENCY,
    TRX_DEFAULT,
    Pipeline,
    start_pipeline,
)
from bench.common.procs import BenchError, Procs  # noqa: E402
from bench.common.report import Progress, header, print_footer, table  # noqa: E402
from bench.common.server import RATE, BenchServer, add_server_priority  # noqa: E402
from rig import SoundServer  # noqa: E402
from rig.capture import CaptureError, play_file  # noqa: E402
from rig.signals import noise, tone, write_wav  # noqa: E402

CATALOG: tuple[Pipeline, ...] = (
    TRX_DEFAULT,
    DESKCAST_DEFAULT,
    Pipeline("deskcast --no-drift", "deskcast", rx=("--no-drift",)),
    LOW_LATENCY,
    Pipeline("trx 5 ms frames", "trx", tx=("-f", "240")),
)


@dataclass
class Result:
    pipeline: Pipeline
    tx: list[float] = field(default_factory=list)
    rx: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def total(self) -> list[float]:
        return [a + b for a, b in zip(self.tx, self.rx, strict=True)]


def server_pid(server: SoundServer) -> int | None:
    """The pulseaudio daemon of this private server (found by its private directory)."""
    marker = str(server.root)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if cmdline.startswith("pulseaudio") and marker in cmdline:
            return int(entry)
    return None


@dataclass
class Setup:
    bs: BenchServer
    wav: Path
    warmup_s: float
    seconds: float


def measure_once(pipeline: Pipeline, result: Result, setup: Setup, tag: str) -> None:
    pa_pid = server_pid(setup.bs.server)
    with Procs(setup.bs.workdir) as procs:
        running = start_pipeline(procs, pipeline, setup.bs.env, setup.bs.workdir, tag)
        player = play_file(setup.bs.server, setup.wav, "hub")
        try:
            time.sleep(setup.warmup_s)
            procs.check_alive()
            load = MachineLoad().start()
            t0 = time.monotonic()
            c_tx, c_rx = cpu_seconds(running.tx.proc.pid), cpu_seconds(running.rx.proc.pid)
            c_pa = cpu_seconds(pa_pid) if pa_pid is not None else math.nan
            time.sleep(setup.seconds)
            d_tx = cpu_seconds(running.tx.proc.pid) - c_tx
            d_rx = cpu_seconds(running.rx.proc.pid) - c_rx
            d_pa = cpu_seconds(pa_pid) - c_pa if pa_pid is not None else math.nan
            wall = time.monotonic() - t0
            load.stop()
            setup.bs.check()
            procs.check_alive()
            if player.poll() is not None:
                raise BenchError("paplay finished before the measurement did")
        finally:
            if player.poll() is None:
                player.terminate()
            player.communicate(timeout=5)
    result.tx.append(d_tx / wall)
    result.rx.append(d_rx / wall)
    result.server.append(d_pa / wall)
    result.loads.append(load)


def cell(values: list[float]) -> str:
    """Median (min-max) in ms of CPU per second of audio."""
    if not values:
        return "-"
    ms = [1000 * v for v in values]
    if len(ms) == 1:
        return f"{ms[0]:.1f}"
    return f"{median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f})"


def report(results: list[Result]) -> str:
    base = results[0].total() if results and results[0].pipeline is TRX_DEFAULT else []
    rows: list[list[str]] = []
    for r in results:
        total = r.total()
        ratio = f"{median(total) / median(base):.2f}" if base and total else "-"
        rows.append([r.pipeline.label, str(len(total)), cell(r.tx), cell(r.rx), cell(total),
                     f"{100 * median(total):.1f}" if total else "-", ratio, cell(r.server)])
    return table(["configuration", "runs", "sender ms/s", "receiver ms/s", "total ms/s",
                  "% of a core", "x trx", "pulseaudio ms/s"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per run (20)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of audio before the measurement starts (2)")
    parser.add_argument("--signal", choices=("noise", "tone"), default="noise",
                        help="what plays into the hub: stereo white noise at -20 dBFS "
                        "(default) or a 1 kHz tone at -12 dBFS")
    parser.add_argument("--quick", action="store_true", help="1 run x 8 s (~30 s)")
    parser.add_argument("--configs", metavar="NAMES",
                        help="comma-separated configurations (trx defaults is always "
                        "included): " + ", ".join(c.label for c in CATALOG))
    add_server_priority(parser)
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
    progress = Progress(args.quiet)
    results = {c.label: Result(c) for c in configs}
    print(header("CPU: sender + receiver, hub.monitor -> UDP 127.0.0.1 -> out, 20 ms frames, "
                 f"128 kbit/s stereo ({args.server_priority} PulseAudio)"), flush=True)
    seconds = args.warmup + args.seconds + 5.0
    if args.signal == "noise":
        audio = noise(seconds, RATE, level_db=-20.0, seed=1)
    else:
        audio = tone(1000.0, seconds, RATE, level_db=-12.0)
    with BenchServer(realtime=args.server_priority == "realtime") as bs:
        wav = write_wav(bs.workdir / "signal.wav", audio, RATE)
        setup = Setup(bs, wav, args.warmup, args.seconds)
        for run in range(args.runs):
            for i, c in enumerate(configs):
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{i}")
                except (BenchError, CaptureError) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()  # the server's log, if it died
                    results[c.label].failures.append(str(err))
                    progress(f"  FAILED: {err}")
    ordered = list(results.values())
    print()
    print(report(ordered))
    print()
    print(f"ms/s: milliseconds of CPU time (user+system, all threads and children) per second "
          f"of audio, median (min-max) over runs of {args.seconds:g} s; signal: {args.signal}.")
    print_footer(bs, ordered)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
