"""SCHED_FIFO for the audio thread: granted where allowed, one warning where not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .conftest import Cli


def test_audio_thread_gets_sched_fifo_when_allowed(cli: Cli) -> None:
    if os.geteuid() != 0:
        pytest.skip("SCHED_FIFO is only sure to be granted to root")  # CI runs as root
    result = cli.run("-vv", "play", "tone", "null", "-t", "0.2", "--rtprio", "70")
    assert result.returncode == 0, result.stderr
    assert b"runs SCHED_FIFO 70" in result.stderr


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
    assert len(result.stdout) == 14400 * 4  # the audio still came out in full
    quiet = subprocess.run([*argv[:-4], "--rtprio", "0", *argv[-4:]], capture_output=True,
                           env=cli.env, timeout=30, check=False)
    assert quiet.returncode == 0 and quiet.stderr == b""
