"""The private PulseAudio every benchmark runs: the sinks ``hub`` and ``out`` on one meter
(``rig.meter``: both recorded on one sample clock), restarted if it dies."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from bench.common.procs import BenchError
from rig import SoundServer
from rig.meter import Meter

RATE = 48000
METER = Meter(("hub", "out"), RATE)
"""Every benchmark's sinks: what plays into ``hub`` and what the pipeline plays into ``out``
are recorded together from ``meter.monitor``, on one sample clock."""


def add_server_priority(parser: argparse.ArgumentParser) -> None:
    """``--server-priority``: how the private PulseAudio runs its I/O threads."""
    parser.add_argument("--server-priority", choices=("realtime", "normal"), default="realtime",
                        help="PulseAudio's I/O threads: real-time (default, as a desktop's "
                        "PulseAudio gets from rtkit) or normal (like the test suite's server)")


class BenchServer:
    """A private PulseAudio with the sinks ``hub`` and ``out`` on one :class:`rig.meter.Meter`
    (``meter``: hub on channels 0-1, out on 2-3; record ``meter.monitor`` to have both on one
    sample clock), restarted if it dies.

    :attr:`env` reaches the server and gives deskcast an empty private config; :attr:`workdir`
    holds signals, logs and statistics (kept after the run if ``BENCH_KEEP`` is set).
    """

    def __init__(self, *, realtime: bool = False, meter: Meter = METER) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="deskcast-bench-"))
        self.realtime = realtime
        self.meter = meter
        """The sinks (``hub`` and ``out`` unless a benchmark wants others, e.g. rooms)."""
        """PulseAudio's I/O threads at real-time priority, as on a desktop (rtkit)."""
        self._server: SoundServer | None = None
        self._meter: contextlib.AbstractContextManager[Meter] | None = None
        self.env: dict[str, str] = {}
        self.deaths: list[str] = []
        """For each time the server was found dead: the tail of its log."""

    @property
    def server(self) -> SoundServer:
        return self.ensure()

    def ensure(self) -> SoundServer:
        """The running server (a new one if the last one died)."""
        if self._server is not None and self._server.running:
            return self._server
        self._bury()
        server = SoundServer("pulseaudio", realtime=self.realtime)
        self._server = server
        server.start()
        self._meter = self.meter.installed(server)
        self._meter.__enter__()  # gone with the server
        env = dict(server.env)
        home = self.workdir / "home"
        for sub in ("config", "state"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
                   XDG_STATE_HOME=str(home / "state"))
        env.pop("DESKCAST_CONFIG", None)
        self.env = env
        return server

    def _bury(self) -> str:
        """Note a dead server's log tail, stop what is left of it; returns the tail."""
        if self._server is None:
            return ""
        tail = self._server.log_tail(20)
        self.deaths.append(tail)
        (self.workdir / f"server-death-{len(self.deaths)}.log").write_text(tail)
        self._server.stop()
        self._server = None
        return tail

    def check(self) -> None:
        """Raise BenchError if the server died (during the run that just ended)."""
        if self._server is not None and not self._server.running:
            tail = self._bury()
            raise BenchError("the PulseAudio server died during the run:\n" +
                             "\n".join(tail.splitlines()[-6:]))

    def __enter__(self) -> BenchServer:
        self.ensure()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.stop()
        if os.environ.get("BENCH_KEEP"):
            print(f"(logs kept in {self.workdir})", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
