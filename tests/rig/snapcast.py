"""A private Snapcast (Debian's ``snapserver``/``snapclient``, 0.26): the anchor that rooms in
sync are measured against.

:class:`Snapcast` writes its own ``snapserver.conf`` into a work directory (never
``/etc/snapserver.conf``), with free loopback ports for the stream, the JSON-RPC control
(TCP) and HTTP (never the defaults 1704/1705/1780, which a system snapserver may hold), and
starts ``snapserver`` in the foreground. Its one source is a ``process://`` stream: ``parec``
recording ``SOURCE`` (``hub.monitor`` by default) of the private sound server as raw
48000:16:2, the server's environment reaching it. ``buffer_ms`` is Snapcast's end-to-end
buffer (every client plays a chunk at server time + buffer, minus its own output latency; 1000
by default), ``chunk_ms`` how much the server reads at a time (20 by default).

:meth:`Snapcast.add_client` starts a ``snapclient`` (a distinct ``--hostID`` and instance
each) that connects to that port and plays into one sink of the sound server through its
PulseAudio player (``--player pulse:buffer_time=MS``, ``-s SINK``). Every process's stderr
goes to ``NAME.log`` in the work directory, so that a failure says why.

Example::

    with Snapcast(server, workdir, SnapcastSettings(buffer_ms=100, chunk_ms=10)) as snap:
        snap.add_client("room1")
        snap.add_client("room2", player_ms=300)  # a longer output path
        ...
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .soundserver import SoundServer

SNAPSERVER = "snapserver"
SNAPCLIENT = "snapclient"
START_TIMEOUT_S = 10.0


class SnapcastError(RuntimeError):
    """The private snapserver or a snapclient did not start or died (with its log's tail)."""


@dataclass(frozen=True)
class SnapcastSettings:
    buffer_ms: int = 1000
    """``[stream] buffer``: end-to-end latency every client plays at (Snapcast's default)."""
    chunk_ms: int = 20
    """``[stream] chunk_ms``: how much of the source the server reads and sends at a time."""
    codec: str = "flac"
    """``[stream] codec``: flac (Snapcast's default, lossless), pcm, ogg or opus."""
    source_latency_ms: int = 10
    """``parec --latency-msec`` of the process source reading the sound server."""
    player_ms: int = 100
    """The clients' PulseAudio buffer (``--player pulse:buffer_time=MS``, 100 by default): it
    must be well below ``buffer_ms``, or every chunk arrives too late to be played."""

    def describe(self) -> str:
        return (f"buffer {self.buffer_ms} ms, chunks {self.chunk_ms} ms, {self.codec}, "
                f"client pulse buffer {self.player_ms} ms")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class _Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Snapcast:
    """A private snapserver reading ``source`` of ``server`` and its snapclients."""

    def __init__(self, server: SoundServer, workdir: Path,
                 settings: SnapcastSettings | None = None, source: str = "hub.monitor") -> None:
        self.server, self.workdir = server, workdir
        self.settings = settings or SnapcastSettings()
        self.source = source
        self.port = self.control_port = self.http_port = 0
        self._procs: list[_Proc] = []

    def config(self) -> str:
        """The ``snapserver.conf`` (ports are chosen by :meth:`start`)."""
        s = self.settings
        params = "%20".join([f"--device={self.source}", "--format=s16le", "--rate=48000",
                             "--channels=2", "--raw", f"--latency-msec={s.source_latency_ms}",
                             "--client-name=snapserver"])
        return "\n".join([
            "[server]", f"datadir = {self.workdir / 'snapserver'}", "",
            "[http]", "enabled = true", "bind_to_address = 127.0.0.1",
            f"port = {self.http_port}", "doc_root =", "",
            "[tcp]", "enabled = true", "bind_to_address = 127.0.0.1",
            f"port = {self.control_port}", "",
            "[stream]", "bind_to_address = 127.0.0.1", f"port = {self.port}",
            f"source = process:///usr/bin/parec?name=hub&params={params}",
            "sampleformat = 48000:16:2", f"codec = {s.codec}", f"chunk_ms = {s.chunk_ms}",
            f"buffer = {s.buffer_ms}", "",
            "[logging]", "sink = stderr", "filter = *:info", "",
        ])

    def start(self) -> Snapcast:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "snapserver").mkdir(exist_ok=True)
        self.port, self.control_port, self.http_port = (_free_port() for _ in range(3))
        conf = self.workdir / "snapserver.conf"
        conf.write_text(self.config())
        proc = self._spawn("snapserver", [SNAPSERVER, "--config", str(conf)])
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Creating stream acceptor" not in proc.tail(40):
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SnapcastError(f"snapserver did not listen on 127.0.0.1:{self.port}:\n"
                                    f"{proc.tail()}")
            time.sleep(0.05)
        return self

    def add_client(self, sink: str, player_ms: int | None = None, latency_ms: int = 0) -> None:
        """A snapclient playing into ``sink`` with a PulseAudio buffer of ``player_ms`` (the
        settings' by default; a longer output path); ``latency_ms``: snapclient
        ``--latency``, what the device is known to add."""
        index = sum(1 for p in self._procs if p.name.startswith("snapclient")) + 1
        ms = self.settings.player_ms if player_ms is None else player_ms
        player = f"pulse:buffer_time={ms}"
        self._spawn(f"snapclient-{sink}", [
            SNAPCLIENT, "-h", "127.0.0.1", "-p", str(self.port), "--hostID", f"deskcast-{sink}",
            "-i", str(index), "--player", player, "-s", sink, "--latency", str(latency_ms),
            "--logsink", "stderr", "--logfilter", "*:info"])

    def playing_into(self) -> list[str]:
        """The sinks snapclients play into now (a client opens its stream once it has the
        server's stream)."""
        return sorted(s["sink"] for s in self.server.sink_inputs()
                      if s["properties"].get("application.process.binary") == SNAPCLIENT
                      and s["sink"] is not None)

    def check_alive(self) -> None:
        for p in self._procs:
            if p.proc.poll() is not None:
                raise SnapcastError(f"{p.name} exited with status {p.proc.returncode}:\n"
                                    f"{p.tail()}")

    def describe(self) -> str:
        return (f"snapserver ({self.settings.describe()}) <- parec {self.source}; "
                f"snapclient --player pulse -s SINK per room")

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                    env=self.server.env, start_new_session=True,
                                    preexec_fn=_die_with_parent)  # noqa: PLW1509
        p = _Proc(name, proc, log)
        self._procs.append(p)
        return p

    def stop(self) -> None:
        """Clients first, then the server (and the parec it started: its process group)."""
        for p in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, signal.SIGTERM)
            try:
                p.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait(timeout=3)
        self._procs.clear()

    def __enter__(self) -> Snapcast:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
