"""Start ``deskcast`` programs inside the test VM without paying Python's start-up each time.

Under the emulator a fresh ``python -m deskcast`` needs 10-25 s before its first line (the
interpreter alone 1.5-3 s, numpy and PyAV another 15): a scenario of a dozen programs would
spend minutes starting them, and a program that starts while another is judged in real time
steals the one emulated CPU from it. This launcher imports deskcast's modules once, then
forks a child per request, as the route daemon's spare child does: the child runs
``deskcast.cli.main(ARGS)`` exactly as the console script would, from the imports on.

Requests are lines on a FIFO: ``NAME<TAB>CWD<TAB>ARG...``. The child's standard output goes to
``NAME.out`` and its standard error to ``NAME.log`` (both in CWD); its pid is written to
``NAME.pid`` once it runs, its exit status to ``NAME.rc`` when it ends. Shell helpers for
scenarios are in :data:`rig.vm.LAUNCH_HELPERS`.

One request is the rig's own: ``NAME<TAB>CWD<TAB>@wait-sound<TAB>DEVICE<TAB>SECONDS`` records
from the ALSA capture DEVICE until a 100 ms stretch is louder than -40 dBFS (then prints the
seconds it waited and exits 0) or SECONDS pass (exits 1): how a scenario knows that a
destination plays before it records the stretch the test judges.

Another is the benchmark's meter: ``NAME<TAB>CWD<TAB>@record<TAB>SECONDS<TAB>PREFIX<TAB>DEVICE...``
captures each ALSA DEVICE (48 kHz, S16_LE, stereo) in a thread of its own at SCHED_FIFO
:data:`RECORD_PRIORITY` for SECONDS of frames, prints ``recording`` once every device has
delivered its first block, and then writes ``PREFIX-I.raw`` (device I's frames) and
``PREFIX.json``: per device, the frame position after each read (frames read so far plus what
``snd_pcm_avail`` reports left in the buffer) with ``CLOCK_MONOTONIC`` just after that query,
the overruns, and the CPU seconds the meter used. :mod:`rig.alsameter` maps each device's
frames onto the one clock from those pairs and lines the recordings up.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any

WARM = ("deskcast.cli", "deskcast.pump", "deskcast.capture.alsa", "deskcast.playback.alsa",
        "deskcast.transport.sender", "deskcast.transport.receiver", "deskcast.encode.opus",
        "deskcast.decode.opus", "deskcast.route.daemon", "deskcast.route.client",
        "deskcast.hub.alsa", "deskcast.playback.file", "deskcast.capture.file")


def _child(name: str, cwd: str, argv: list[str]) -> None:
    """In the forked child: become ``deskcast ARGV`` and never return."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(cwd)
        for fd, suffix in ((1, ".out"), (2, ".log")):
            target = os.open(f"{name}{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.argv = ["deskcast", *argv]
        Path(f"{name}.pid.tmp").write_text(f"{os.getpid()}\n")
        os.replace(f"{name}.pid.tmp", f"{name}.pid")
        if argv[:1] == ["@wait-sound"]:
            code = _wait_sound(argv[1], float(argv[2]))
        elif argv[:1] == ["@record"]:
            code = _record(float(argv[1]), argv[2], argv[3:])
        else:
            from deskcast import cli

            code = cli.main(argv)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException as err:  # the scenario reads NAME.log: say what broke
        print(f"vmlaunch: {name}: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _wait_sound(device: str, timeout_s: float) -> int:
    import time

    import alsaaudio
    import numpy as np

    start = time.monotonic()
    pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=device, channels=2, rate=48000,
                        format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=4800)
    while time.monotonic() - start < timeout_s:
        frames, data = pcm.read()
        if frames > 0:
            block = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
            if np.sqrt(np.mean(block * block)) > 10 ** (-40 / 20):
                print(f"{time.monotonic() - start:.2f}")
                return 0
    return 1


RECORD_PRIORITY = 85
"""The meter's SCHED_FIFO priority: above the programs it measures (80, trx-rx up to 90 in the
tests), so a slow emulated CPU never makes it overrun, below the marker's ``aplay`` (95)."""
RECORD_RATE = 48000
RECORD_PERIOD = 960
RECORD_PERIODS = 16
"""A 320 ms capture buffer (a ``dsnoop`` imposes its own period, 256 frames for the hub's: then
as many of those; with 85 ms the hub overran in the VM while trx ran). About 50 readings of
the position a second are kept: on the emulated CPU each costs ~0.5 ms of the meter's time."""


def _record(seconds: float, prefix: str, devices: list[str]) -> int:
    import json
    import threading
    import time

    import alsaaudio

    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RECORD_PRIORITY))
    want = round(seconds * RECORD_RATE)
    started = [threading.Event() for _ in devices]
    found: list[dict[str, object]] = [{} for _ in devices]

    def open_pcm(device: str, periods: int) -> Any:
        return alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=device, channels=2,
                             rate=RECORD_RATE, format=alsaaudio.PCM_FORMAT_S16_LE,
                             periodsize=RECORD_PERIOD, periods=periods)

    def capture(i: int, device: str) -> None:
        chunks: list[bytes] = []
        overrun_at: list[float] = []
        marks: list[tuple[int, int, float]] = []
        overruns: list[int] = []
        got = 0
        try:
            pcm = open_pcm(device, RECORD_PERIODS)
            info = pcm.info()
            if info["buffer_size"] < RECORD_PERIOD * RECORD_PERIODS:  # a dsnoop's own period
                pcm.close()
                pcm = open_pcm(device, RECORD_PERIOD * RECORD_PERIODS // info["period_size"])
                info = pcm.info()
            every = max(1, RECORD_RATE // 50 // info["period_size"])  # ~50 readings a second
            reads = 0
            while got < want:
                frames, data = pcm.read()
                if frames < 0:
                    overruns.append(got)
                    overrun_at.append(time.monotonic())
                    continue
                chunks.append(data)
                got += frames
                reads += 1
                if reads % every == 0:
                    avail = pcm.avail()
                    now = time.monotonic()
                    if avail < 0:  # -EPIPE: it overran since the read
                        overruns.append(got)
                        overrun_at.append(now)
                    else:
                        marks.append((got, avail, now))
                started[i].set()
            pcm.close()
            Path(f"{prefix}-{i}.raw").write_bytes(b"".join(chunks))
            found[i] = {"device": device, "frames": got, "marks": marks, "overruns": overruns,
                        "overrun_at": overrun_at, "period": info.get("period_size"),
                        "buffer": info.get("buffer_size")}
        except Exception as err:  # the scenario reads NAME.log: say which device broke
            print(f"@record: {device}: {type(err).__name__}: {err}", file=sys.stderr)
            found[i] = {"device": device, "error": str(err)}
        finally:
            started[i].set()

    threads = [threading.Thread(target=capture, args=(i, d), daemon=True)
               for i, d in enumerate(devices)]
    for thread in threads:
        thread.start()
    for event in started:
        event.wait()
    print("recording", flush=True)
    for thread in threads:
        thread.join()
    cpu = os.times()
    Path(f"{prefix}.json").write_text(json.dumps({
        "rate": RECORD_RATE, "seconds": seconds, "cpu_s": cpu.user + cpu.system,
        "priority": os.sched_getparam(0).sched_priority, "streams": found}))
    return 1 if any("error" in f for f in found) else 0


def serve(fifo: Path, ready: Path) -> None:
    for module in WARM:
        importlib.import_module(module)
    fd = os.open(fifo, os.O_RDWR)  # read-write: no end of file between writers
    children: dict[int, tuple[str, str]] = {}
    pending = b""
    ready.write_text(f"{os.getpid()}\n")
    while True:
        readable, _, _ = select.select([fd], [], [], 0.05)
        if readable:
            pending += os.read(fd, 65536)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip() == b"quit":
                    return
                name, cwd, *argv = line.decode().split("\t")
                pid = os.fork()
                if pid == 0:
                    _child(name, cwd, argv)
                children[pid] = (name, cwd)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in children:
                name, cwd = children.pop(pid)
                rc = os.waitstatus_to_exitcode(status)
                Path(cwd, f"{name}.rc").write_text(f"{rc if rc >= 0 else 128 - rc}\n")


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
