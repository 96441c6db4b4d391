"""How fast ``deskcast route`` switches, measured from the sound that comes out.

A private PulseAudio (or PipeWire) has one 6-channel null sink ``meter`` with the stereo sinks
``hub``, ``out`` and ``remote`` remapped onto its channels 0-1, 2-3 and 4-5 (``rig.meter``).
The route daemon takes ``hub`` as its hub (``[hub] sink_name``) and ``out`` as the speakers
(``[route] speakers``); a ``deskcast receive`` on 127.0.0.1 plays into ``remote`` (the other
computer). pacat plays a steady 440 Hz tone at -15 dBFS into the hub throughout, and
``meter.monitor`` is recorded into one file: every destination on one sample clock. A thread
notes when each piece of the recording arrives; the earliest arrival for its length puts
frame 0 on the monotonic clock (to a few ms), so that the moment a switch was asked for is a
frame of the recording too.

Each cycle switches local -> host -> none, once asking the daemon directly on its control
socket (what the daemon takes: the README's figure), once with the ``deskcast route X``
command (Python's start-up included). For every switch, from the moment it was asked:

* **sound**: the first 5 ms block at or above -40 dBFS at the new destination;
* **silent**: the end of the last 5 ms block at or above -60 dBFS at the old destination
  before the next switch (the loopback's buffer, or what the receiver still had, then its
  concealment and fade).

A null sink's monitor hears the audio when the sink mixes it; a sound card would play it
later by the sink's latency. The figures checked are the README's upper ones (sound at the
new destination within 0.05 s (local) and 0.14 s (host) after the daemon got the request,
within 0.55 s of the start of the `deskcast route X` command; PipeWire: 0.13 s local, 0.30 s
host): the script exits 1 if the median or the 95th percentile of a row is above its figure.

    .venv/bin/python bench/switch.py                  # 10 cycles on PulseAudio (~2 min)
    .venv/bin/python bench/switch.py --cycles 20 --server pipewire
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests"), str(_ROOT / "src")]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from bench.common import (  # noqa: E402
    DESKCAST,
    RATE,
    BenchError,
    FrameClock,
    MachineLoad,
    Procs,
    Progress,
    add_server_priority,
    block_levels_db,
    free_port_pair,
    header,
    load_summary,
    median,
    percentile,
    table,
    wait_for_log,
)
from deskcast.route import client  # noqa: E402
from rig.meter import Meter, MeterRecording, SignalPlayer  # noqa: E402
from rig.soundserver import SoundServer, SoundServerError  # noqa: E402

LAYOUT = Meter(("hub", "out", "remote"), RATE)
BLOCK = RATE // 200
"""5 ms analysis blocks."""
SOUND_DB = -40.0
"""A block at or above this is sound (the tone is at -15 dBFS)."""
SILENT_DB = -60.0
"""... and the old destination is silent from the end of its last block at or above this."""
HOLD_S = 1.2
"""How long each route is held once its sound came (or did not within ``WAIT_S``)."""
WAIT_S = 5.0

DOCUMENTED: dict[str, dict[tuple[str, str], float]] = {
    "pulseaudio": {("local", "daemon"): 0.05, ("host", "daemon"): 0.14,
                   ("local", "command"): 0.55, ("host", "command"): 0.55},
    "pipewire": {("local", "daemon"): 0.13, ("host", "daemon"): 0.30},
}
"""README.md's upper figures (seconds from the request to sound at the new destination)."""


class Tone:
    """A steady 440 Hz sine at -15 dBFS for :class:`rig.meter.SignalPlayer`."""

    rate = RATE

    def pcm(self, start: int, frames: int) -> bytes:
        t = (start + np.arange(frames, dtype=np.float64)) / self.rate
        amp = 10 ** (-15 / 20) * math.sqrt(2)
        s16 = np.round(amp * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2")
        return np.repeat(s16[:, None], 2, axis=1).tobytes()


def block_levels(rec: MeterRecording, sink: str, start: int, stop: int
                 ) -> npt.NDArray[np.float64]:
    """RMS dBFS of each 5 ms block of ``sink``'s pair of channels in frames [start, stop)."""
    ch = LAYOUT.channel(sink)
    return block_levels_db(rec.read(start, stop)[:, ch: ch + 2], RATE, 1000 * BLOCK / RATE)


def first_sound(rec: MeterRecording, sink: str, start: int, timeout: float) -> int | None:
    """The first frame at or after ``start`` of a block with sound at ``sink``, waiting up to
    ``timeout`` seconds for it to be recorded."""
    deadline = time.monotonic() + timeout
    checked = start
    while True:
        upto = rec.frames()
        levels = block_levels(rec, sink, checked, upto)
        hits = np.flatnonzero(levels >= SOUND_DB)
        if hits.size:
            return checked + int(hits[0]) * BLOCK
        checked += len(levels) * BLOCK
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def last_sound_end(rec: MeterRecording, sink: str, start: int, stop: int) -> int | None:
    """The end of the last block at or above SILENT_DB in [start, stop) (None: none)."""
    levels = block_levels(rec, sink, start, stop)
    hits = np.flatnonzero(levels >= SILENT_DB)
    return None if hits.size == 0 else start + (int(hits[-1]) + 1) * BLOCK


@dataclass
class Switch:
    to: str
    asked: str
    """'daemon' (its control socket) or 'command' (`deskcast route X`)."""
    frame: int
    sound_s: float | None = None
    old: str | None = None
    silent_s: float | None = None


@dataclass
class Rig:
    server: SoundServer
    env: dict[str, str]
    socket: Path
    host: str
    workdir: Path
    switches: list[Switch] = field(default_factory=list)

    def ask(self, word: str, how: str) -> None:
        target = self.host if word == "host" else word
        if how == "daemon":
            answer = client.request({"cmd": "route", "targets": [target]}, self.socket)
            if not answer.get("ok"):
                raise BenchError(f"route {target}: {answer}")
            return
        res = subprocess.run([*DESKCAST, "route", target], env=self.env, capture_output=True,
                             timeout=30, check=False)
        if res.returncode != 0:
            raise BenchError(f"deskcast route {target}: {res.stderr.decode().strip()}")


DESTINATION = {"local": "out", "host": "remote", "none": None}


def run_cycles(rig: Rig, rec: MeterRecording, clock: FrameClock, cycles: int,
               progress: Progress) -> None:
    current = "none"
    for cycle in range(cycles):
        for how in ("daemon", "command"):
            for word in ("local", "host", "none"):
                t_ask = time.monotonic()
                rig.ask(word, how)
                sw = Switch(word, how, max(0, round(clock.frame_at(t_ask))),
                            old=DESTINATION[current])
                new = DESTINATION[word]
                if new is not None:
                    at = first_sound(rec, new, sw.frame, WAIT_S)
                    if at is not None:
                        sw.sound_s = (at - sw.frame) / RATE
                time.sleep(HOLD_S)
                if rig.switches:  # the one before: its old destination, up to this switch
                    prev = rig.switches[-1]
                    if prev.old is not None:
                        end = last_sound_end(rec, prev.old, prev.frame, sw.frame)
                        prev.silent_s = 0.0 if end is None else (end - prev.frame) / RATE
                rig.switches.append(sw)
                current = word
        progress(f"cycle {cycle + 1}/{cycles}: " + ", ".join(
            f"{s.to}/{s.asked[0]} {fmt_s(s.sound_s)}" for s in rig.switches[-6:] if s.to != "none"))
    last = rig.switches[-1]
    if last.old is not None:
        end = last_sound_end(rec, last.old, last.frame, rec.frames())
        last.silent_s = 0.0 if end is None else (end - last.frame) / RATE


def fmt_s(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


@contextlib.contextmanager
def route_rig(server: SoundServer, workdir: Path, procs: Procs) -> Iterator[Rig]:
    """The daemon (hub: ``hub``, speakers: ``out``) and a receiver playing into ``remote``."""
    runtime = Path(tempfile.mkdtemp(prefix="dcsw-"))  # short: Unix socket path limit
    runtime.chmod(0o700)
    home = workdir / "home"
    (home / "config" / "deskcast").mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        web = s.getsockname()[1]
    (home / "config" / "deskcast" / "config.toml").write_text(
        f'[route]\nspeakers = "out"\nweb_listen = "127.0.0.1:{web}"\n[hub]\nsink_name = "hub"\n')
    env = dict(server.env, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"), XDG_RUNTIME_DIR=str(runtime))
    env.pop("DESKCAST_CONFIG", None)
    port = free_port_pair()
    rx = procs.start("receive", [*DESKCAST, "-v", "receive", f"127.0.0.1:{port}", "-o",
                                 "pulse:remote", "-q"], env)
    wait_for_log(rx, "listening for RTP")
    sock = runtime / "deskcast" / "control.sock"
    rig = Rig(server, env, sock, f"127.0.0.1:{port}", workdir)
    try:
        rig.ask("none", "command")  # starts the daemon
        time.sleep(2.0)  # its spare process has done its imports, as on a desktop
        yield rig
    finally:
        with contextlib.suppress(Exception):
            client.request({"cmd": "route", "targets": ["none"]}, sock)
        with contextlib.suppress(Exception):
            client.request({"cmd": "stop"}, sock)
        deadline = time.monotonic() + 10
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(runtime, ignore_errors=True)


@contextlib.contextmanager
def _hub_is_default(server: SoundServer) -> Iterator[None]:
    """The hub is the default sink before the recording starts, as on a desktop after `hub
    setup`: when the daemon made it so later, PulseAudio moved the recording of
    ``meter.monitor`` (the default source follows the default sink) to ``hub.monitor``."""
    server.set_default_sink("hub")
    yield


def report(kind: str, switches: list[Switch]) -> tuple[str, list[str]]:
    """The table, and the rows that miss their documented figure."""
    rows: list[list[str]] = []
    failed: list[str] = []
    documented = DOCUMENTED.get(kind, {})
    for to in ("local", "host"):
        for how in ("daemon", "command"):
            got = [s.sound_s for s in switches if s.to == to and s.asked == how]
            values = [v for v in got if v is not None]
            limit = documented.get((to, how))
            verdict = ""
            if limit is not None and values:
                ok = median(values) <= limit and percentile(values, 95) <= limit
                verdict = "ok" if ok else "NOT MET"
                if not ok:
                    failed.append(f"sound at {to}, asked of the {how}")
            if len(values) < len(got):
                verdict += f" ({len(got) - len(values)} without sound)"
                failed.append(f"{to}: no sound within {WAIT_S:g} s")
            rows.append(_row(f"{to}: sound", how, values,
                             "-" if limit is None else f"<= {limit:.2f}", verdict))
    for old in ("local", "host"):
        for how in ("daemon", "command"):
            values = [s.silent_s for s in switches if s.silent_s is not None and s.asked == how
                      and s.old == DESTINATION[old]]
            rows.append(_row(f"{old}: silent", how, values, "-", ""))
    headers = ["switch", "asked of", "n", "min s", "median s", "p95 s", "max s",
               "documented", ""]
    return table(headers, rows, [False, False, True, True, True, True, True, False,
                                 False]), failed


def _row(name: str, how: str, values: list[float], doc: str, verdict: str) -> list[str]:
    if not values:
        return [name, how, "0", "-", "-", "-", "-", doc, verdict]
    return [name, how, str(len(values)), f"{min(values):.3f}", f"{median(values):.3f}",
            f"{percentile(values, 95):.3f}", f"{max(values):.3f}", doc, verdict]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10,
                        help="cycles of local, host, none asked of the daemon and then of the "
                        "command (10)")
    parser.add_argument("--server", choices=("pulseaudio", "pipewire"), default="pulseaudio")
    add_server_priority(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="every switch's figures")
    args = parser.parse_args()
    progress = Progress(args.quiet)
    prio = f"{args.server_priority} " if args.server == "pulseaudio" else ""
    print(header(f"Route switches: {args.cycles} x (local, host, none) asked of the daemon and "
                 f"of the command, measured at the destinations ({prio}{args.server})"),
          flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="deskcast-switch-"))
    server = SoundServer(args.server, realtime=args.server == "pulseaudio"
                         and args.server_priority == "realtime",
                         min_quantum=2048 if args.server == "pipewire" else None)
    load = MachineLoad().start()
    try:
        server.start()
        with LAYOUT.installed(server), Procs(workdir) as procs, \
                _hub_is_default(server), \
                MeterRecording(LAYOUT, workdir / "meter.raw", server) as rec, \
                SignalPlayer(server, "hub", Tone(), 3600.0, latency_ms=500), \
                FrameClock(rec) as clock, route_rig(server, workdir, procs) as rig:
            time.sleep(0.5)
            run_cycles(rig, rec, clock, args.cycles, progress)
            procs.check_alive()
    except (BenchError, SoundServerError) as err:
        print(f"failed: {err}")
        return 1
    finally:
        server.stop()
        load.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    text, failed = report(args.server, rig.switches)
    print()
    print(text)
    print()
    print("sound: from the request to the first 5 ms block >= -40 dBFS at the new destination; "
          "silent: from the request to the end of the old destination's last block >= -60 "
          "dBFS before the next switch. Measured at the null sinks' monitors (a sound card "
          "plays later by its sink's latency). documented: README.md's upper figure; a row "
          "passes if its median and 95th percentile are within it.")
    if args.verbose:
        for s in rig.switches:
            print(f"  {s.to:5s} ({s.asked}): sound {fmt_s(s.sound_s)} s, old silent "
                  f"{fmt_s(s.silent_s)} s")
    summary = load_summary([load])
    if summary:
        print(summary)
    if failed:
        print("NOT MET: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
