"""The route daemon's spare child (``python -m deskcast.spare``): it runs the command line it is
handed as ``deskcast`` would, ends quietly on an empty standard input and refuses garbage."""

from __future__ import annotations

import subprocess
import sys

from deskcast import __version__


def spare(stdin: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deskcast.spare"], input=stdin.decode(),
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_spare_runs_the_command_line_it_is_handed() -> None:
    done = spare(b'["--version"]\n')
    assert (done.returncode, done.stdout.strip()) == (0, f"deskcast {__version__}")


def test_an_empty_stdin_ends_it_quietly() -> None:
    done = spare(b"")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_malformed_command_line_is_refused() -> None:
    done = spare(b'{"not": "a list"}\n')
    assert done.returncode == 2
    assert "malformed command line" in done.stderr
