"""trx and deskcast on plain ALSA, measured from the sound: the latency benchmark on real
``snd-aloop`` cards, in the test VM (no sound server anywhere).

The trx guide's set-up, as ``deskcast hub setup --backend alsa`` writes it: applications play
through the ``dmix`` default into ``hw:Loopback,0,0``; the sender under test captures
``hubcap`` (a ``dsnoop`` on ``hw:Loopback,1,0``), sends over UDP on the VM's 127.0.0.1, and the
receiver plays into a second card, ``hw:Speakers,0,0``. One ``arecord`` records a 4-channel
ALSA ``multi`` device made of the hub's dsnoop (channels 0-1) and ``hw:Speakers,1,0``
(channels 2-3), started together: the hub and the output on one sample clock (both loopback
cards run on the kernel's one timer). ``aplay`` plays the marker signal of
:mod:`rig.meter` (1 kHz bed, a chirp every 0.5 s) into the hub; each chirp's delay is a
sample offset in that recording, and gaps are runs of silence in the output.

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
from rig.meter import EventTracker, MarkerSignal, Meter  # noqa: E402
from rig.signals import read_wav  # noqa: E402
from rig.vm import run_scenario  # noqa: E402

RATE = 48000
METER_PCM = """
pcm.meter {
    type multi
    slaves.a.pcm "deskcast_hubsnoop"
    slaves.a.channels 2
    slaves.b.pcm "hw:Speakers,1,0"
    slaves.b.channels 2
    bindings.0 { slave a; channel 0; }
    bindings.1 { slave a; channel 1; }
    bindings.2 { slave b; channel 0; }
    bindings.3 { slave b; channel 1; }
}
"""

PAIRS = {
    "trx": ('chrt -f 80 trx-rx -d hw:Speakers,0,0 -p $PORT > rx-$TAG.log 2>&1 & RX=$!\n'
            'sleep 1\n'
            'chrt -f 80 trx-tx -d hubcap -h 127.0.0.1 -p $PORT > tx-$TAG.log 2>&1 & TX=$!\n'
            'sleep 2\n',
            'kill $TX $RX; wait $TX $RX\n'),
    "deskcast": ('dc rx-$TAG -v receive 127.0.0.1:$PORT -o alsa:hw:Speakers,0,0 '
                 '--stats-json rx-$TAG.json\n'
                 'wait_log rx-$TAG.log "listening for RTP" 90\n'
                 'dc tx-$TAG -v send 127.0.0.1:$PORT -s alsa:hubcap\n'
                 'wait_log tx-$TAG.log "playing alsa:hubcap" 90; sleep 2\n',
                 'dc_stop tx-$TAG; dc_stop rx-$TAG\n'),
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
cat meter.conf >> "$HOME/.asoundrc"
"""

RUN = r"""
TAG={tag}; PORT={port}
{start}mark start-$TAG
arecord -q -D meter -c 4 -f S16_LE -r 48000 -d {record_s} $OUT/meter-$TAG.wav 2> rec-$TAG.log &
REC=$!
sleep 0.5; chrt -f 95 aplay -q marker.wav
wait $REC
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

    def add(self, path: Path) -> None:
        tracker = EventTracker(WavRecording(path))  # type: ignore[arg-type]
        tracker.update()
        self.runs.append([e.delay_ms for e in tracker.events])
        self.gaps.append(len(tracker.gaps))
        self.missed.append(len(tracker.missed))


def write_marker(path: Path, seconds: float) -> None:
    import soundfile as sf

    signal = MarkerSignal(RATE)
    frames = round(seconds * RATE)
    stereo = np.frombuffer(signal.pcm(0, frames), dtype="<i2").reshape(-1, 2)
    sf.write(str(path), stereo, RATE, subtype="PCM_16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per pair (3)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="marker signal per run, in seconds (60)")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings and logs in DIR")
    args = parser.parse_args()
    out = Path(args.keep or tempfile.mkdtemp(prefix="deskcast-latency-alsa-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out / "marker.wav", args.seconds)
    (out / "meter.conf").write_text(METER_PCM)
    script, order = SCENARIO_HEAD, []
    for run in range(args.runs):
        for i, (name, (start, stop)) in enumerate(PAIRS.items()):
            tag = f"{name}-{run}"
            order.append((name, tag))
            script += RUN.format(tag=tag, port=5100 + 2 * (run * len(PAIRS) + i),
                                 start=start, stop=stop, record_s=round(args.seconds + 2))
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
        results[name].add(out / f"meter-{tag}.wav")
    print(header("hubcap -> UDP 127.0.0.1 -> second card, plain ALSA in the test VM"))
    rows = []
    for r in results.values():
        every = [d for run in r.runs for d in run]
        rows.append([r.name, f"{median(every):.1f}" if every else "-",
                     f"{percentile(every, 95):.1f}" if every else "-",
                     " ".join(f"{median(run):.1f}" if run else "-" for run in r.runs),
                     " ".join(str(g) for g in r.gaps), " ".join(str(m) for m in r.missed)])
    print(table(["pair", "median ms", "p95 ms", "run medians ms", "gaps per run",
                 "chirps missed"], rows))
    print(f"\n{args.runs} run(s) x {args.seconds:.0f} s per pair, interleaved; VM boot "
          f"{vm.boot_s:.1f} s, {vm.wall_s:.0f} s wall, {vm.cpu_s:.0f} s CPU "
          f"(started {time.strftime('%Y-%m-%d %H:%M', time.localtime(began))}); "
          f"recordings in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
