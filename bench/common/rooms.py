"""The systems bench/rooms.py compares: each carries ``hub.monitor`` to every room's sink
(``room1``, ``room2``, ...) of the private PulseAudio, and is named on the command line by a
spec ``NAME[:KEY=VALUE]...``:

- ``check``: the harness itself: one relay (``parec hub.monitor`` -> ``pacat`` into the meter)
  writes the same samples onto every room's channels in one stream, so every room must be
  0.000 ms from every other; what it shows is the meter's and the detector's own error.
- ``snapcast``: a private snapserver reading ``hub.monitor`` and one snapclient per room
  (:mod:`rig.snapcast`); ``buffer=MS`` (1000), ``chunk=MS`` (20), ``player=MS`` (the clients'
  PulseAudio buffer, 100), ``codec=`` (flac), ``roomN-player=MS`` (one room's own: a longer
  output path).
- ``deskcast``: what ``deskcast route ROOM1 ROOM2 ...`` runs today: one ``deskcast receive -o
  pulse:roomN`` per room on its own port and one ``deskcast send -s pulse:hub.monitor`` per
  room; ``rx=ARGS``/``tx=ARGS`` (extra arguments of every receiver/sender), ``roomN-rx=ARGS``
  (one room's receiver, e.g. ``room2-rx=--buffer-ms 100``: a longer output path), ``fanout=1``
  (one ``deskcast send HOST1 HOST2 ...`` to every receiver instead of a sender per room).

Every spec takes ``label=TEXT`` (the name in the table).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.common.procs import DESKCAST, BenchError, Procs, free_port_pair, wait_for_log
from bench.common.server import BenchServer
from rig.meter import METER
from rig.snapcast import Snapcast, SnapcastError, SnapcastSettings
from rig.soundserver import SoundServerError

Check = Callable[[], None]
"""Raises if a part of the running system died."""


@dataclass(frozen=True)
class System:
    """A named system and its options, as parsed from a spec."""

    kind: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if "label" in self.options:
            return self.options["label"]
        extra = [f"{k}={v}" for k, v in self.options.items()]
        return ":".join([self.kind, *extra])

    def room_option(self, room: str, key: str, default: str = "") -> str:
        return self.options.get(f"{room}-{key}", default)

    def describe(self, rooms: Sequence[str]) -> str:
        if self.kind == "check":
            return (f"parec hub.monitor | the same samples onto the channels of "
                    f"{', '.join(rooms)} | pacat into the meter (one stream)")
        if self.kind == "snapcast":
            s = snapcast_settings(self)
            longer = [f"{r} pulse buffer {self.room_option(r, 'player')} ms" for r in rooms
                      if self.room_option(r, "player")]
            return (f"snapserver {SNAPCAST_VERSION} ({s.describe()}) <- parec hub.monitor; "
                    f"a snapclient --player pulse per room" +
                    (f" ({'; '.join(longer)})" if longer else ""))
        rx, tx = self.options.get("rx", ""), self.options.get("tx", "")
        per_room = "; ".join(f"{r}: receive {self.room_option(r, 'rx')}" for r in rooms
                             if self.room_option(r, "rx"))
        send = ("one deskcast send 127.0.0.1:P1 127.0.0.1:P2 ..." if self.options.get("fanout")
                else "deskcast send 127.0.0.1:PN per room")
        return (f"{send} -s pulse:hub.monitor {tx}".rstrip() +
                f" | deskcast receive :PN -o pulse:roomN {rx}".rstrip() +
                (f" ({per_room})" if per_room else ""))


KINDS = ("check", "snapcast", "deskcast")
_KEYS = {
    "check": re.compile(r"label"),
    "snapcast": re.compile(r"label|buffer|chunk|player|codec|room\d+-player"),
    "deskcast": re.compile(r"label|rx|tx|fanout|room\d+-rx"),
}
SNAPCAST_VERSION = "0.26"


def parse_system(spec: str) -> System:
    """``NAME[:KEY=VALUE]...`` (see the module's doc) as a :class:`System`."""
    kind, *pairs = spec.strip().split(":")
    if kind not in KINDS:
        raise ValueError(f"unknown system {kind!r} (one of {', '.join(KINDS)})")
    options: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _KEYS[kind].fullmatch(key):
            raise ValueError(f"{spec!r}: {pair!r} is not an option of {kind}")
        options[key] = value
    return System(kind, options)


def snapcast_settings(system: System) -> SnapcastSettings:
    o, d = system.options, SnapcastSettings()
    return SnapcastSettings(buffer_ms=int(o.get("buffer", d.buffer_ms)),
                            chunk_ms=int(o.get("chunk", d.chunk_ms)),
                            codec=o.get("codec", d.codec),
                            player_ms=int(o.get("player", d.player_ms)))


def start(system: System, stack: contextlib.ExitStack[bool | None], procs: Procs,
          bs: BenchServer, rooms: Sequence[str], *, tag: str) -> Check:
    """Start ``system`` (its parts stopped when ``stack`` closes); return its liveness check
    once every room plays."""
    if system.kind == "check":
        relay = stack.enter_context(Relay(bs, rooms))
        return relay.check
    if system.kind == "snapcast":
        return _start_snapcast(system, stack, bs, rooms, tag)
    return _start_deskcast(system, procs, bs, rooms, tag)


def _start_snapcast(system: System, stack: contextlib.ExitStack[bool | None], bs: BenchServer,
                    rooms: Sequence[str], tag: str) -> Check:
    snap = Snapcast(bs.server, bs.workdir / f"{tag}-snapcast", snapcast_settings(system))
    try:
        stack.enter_context(snap)
        for room in rooms:
            player = system.room_option(room, "player")
            snap.add_client(room, player_ms=int(player) if player else None)
        bs.server.wait_for(lambda: snap.playing_into() == sorted(rooms) or None, timeout=15)
    except (SnapcastError, SoundServerError) as err:
        with contextlib.suppress(SnapcastError):
            snap.check_alive()
        raise BenchError(f"snapcast did not start playing into {', '.join(rooms)}: {err}") \
            from err

    def check() -> None:
        try:
            snap.check_alive()
        except SnapcastError as err:
            raise BenchError(str(err)) from err
    return check


def _start_deskcast(system: System, procs: Procs, bs: BenchServer, rooms: Sequence[str],
                    tag: str) -> Check:
    ports = []
    for room in rooms:
        port = free_port_pair()
        ports.append(port)
        args = [*shlex.split(system.options.get("rx", "")),
                *shlex.split(system.room_option(room, "rx"))]
        rx = procs.start(f"{tag}-rx-{room}", [*DESKCAST, "-v", "receive", f":{port}", "-o",
                                              f"pulse:{room}", "-q", *args], bs.env)
        wait_for_log(rx, "listening for RTP")
    tx_args = ["-s", "pulse:hub.monitor", "-q", *shlex.split(system.options.get("tx", ""))]
    dests = [f"127.0.0.1:{p}" for p in ports]
    if system.options.get("fanout"):
        senders = [procs.start(f"{tag}-tx", [*DESKCAST, "-v", "send", *dests, *tx_args],
                               bs.env)]
    else:
        senders = [procs.start(f"{tag}-tx-{room}", [*DESKCAST, "-v", "send", dest, *tx_args],
                               bs.env) for room, dest in zip(rooms, dests, strict=True)]
    for tx in senders:
        wait_for_log(tx, "sending ")
    procs.check_alive()
    return procs.check_alive


class Relay:
    """``parec hub.monitor`` (stereo) -> the same frames on every room's pair of channels ->
    one ``pacat`` stream into the meter itself: every room gets the same samples at the
    same time, whatever the meter and detector make of it is their own error."""

    def __init__(self, bs: BenchServer, rooms: Sequence[str], latency_ms: int = 20) -> None:
        self.bs, self.rooms, self.latency_ms = bs, rooms, latency_ms
        self._procs: list[subprocess.Popen[bytes]] = []
        self._thread: threading.Thread | None = None
        self._error = ""

    def __enter__(self) -> Relay:
        meter = self.bs.meter
        chans = [f"aux{meter.channel(r) + i}" for r in self.rooms for i in (0, 1)]
        common = ["--format=s16le", f"--rate={meter.rate}", "--raw",
                  f"--latency-msec={self.latency_ms}"]
        env = self.bs.env
        self._procs = [
            subprocess.Popen(["parec", "--device=hub.monitor", "--channels=2", *common,
                              "--client-name=rooms-check"], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env),
            subprocess.Popen(["pacat", "--playback", f"--device={METER}",
                              f"--channels={len(chans)}", f"--channel-map={','.join(chans)}",
                              *common, "--client-name=rooms-check"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env),
        ]
        self._thread = threading.Thread(target=self._pump, name="rooms-check", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        rec, play = self._procs
        assert rec.stdout is not None and play.stdin is not None
        block = 4 * self.bs.meter.rate // 100  # 10 ms of stereo s16le
        try:
            while chunk := rec.stdout.read(block):
                frames = np.frombuffer(chunk[: len(chunk) // 4 * 4], dtype="<i2").reshape(-1, 2)
                play.stdin.write(np.tile(frames, (1, len(self.rooms))).tobytes())
                play.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as err:
            self._error = str(err)

    def check(self) -> None:
        for p in self._procs:
            if p.poll() is not None:
                raise BenchError(f"the check relay's {p.args!r} exited ({p.returncode}) "
                                 f"{self._error}")

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self._procs):
            p.terminate()
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._thread is not None:
            self._thread.join(timeout=3)
        for p in self._procs:
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
