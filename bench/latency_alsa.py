"""trx and deskcast on plain ALSA, measured from the sound: the latency benchmark on real
``snd-aloop`` cards, in the test VM (no sound server anywhere).

The trx guide's set-up, as ``deskcast hub setup --backend alsa`` writes it: applications play
through the ``dmix`` default into ``hw:Loopback,0,0``; the sender under test captures
``hubcap`` (a ``dsnoop`` on ``hw:Loopback,1,0``), sends over UDP on the VM's 127.0.0.1, and the
receiver plays into a second card, ``hw:Speakers,0,0``. ``aplay`` plays the marker signal of
:mod:`rig.meter` (1 kHz bed, a chirp every 0.5 s) into the hub; each chirp's delay is a
sample offset in one 4-channel recording of the hub and the output, and gaps are runs of
silence in the output.

That recording is made of two: the launcher's ``@record`` meter (:mod:`rig.vmlaunch`, at
SCHED_FIFO 85, above the programs measured) captures the hub's ``dsnoop``
(``deskcast_hubsnoop``) and ``hw:Speakers,1,0`` in two threads and notes each device's frame
position against ``CLOCK_MONOTONIC`` after every read; :mod:`rig.alsameter` maps both onto
that clock by the same statistic (the lower envelope of time minus position, which strips the
4 ms timer tick the loopback cards move on) and lines them up into one WAV. (An ALSA ``multi``
of the two overran at once in the VM and recorded nothing.) A run whose meter overran, or whose
devices' rates disagree, is reported as not aligned and left out of the figures.

The method is checked in every round by the ``check`` row: one ``aplay`` plays the marker into
``hw:Loopback,0,0`` and ``hw:Speakers,0,0`` at once (an ALSA ``multi`` of the two: started
together, one tick of the same timer), recorded by the same meter through the same dsnoop, so
its delay is 0 by construction and what it shows is the alignment's error. The footer also
prints each run's envelope wobble (how far the 5 s windows' earliest readings stray from
their line) and the meter's CPU use. On 2026-12-07 the check measured +-0.1 ms on every chirp
of 3 runs, wobble <= 0.25 ms; the meter took ~15 % of the emulated CPU (9-11 s a minute, above
both pairs alike), and a stall of the whole VM longer than its 320 ms buffer once cost a run.

Pairs: ``trx-tx -d hubcap`` -> ``trx-rx -d hw:Speakers,0,0`` (trx's defaults), and ``deskcast
send -s alsa:hubcap`` -> ``deskcast receive -o alsa:hw:Speakers,0,0`` (deskcast's defaults),
interleaved, each run ``--seconds`` long. trx's programs run at SCHED_FIFO 80, the real-time
priority deskcast's audio threads ask for by themselves (``--rtprio``), the marker's ``aplay``
at 95 (above everything: the hub itself stays whole).

The VM runs under QEMU's software emulation (one emulated CPU, Python ~50x slower than on this
machine): what it shows is how the two behave on a real ALSA card under a slow CPU, not the
delays of a real desktop (those are ``bench/latency.py``'s).

    .venv/bin/python bench/latency_alsa.py                  # 3 runs x 60 s per pair (~10 min)
    .venv/bin/python bench/latency_alsa.py --runs 1 --seconds 20    # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from bench.common.measure import median, percentile  # noqa: E402
from bench.common.report import header, table  # noqa: E402
from rig.alsameter import align  # noqa: E402
from rig.meter import EventTracker, MarkerSignal, Meter  # noqa: E402
from rig.signals import read_wav, write_wav  # noqa: E402
from rig.vm import run_scenario  # noqa: E402

RATE = 48000
HUB_DEVICE, OUT_DEVICE = "deskcast_hubsnoop", "hw:Speakers,1,0"
CHECK_PCM = """
pcm.deskcast_both {
    type multi
    slaves.a.pcm "hw:Loopback,0,0"
    slaves.a.channels 2
    slaves.b.pcm "hw:Speakers,0,0"
    slaves.b.channels 2
    bindings.0 { slave a; channel 0; }
    bindings.1 { slave a; channel 1; }
    bindings.2 { slave b; channel 0; }
    bindings.3 { slave b; channel 1; }
}
"""
CHECK_SHIFT_MS = 10
"""The check's output is moved this much later before it is measured (the tracker looks for
a chirp at 0 ms or later; an alignment error of either sign must show) and taken off again."""

PLAY = "chrt -f 95 aplay -q marker.wav"
PAIRS = {
    "check": ("", "", "chrt -f 95 aplay -q -D plug:deskcast_both marker4.wav"),
    "trx": ('chrt -f 80 trx-rx -d hw:Speakers,0,0 -p $PORT > rx-$TAG.log 2>&1 & RX=$!\n'
            'sleep 1\n'
            'chrt -f 80 trx-tx -d hubcap -h 127.0.0.1 -p $PORT > tx-$TAG.log 2>&1 & TX=$!\n'
            'sleep 2\n',
            'kill $TX $RX; wait $TX $RX\n', PLAY),
    "deskcast": ('dc rx-$TAG -v receive 127.0.0.1:$PORT -o alsa:hw:Speakers,0,0 '
                 '--stats-json rx-$TAG.json\n'
                 'wait_log rx-$TAG.log "listening for RTP" 90\n'
                 'dc tx-$TAG -v send 127.0.0.1:$PORT -s alsa:hubcap\n'
                 'wait_log tx-$TAG.log "playing alsa:hubcap" 90; sleep 2\n',
                 'dc_stop tx-$TAG; dc_stop rx-$TAG\n', PLAY),
}

SCENARIO_HEAD = r"""
wait_log() {
  i=0
  while ! grep -q "$2" "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -gt $(( $3 * 10 )) ] && { echo "timeout: no '$2' in $1"; return 1; }
    sleep 0.1
  done
}
dc hub hub setup --backend alsa; dc_wait hub > /dev/null
cat check.conf >> "$HOME/.asoundrc"
"""

RUN = r"""
TAG={tag}; PORT={port}
{start}mark start-$TAG
dc meter-$TAG @record {record_s} $OUT/meter-$TAG {hub} {out}
wait_log meter-$TAG.out recording 60
sleep 0.5; {play}
dc_wait meter-$TAG > /dev/null
{stop}mark end-$TAG
"""


class WavRecording:
    """A finished 4-channel recording with the interface :class:`EventTracker` reads."""

    def __init__(self, path: Path) -> None:
        audio, rate = read_wav(path)
        if rate != RATE or audio.shape[1] != 4:
            raise SystemExit(f"{path}: {rate} Hz, {audio.shape[1]} ch: not the meter's recording")
        self.meter = Meter(("hub", "out"), RATE)
        self._x: npt.NDArray[np.float32] = audio.astype(np.float32)

    def frames(self) -> int:
        return int(self._x.shape[0])

    def read(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        return self._x[max(0, start):max(0, stop)]


@dataclass
class Result:
    name: str
    runs: list[list[float]] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """One line per run: how it was aligned, or why it was not."""
    unaligned: int = 0

    def add(self, prefix: Path) -> None:
        shift_ms = CHECK_SHIFT_MS if self.name == "check" else 0
        if not Path(f"{prefix}.json").exists():
            self.unaligned += 1
            self.notes.append(f"{prefix.name}: no recording (see {prefix.name}.log)")
            return
        aligned = align(prefix, extra_delay_frames=shift_ms * RATE // 1000)
        if aligned.audio is None:
            self.unaligned += 1
            self.notes.append(f"{prefix.name}: NOT ALIGNED, left out: {aligned.problem}")
            return
        wav = prefix.with_suffix(".wav")
        write_wav(wav, aligned.audio, RATE)
        tracker = EventTracker(WavRecording(wav))  # type: ignore[arg-type]
        tracker.update()
        delays = [e.delay_ms - shift_ms for e in tracker.events]
        self.runs.append(delays)
        self.gaps.append(len(tracker.gaps))
        self.missed.append(len(tracker.missed))
        hub, out = aligned.clocks
        seconds = hub.frames / RATE
        self.notes.append(
            f"{prefix.name}: output started {1000 * (out.offset_s - hub.offset_s):+.1f} ms after"
            f" the hub; rates {hub.ppm:+.1f}/{out.ppm:+.1f} ppm; envelope wobble "
            f"{hub.floor_ms:.2f}/{out.floor_ms:.2f} ms; readings late (median) "
            f"{hub.late_ms:.1f}/{out.late_ms:.1f} ms, {hub.readings}/{out.readings} readings; "
            f"meter CPU {aligned.cpu_s:.1f} s in {seconds:.0f} s; delay "
            f"{median(delays):.1f} ms (min-max {min(delays, default=0):.1f}-"
            f"{max(delays, default=0):.1f})")


def write_marker(path: Path, seconds: float, channels: int) -> None:
    import soundfile as sf

    signal = MarkerSignal(RATE)
    frames = round(seconds * RATE)
    stereo = np.frombuffer(signal.pcm(0, frames), dtype="<i2").reshape(-1, 2)
    sf.write(str(path), np.tile(stereo, (1, channels // 2)), RATE, subtype="PCM_16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per pair (3)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="marker signal per run, in seconds (60)")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and logs in DIR")
    args = parser.parse_args()
    out = Path(args.keep or tempfile.mkdtemp(prefix="deskcast-latency-alsa-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out / "marker.wav", args.seconds, 2)
    write_marker(out / "marker4.wav", args.seconds, 4)
    (out / "check.conf").write_text(CHECK_PCM)
    script, order = SCENARIO_HEAD, []
    for run in range(args.runs):
        for i, (name, (start, stop, play)) in enumerate(PAIRS.items()):
            tag = f"{name}-{run}"
            order.append((name, tag))
            script += RUN.format(tag=tag, port=5100 + 2 * (run * len(PAIRS) + i),
                                 start=start, stop=stop, play=play, hub=HUB_DEVICE,
                                 out=OUT_DEVICE, record_s=round(args.seconds + 3))
    per_run_s = args.seconds + 40
    began = time.time()
    vm = run_scenario(script, out, cards=("Loopback", "Speakers"), launcher=True,
                      timeout_s=120 + len(order) * per_run_s)
    if vm.returncode != 0:
        print(f"the scenario failed (exit {vm.returncode}); logs in {out}: "
              f"{vm.log.strip().splitlines()[-3:]}", file=sys.stderr)
        return 1
    results = {name: Result(name) for name in PAIRS}
    for name, tag in order:
        results[name].add(out / f"meter-{tag}")
    print(header("hubcap -> UDP 127.0.0.1 -> second card, plain ALSA in the test VM"))
    rows = []
    for r in results.values():
        every = [d for run in r.runs for d in run]
        rows.append([r.name, f"{median(every):.1f}" if every else "-",
                     f"{percentile(every, 95):.1f}" if every else "-",
                     f"{min(every):.1f}-{max(every):.1f}" if every else "-",
                     " ".join(f"{median(run):.1f}" if run else "-" for run in r.runs),
                     " ".join(str(g) for g in r.gaps) or "-",
                     " ".join(str(m) for m in r.missed) or "-", str(r.unaligned)])
    print(table(["pair", "median ms", "p95 ms", "min-max ms", "run medians ms", "gaps per run",
                 "chirps missed", "runs not aligned"], rows))
    print("\ncheck: one aplay into both cards at once (delay 0 by construction): what it "
          "shows is the alignment's error. trx: trx-tx -d hubcap | trx-rx -d "
          "hw:Speakers,0,0 (defaults, SCHED_FIFO 80). deskcast: send -s alsa:hubcap | "
          "receive -o alsa:hw:Speakers,0,0 (defaults).")
    print(f"{args.runs} run(s) x {args.seconds:.0f} s per pair, interleaved; VM boot "
          f"{vm.boot_s:.1f} s, {vm.wall_s:.0f} s wall, {vm.cpu_s:.0f} s CPU "
          f"(started {time.strftime('%Y-%m-%d %H:%M', time.localtime(began))}); "
          f"recordings in {out}")
    for r in results.values():
        for note in r.notes:
            print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
