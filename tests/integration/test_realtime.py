"""SCHED_FIFO for the audio thread: granted where allowed, one warning where not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rig.signals import dominant_frequency

from .conftest import DESKCAST, Cli

SCHED_FIFO = 1


def thread_policies(pid: int) -> list[tuple[int, int, int]]:
    """(thread id, scheduling policy, real-time priority) of each thread of ``pid``, as the
    kernel has them (/proc/PID/task/TID/stat fields 41 and 40)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3
        out.append((int(task.name), int(fields[38]), int(fields[37])))
    return out


def test_audio_thread_gets_sched_fifo_when_allowed(cli: Cli) -> None:
    """The kernel, not only the log, has one thread of the playing process at SCHED_FIFO 70,
    and the process' main thread stays an ordinary one."""
    if os.geteuid() != 0:
        pytest.skip("SCHED_FIFO is only sure to be granted to root")  # CI runs as root
    proc = subprocess.Popen([*DESKCAST, "-vv", "play", "tone", "null", "-t", "3",
                             "--rtprio", "70"], env=cli.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen: list[tuple[int, int, int]] = []
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and proc.poll() is None:
            seen = thread_policies(proc.pid)
            if any(policy == SCHED_FIFO for _, policy, _ in seen):
                break
            time.sleep(0.02)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    fifo = [(tid, prio) for tid, policy, prio in seen if policy == SCHED_FIFO]
    assert len(fifo) == 1 and fifo[0][1] == 70, seen
    assert fifo[0][0] != proc.pid, seen  # not the main thread
    assert b"runs SCHED_FIFO 70" in err


def test_refused_rt_priority_is_one_warning_and_audio_goes_on(cli: Cli) -> None:
    """Drop CAP_SYS_NICE and set RLIMIT_RTPRIO to 0, as for an ordinary user."""
    assert shutil.which("setpriv") and shutil.which("prlimit")
    argv = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice",
            "prlimit", "--rtprio=0", sys.executable, "-m", "deskcast", "play", "tone", "-",
            "-t", "0.3"]
    result = subprocess.run(argv, capture_output=True, env=cli.env, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("deskcast: warning: cannot get real-time priority 80")
    assert "--rtprio 0" in lines[0]
    # The audio still came out in full, and it is the tone (440 Hz, s16le stereo).
    assert len(result.stdout) == 14400 * 4
    pcm = np.frombuffer(result.stdout, dtype="<i2").reshape(-1, 2) / 32768.0
    assert dominant_frequency(pcm, 48000) == pytest.approx(440.0, abs=0.5)
    quiet = subprocess.run([*argv[:-4], "--rtprio", "0", *argv[-4:]], capture_output=True,
                           env=cli.env, timeout=30, check=False)
    assert quiet.returncode == 0 and quiet.stderr == b""
