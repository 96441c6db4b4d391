"""The route daemon's pre-started ``deskcast`` child for the next leg, an entry point beside
``__main__`` (``python -m deskcast.spare``): its imports (~0.3 s of a switch, more on a loaded
machine) are done before it is needed. It waits for its command line — one JSON list
on standard input — then runs it like ``deskcast ARGS…`` and exits with its status (the rest
of standard input is the command's). An empty standard input (the daemon stopped) ends it
quietly."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys

WARM = ("deskcast.cli", "deskcast.pump", "deskcast.capture.pulse", "deskcast.capture.alsa",
        "deskcast.transport.sender", "deskcast.encode.opus", "deskcast.playback.alsa",
        "deskcast.http.app", "deskcast.encode.mp3")


def _first_line(fd: int) -> bytes:
    """One line of ``fd``, read a byte at a time: what follows it stays unread, for the command
    (``send --destinations-from-stdin`` reads its commands there)."""
    line = bytearray()
    while not line.endswith(b"\n") and (byte := os.read(fd, 1)):
        line += byte
    return bytes(line)


def main() -> int:
    for name in WARM:
        # e.g. no libpulse on a plain-ALSA machine: what a leg needs is imported when it runs
        with contextlib.suppress(ImportError, OSError):
            importlib.import_module(name)
    line = _first_line(sys.stdin.fileno())
    if not line.strip():
        return 0
    argv = json.loads(line)
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        print("deskcast: error: the spare process got a malformed command line",
              file=sys.stderr)
        return 2
    from deskcast import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
