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
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import sys
from pathlib import Path

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
