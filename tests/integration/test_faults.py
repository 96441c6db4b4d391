"""The fault matrix (issue 6): real processes, real sound servers, seeded impairment, and a
numeric pass criterion on what comes out of each scenario. RELIABILITY.md has the table with
the values measured in these runs.

The network cases play a 1 kHz tone through the seeded :class:`ImpairmentProxy` into a
receiver writing a WAV file. A file sink is not clocked, so the receiver paces itself at real
time from its first block: frame ``n`` of the WAV is written at ``t_play + n / 48000``, where
``t_play`` is when the receiver said it started playing. That maps the output onto the same
clock as the faults the test makes (kills, blackholes), to within a few ms.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from deskcast.transport.receive.decode import EXPAND_FADE_S, EXPAND_HOLD_S
from deskcast.transport.rtp import RtpPacket
from rig import HUB, OUT, SoundServer
from rig.capture import Recorder
from rig.netem import Impairment, ImpairmentProxy
from rig.signals import dominant_frequency, level_db, read_wav, tone_level_db

from .conftest import Cli, free_port_pair

RATE = 48000
BLOCK = RATE // 200  # 5 ms analysis blocks
SOUND_DB = -40.0
"""An analysis block at or above this RMS level counts as sound (the tone is at -15 dBFS)."""
SILENT_DB = -60.0
"""... and one below this as silence (no noise when nothing arrives)."""
SHARED_CLOCK_PPM = 150.0
"""Largest drift correction (``correction_ppm``) allowed where sender and receiver run on one
machine's clocks: the private sound server's null sinks run about 100 ppm off the system
clock (RELIABILITY.md); the controller at its limit corrects 2000 ppm."""


# --- helpers ---------------------------------------------------------------------------------

class LogTail:
    """Reads a child's stderr in a thread (so a chatty ``-v`` child never blocks on a full pipe)
    and keeps each line with the monotonic time it arrived."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float = 10.0, after: float = 0.0) -> float:
        """The arrival time of the first line containing ``needle`` (arriving after
        ``after``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, line in self.lines:
                    if t >= after and needle in line:
                        return t
                left = deadline - time.monotonic()
                if left <= 0 or (not self._thread.is_alive() and self.proc.poll() is not None):
                    raise AssertionError(f"{needle!r} not seen on stderr within {timeout} s:\n"
                                         f"{self.text}")
                self._cond.wait(min(left, 0.1))

    def count(self, needle: str) -> int:
        with self._cond:
            return sum(needle in line for _, line in self.lines)

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(line for _, line in self.lines)

    def finish(self, timeout: float = 20.0, sig: int | None = None) -> int:
        """Wait for the child (after sending ``sig``); its exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._thread.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return status


def start(cli: Cli, *args: str) -> LogTail:
    return LogTail(cli.start("-v", *args))


@dataclass
class Receiver:
    """``deskcast receive`` into a WAV file, with its stats JSON and the wall-clock start of
    its output."""

    log: LogTail
    wav: Path
    t_play: float

    @property
    def stats(self) -> list[dict[str, object]]:
        path = self.wav.with_suffix(".json")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def audio(self) -> npt.NDArray[np.float64]:
        x, rate = read_wav(self.wav)
        assert rate == RATE
        return x

    def frame_at(self, t: float) -> int:
        """The WAV frame written at monotonic time ``t``."""
        return max(0, round((t - self.t_play) * RATE))

    def time_of(self, frame: int) -> float:
        return self.t_play + frame / RATE


def receive(cli: Cli, port: int, wav: Path, seconds: float, *extra: str) -> Receiver:
    log = start(cli, "receive", f":{port}", "-o", f"file:{wav}", "-t", str(seconds),
                "--stats-json", str(wav.with_suffix(".json")), *extra)
    t_play = log.wait_for("playing rtp://")
    return Receiver(log, wav, t_play)


def block_levels(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """RMS dBFS of each 5 ms block."""
    n = len(x) // BLOCK
    blocks = x[: n * BLOCK].reshape(n, -1)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)), dtype=np.float64)


def longest_gap_ms(x: npt.NDArray[np.float64]) -> float:
    """The longest run of blocks below SOUND_DB between the first and the last sound."""
    loud = block_levels(x) >= SOUND_DB
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return float("inf")
    inner = loud[idx[0]: idx[-1] + 1]
    longest = run = 0
    for v in inner:
        run = 0 if v else run + 1
        longest = max(longest, run)
    return longest * 1000 * BLOCK / RATE


def audible(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """From the first to the last block with sound."""
    idx = np.flatnonzero(block_levels(x) >= SOUND_DB)
    if idx.size == 0:
        return x[:0]
    return x[idx[0] * BLOCK: (idx[-1] + 1) * BLOCK]


def onset(x: npt.NDArray[np.float64], start: int = 0) -> int | None:
    """The first frame at or after ``start`` of a block with sound."""
    levels = block_levels(x[start:])
    hits = np.flatnonzero(levels >= SOUND_DB)
    return None if hits.size == 0 else start + int(hits[0]) * BLOCK


def sound_end(x: npt.NDArray[np.float64], start: int) -> int:
    """The first frame at or after ``start`` from which the output stays below SOUND_DB for
    at least 50 ms."""
    levels = block_levels(x[start:])
    quiet = levels < SOUND_DB
    need = 10
    for i in range(len(quiet) - need):
        if quiet[i: i + need].all():
            return start + i * BLOCK
    return len(x)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- loss, bursts, jitter, reorder, duplication -------------------------------------------------

@dataclass(frozen=True)
class NetCase:
    impairment: Impairment
    max_gap_ms: float = 0.0
    """Longest silence allowed inside the output (loss is concealed, late audio expanded)."""
    max_excess_pct: float = 0.0
    """Concealed fraction allowed above the proxy's measured drop rate."""
    extra: tuple[str, ...] = field(default=())


# Measured at 8a5dde2 and 4ed2b4d (7 runs each: 4 on a quiet machine, 2 beside one busy
# core, 1 beside two): no gap at all in any case but bursts6-10 (55-75 ms: Opus' concealment
# of 120-200 ms fades out), and nothing concealed beyond what the proxy dropped (loss and
# bursts: 0.01-1.3 points under it; jitter, reorder, duplicates: 0.00 %).
NET_CASES = {
    "loss1": NetCase(Impairment(loss=0.01)),
    "loss5": NetCase(Impairment(loss=0.05)),
    "loss10": NetCase(Impairment(loss=0.10)),
    "loss20": NetCase(Impairment(loss=0.20)),
    "bursts3-6": NetCase(Impairment(burst_loss=0.02, burst_length=(3, 6))),
    "bursts6-10": NetCase(Impairment(burst_loss=0.02, burst_length=(6, 10)), 100),
    "jitter5": NetCase(Impairment(jitter_ms=5.0)),
    "jitter20": NetCase(Impairment(jitter_ms=20.0)),
    "jitter50": NetCase(Impairment(jitter_ms=50.0)),
    "reorder10": NetCase(Impairment(reorder=0.10)),
    "duplicate20": NetCase(Impairment(duplicate=0.20)),
}
NET_SEED = 2
"""Gives 1.3/5.3/9.3/18 % random loss over the first 150 packets: close to nominal."""


@pytest.mark.parametrize("case", list(NET_CASES.values()), ids=list(NET_CASES))
def test_network_impairment(cli: Cli, tmp_path: Path, case: NetCase) -> None:
    """3 s of a 1 kHz tone through the proxy: nothing is concealed beyond what the proxy
    dropped, the pitch is right within 1 Hz, every sent frame is played (what is heard is the
    3 s, plus what expanding for late packets added, plus the fade after the last one), and
    there is no gap at all: loss is concealed and jitter, reorder and duplicates absorbed
    (only bursts of 6-10 lost packets fade out, for up to 100 ms)."""
    port = free_port_pair()
    rx = receive(cli, port, tmp_path / "rx.wav", 4.5)
    with ImpairmentProxy(("127.0.0.1", port), case.impairment, seed=NET_SEED) as proxy:
        host, pport = proxy.address
        tx = cli.run("send", f"{host}:{pport}", "-s", "tone:1000", "-t", "3")
        assert tx.returncode == 0, tx.stderr
        assert rx.log.finish() == 0, rx.log.text
    ps = proxy.stats
    drop_pct = 100 * ps.dropped / max(1, ps.received)
    stats = rx.stats[-1]
    concealed = stats["concealed_pct"]
    assert isinstance(concealed, float)
    x = rx.audio()
    heard = audible(x)
    gap = longest_gap_ms(heard)
    freq = dominant_frequency(heard, RATE)
    print(f"MEASURED drop={drop_pct:.2f}% concealed={concealed:.2f}% gap={gap:.0f}ms "
          f"freq={freq:.2f}Hz heard={len(heard) / RATE:.2f}s expanded={stats['expanded_ms']}ms "
          f"late={stats['late']} dup={stats['duplicates']} underruns={stats['underruns']} "
          f"proxy: dropped={ps.dropped}/{ps.received} duplicated={ps.duplicated} "
          f"reordered={ps.reordered}")
    assert ps.received == 150
    assert concealed <= drop_pct + case.max_excess_pct
    assert freq == pytest.approx(1000.0, abs=1.0)
    assert gap <= case.max_gap_ms
    expanded_ms = stats["expanded_ms"]
    assert isinstance(expanded_ms, float)
    played_s = len(heard) / RATE - expanded_ms / 1000
    assert 3.0 <= played_s <= 3.0 + EXPAND_HOLD_S + EXPAND_FADE_S + 0.01, played_s
    if case.impairment.duplicate:  # each copy was seen and dropped
        assert isinstance(stats["duplicates"], int)
        assert stats["duplicates"] >= 0.9 * ps.duplicated > 20


# --- the sound server restarted, the source device removed ----------------------------------

class RestartableServer(SoundServer):
    """A private server that can be killed and started again at the same address (the rig's
    ``stop()`` removes its directory; a restart must keep the socket path clients know)."""

    def crash_and_restart(self) -> float:
        """SIGKILL the server (a crash, nothing said to clients), start it again, make the
        null sinks ``hub`` and ``out`` again; the monotonic time it was ready."""
        procs, self._procs = self._procs, []
        for _, proc in procs:
            proc.kill()
            proc.wait(5)
        if self.kind == "pulseaudio":
            self._start_pulseaudio()
        else:
            self._restart_pipewire()
        self.create_null_sink(HUB)
        self.create_null_sink(OUT)
        self.set_default_sink(HUB)
        return time.monotonic()

    def freeze(self, seconds: float) -> None:
        """Stop the server's processes (SIGSTOP) for ``seconds``: a sound server that is not
        scheduled in time, as on a loaded machine without real-time priority."""
        for _, proc in self._procs:
            proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            for _, proc in self._procs:
                proc.send_signal(signal.SIGCONT)

    def _restart_pipewire(self) -> None:
        run = self.root / "run"
        for stale in ("pipewire-0", "pipewire-0.lock", "pipewire-0-manager",
                      "pipewire-0-manager.lock"):
            (run / stale).unlink(missing_ok=True)
        self._spawn("pipewire", ["pipewire"])
        self.wait_for((run / "pipewire-0").exists, 10)
        self._spawn("wireplumber", ["wireplumber"])
        self._spawn("pipewire-pulse", ["pipewire-pulse"])

        def ready() -> bool:
            out = self._pactl_ok("get-default-sink")
            return out is not None and bool(out.strip()) and not out.startswith("@")

        self._wait_ready(ready)


@pytest.fixture(params=["pa", "pw"])
def own_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[RestartableServer]:
    """A private server for this test alone (the session's servers must not be restarted)."""
    server = RestartableServer("pulseaudio" if request.param == "pa" else "pipewire",
                               min_quantum=2048 if request.param == "pw" else None)
    server.start()
    try:
        server.create_null_sink(HUB)
        server.create_null_sink(OUT)
        server.set_default_sink(HUB)
        for name in server.env_remove:
            monkeypatch.delenv(name, raising=False)
        for name, value in server.env_overrides.items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        server.stop()


class StreamReader:
    """Reads an HTTP stream in a thread, keeping (arrival time, bytes) chunks."""

    def __init__(self, url: str) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._resp = urllib.request.urlopen(url, timeout=10)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._resp.read1(65536)
                if not data:
                    break
                self.chunks.append((time.monotonic(), data))
        except OSError as err:
            self.error = err

    def since(self, t: float) -> bytes:
        return b"".join(d for at, d in list(self.chunks) if at >= t)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)  # the next chunk (~0.1 s) lets it see the stop
        self._resp.close()


def decode_mp3(data: bytes) -> npt.NDArray[np.float64]:
    with av.open(io.BytesIO(data), mode="r", format="mp3") as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
    x = np.concatenate(frames, axis=1).T if frames else np.zeros((0, 2))
    return np.asarray(x, dtype=np.float64)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def restart_under_sound(srv: RestartableServer
                        ) -> tuple[float, float, npt.NDArray[np.float64]]:
    """With sound at `out`, crash and restart the server: (when it was ready, when `out` had
    sound again, the last 0.5 s of the second after that)."""
    with Recorder(srv, "out.monitor", linger=0) as rec:
        assert rec.wait_for_sound(10, threshold_db=SOUND_DB)
    t_ready = srv.crash_and_restart()
    with Recorder(srv, "out.monitor", linger=0) as rec:
        assert rec.wait_for_sound(10, threshold_db=SOUND_DB), "no sound after the restart"
        t_sound = time.monotonic()
        time.sleep(1.0)
    return t_ready, t_sound, rec.audio[-RATE // 2:]


def lost_and_back(log: LogTail, label: str) -> None:
    """Exactly one warning that ``label`` was lost and one that it is back."""
    assert log.count(f"{label} lost:") == 1, log.text
    assert log.count(f"{label} is back after") == 1, log.text


def test_sound_server_restarted_under_send_receive_serve(own_server: RestartableServer,
                                                         cli: Cli) -> None:
    """`play tone -> pulse:hub`, `send -s pulse:hub.monitor`, `receive -o pulse:out` and
    `serve -s pulse:hub.monitor` run while the sound server is killed and started again
    (and the null sinks made again, as its configuration would): none of them exits, each
    says once that its device was lost and once that it is back, the tone is at `out` again
    within 3 s of the server being ready, and serve's listener was never cut off."""
    srv = own_server
    port = free_port_pair()
    http = free_tcp_port()
    player = start(cli, "play", "tone:660", "pulse:hub")
    rx = start(cli, "receive", f":{port}", "-o", "pulse:out")
    tx = start(cli, "send", f"127.0.0.1:{port}", "-s", "pulse:hub.monitor")
    web = start(cli, "serve", "-s", "pulse:hub.monitor", "--listen", f"127.0.0.1:{http}")
    procs = (player, rx, tx, web)
    reader: StreamReader | None = None
    try:
        for log, needle in ((player, "playing to pulse:hub"), (rx, "playing rtp://"),
                            (tx, "sending Opus"), (web, "serving")):
            log.wait_for(needle, 15)
        reader = StreamReader(f"http://127.0.0.1:{http}/stream.mp3")
        t_ready, t_sound, after = restart_under_sound(srv)
        resumed_s = t_sound - t_ready
        time.sleep(1.0)
        mp3 = decode_mp3(reader.since(t_sound + 0.5))
        print(f"MEASURED restart: out has sound {resumed_s:.2f} s after the server was ready; "
              f"serve delivered {len(mp3) / RATE:.2f} s of audio in the 1.5 s after")
        for log in procs:
            assert log.proc.poll() is None, log.text
        assert resumed_s < 3.0
        assert dominant_frequency(after, RATE) == pytest.approx(660.0, abs=1.0)
        assert reader.alive and reader.error is None
        assert len(mp3) > RATE
        assert dominant_frequency(mp3[RATE // 10:], RATE) == pytest.approx(660.0, abs=2.0)
        for log in procs:
            print("".join(line for _, line in log.lines
                          if " lost: " in line or " is back " in line), end="")
        lost_and_back(player, "pulse:hub")
        lost_and_back(rx, "pulse:out")
        lost_and_back(tx, "pulse:hub.monitor")
        lost_and_back(web, "pulse:hub.monitor")
    finally:
        if reader is not None:
            reader.close()
        statuses = [log.finish(sig=signal.SIGTERM) for log in procs]
    assert statuses == [0, 0, 0, 0], [log.text for log in procs]
    for log in procs:
        assert "Traceback" not in log.text, log.text


@pytest.mark.parametrize("own_server", ["pa"], indirect=True)
def test_alsa_devices_ride_out_a_sound_server_restart(own_server: RestartableServer,
                                                     cli: Cli) -> None:
    """Plain ALSA endpoints (here through ALSA's pulse plugin, the one ALSA device that can be
    made to fail on demand): `play tone:660 alsa:pulse:hub` and the loop `play
    alsa:pulse:hub.monitor alsa:pulse:out` while the sound server is killed and started
    again. Nobody exits, each ALSA device says once that it was lost and once that it is
    back, and the tone is at `out` again within 3 s of the server being ready.

    PulseAudio only: a restarted pipewire-pulse accepts a stream for a device that does not
    exist yet (the null sinks are made a moment after the server) and links it to the default
    device, which ALSA's pulse plugin cannot tell; a clean CI run caught exactly that. The
    `pulse:` backend checks the name before it opens (the same test with `pulse:` endpoints
    runs on both servers above)."""
    srv = own_server
    player = start(cli, "play", "tone:660", "alsa:pulse:hub")
    loop = start(cli, "play", "alsa:pulse:hub.monitor", "alsa:pulse:out")
    procs = (player, loop)
    try:
        player.wait_for("playing to alsa:pulse:hub", 15)
        loop.wait_for("playing alsa:pulse:hub.monitor", 15)
        t_ready, t_sound, after = restart_under_sound(srv)
        resumed_s = t_sound - t_ready
        print(f"MEASURED ALSA restart: out has sound {resumed_s:.2f} s after the server was "
              "ready")
        for log in procs:
            print("".join(line for _, line in log.lines
                          if " lost: " in line or " is back " in line), end="")
            assert log.proc.poll() is None, log.text
        assert resumed_s < 3.0
        assert dominant_frequency(after, RATE) == pytest.approx(660.0, abs=1.0)
        lost_and_back(player, "alsa:pulse:hub")
        lost_and_back(loop, "alsa:pulse:hub.monitor")
        lost_and_back(loop, "alsa:pulse:out")
    finally:
        statuses = [log.finish(sig=signal.SIGTERM) for log in procs]
    assert statuses == [0, 0], [log.text for log in procs]
    for log in procs:
        assert "Traceback" not in log.text, log.text


def test_source_device_removed_and_added_again(own_server: RestartableServer, cli: Cli,
                                               tmp_path: Path) -> None:
    """The null sink ``hub`` is unloaded under `send -s pulse:hub.monitor` (and under the
    `play tone -> pulse:hub` feeding it) for 2 s, then loaded again. The server moves both
    streams elsewhere (onto ``out``, where another tone plays): deskcast must not send that
    other device's audio (at most 50 ms of it), sends silence instead, moves the streams back
    when ``hub`` returns and the tone is heard again within 1.5 s."""
    srv = own_server
    port = free_port_pair()
    player = start(cli, "play", "tone:660", "pulse:hub")
    other = start(cli, "play", "tone:440", "pulse:out")
    rx = receive(cli, port, tmp_path / "rx.wav", 7)
    tx = start(cli, "send", f"127.0.0.1:{port}", "-s", "pulse:hub.monitor")
    procs = (player, other, tx)
    try:
        tx.wait_for("sending Opus", 15)
        time.sleep(1.5)
        module = _hub_module(srv)
        t_gone = time.monotonic()
        srv.unload_module(module)
        time.sleep(2.0)
        t_back = time.monotonic()  # from here on the hub may exist again
        srv.create_null_sink(HUB)
        assert rx.log.finish() == 0, rx.log.text
        for log in procs:
            assert log.proc.poll() is None, log.text
    finally:
        statuses = [log.finish(sig=signal.SIGTERM) for log in procs]
    assert statuses == [0, 0, 0], [log.text for log in procs]
    x = rx.audio()
    before = x[rx.frame_at(t_gone) - RATE: rx.frame_at(t_gone)]
    during = x[rx.frame_at(t_gone) + RATE // 4: rx.frame_at(t_back)]
    first = onset(x, rx.frame_at(t_back))
    assert first is not None, "no sound after the device came back"
    resumed_s = rx.time_of(first) - t_back
    after = x[first + RATE // 4: first + RATE // 4 + RATE // 2]
    leaked_ms = 1000 * BLOCK * int(np.sum(block_levels(during) >= SOUND_DB)) / RATE
    print(f"MEASURED device removed: {leaked_ms:.0f} ms of sound while gone, level "
          f"{level_db(during):.0f} dBFS; sound {resumed_s:.2f} s after it was back")
    for log in (tx, player):
        print("".join(f"{t - t_gone:+.2f} {line}" for t, line in log.lines
                      if " lost: " in line or " is back " in line), end="")
    after_s = (first + RATE // 4) / RATE
    corrections = [r["correction_ppm"] for r in rx.stats
                   if after_s <= float(str(r["elapsed_s"])) <= after_s + 1.5]
    print(f"MEASURED device removed: after it, {dominant_frequency(after, RATE):.2f} Hz, "
          f"correction_ppm {corrections}")
    assert dominant_frequency(before, RATE) == pytest.approx(660.0, abs=1.0)
    assert leaked_ms <= 50
    assert resumed_s < 1.5
    # The hub's tone, and nothing of the other device's, at 660 +- 1 Hz like every steady
    # tone. (It allowed 2 Hz for "the drift correction resampling by up to 2 per mille while
    # it settles after the gap": in a run this short the controller has measured nothing and
    # applies 0 (checked below); 660.00 Hz measured in 6 runs, 4 beside a busy core.)
    assert dominant_frequency(after, RATE) == pytest.approx(660.0, abs=1.0)
    assert corrections and all(isinstance(c, float) and abs(c) <= SHARED_CLOCK_PPM
                               for c in corrections), corrections
    assert tone_level_db(after, 440.0, RATE) < tone_level_db(after, 660.0, RATE) - 30
    lost_and_back(tx, "pulse:hub.monitor")
    lost_and_back(player, "pulse:hub")
    for log in procs:
        assert "Traceback" not in log.text, log.text


def _hub_module(srv: SoundServer) -> int:
    for line in srv.pactl("list", "short", "modules").splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == "module-null-sink" and f"sink_name={HUB}" in line:
            return int(fields[0])
    raise AssertionError("no null sink module for the hub")


# --- processes killed and restarted ----------------------------------------------------------

def read_stats(path: Path) -> list[dict[str, object]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()[:-1] if line.strip()]


def delays(records: list[dict[str, object]], *, ours: bool = False) -> list[float]:
    """The receiver's delay per second; ``ours``: without what the sound server holds (it
    may hold more after an underrun of its own accord: PulseAudio raises a sink's latency)."""
    out = []
    for r in records:
        delay, sink = r.get("delay_ms"), r.get("sink_ms")
        if isinstance(delay, int | float) and isinstance(sink, int | float):
            out.append(float(delay) - (float(sink) if ours else 0.0))
    return out


@pytest.mark.parametrize("own_server", ["pa"], indirect=True)
def test_sound_server_frozen_for_a_moment(own_server: RestartableServer, cli: Cli,
                                          tmp_path: Path) -> None:
    """The sound server is not scheduled for 80 ms, later for 200 ms (SIGSTOP, SIGCONT; on a
    loaded machine a server without real-time priority misses its deadlines like this): the
    sink loses that time and the audio that came in meanwhile piles up in the receiver. It
    does not keep it as delay: it is dropped at once (whole frames from the jitter buffer,
    the rest cut from a frame; the jitter buffer does not drop it a second time), and **7-12
    s after each freeze the receiver's part of the delay is within 5 ms of where it was**
    (median; the whole was 15 ms and more above it just after; what the server holds may
    grow by itself: PulseAudio raises a sink's latency after an underrun); each stall is
    counted, and the tone plays on at its pitch."""
    srv = own_server
    port = free_port_pair()
    stats = tmp_path / "rx.json"
    rx = start(cli, "receive", f":{port}", "-o", "pulse:out", "--stats-json", str(stats))
    tx = start(cli, "send", f"127.0.0.1:{port}", "-s", "tone:1000")
    try:
        rx.wait_for("playing rtp://", 15)
        measured: list[str] = []
        for freeze_s in (0.08, 0.2):
            # Settled: the level it holds was measured (from 22.5 s on), the stall watch has
            # 10 s of delay since the last step to compare with, and the delay is steady.
            deadline = time.monotonic() + 60
            while len(recent := delays(read_stats(stats))) < 25 or np.ptp(recent[-5:]) > 1.5:
                assert time.monotonic() < deadline, (recent, measured, rx.text)
                time.sleep(0.5)
            before = float(np.median(recent[-5:]))
            before_ours = float(np.median(delays(read_stats(stats), ours=True)[-5:]))
            records = read_stats(stats)
            seen, stalls_before = len(records), records[-1]["device_stalls"]
            srv.freeze(freeze_s)
            time.sleep(12.0)
            after_records = read_stats(stats)[seen:]
            stalls_after = after_records[-1]["device_stalls"]
            assert isinstance(stalls_before, int) and isinstance(stalls_after, int)
            after = delays(after_records)
            peak = max(after)
            # The last 5 s (a median: a loaded machine's server may stall again meanwhile).
            settled = float(np.median(after[-5:]))
            settled_ours = float(np.median(delays(after_records, ours=True)[-5:]))
            measured.append(f"{1000 * freeze_s:.0f} ms: delay {before:.1f} -> peak {peak:.1f} "
                            f"-> {settled:.1f} ms 7-12 s after "
                            f"({' '.join(f'{d:.0f}' for d in after)}); the receiver's part "
                            f"{before_ours:.1f} -> {settled_ours:.1f} ms; stalls "
                            f"{stalls_before} -> {stalls_after}, skipped "
                            f"{after_records[-1].get('skipped_ms')} ms")
            assert peak > before + 15.0, measured      # the sink did lose time
            # This freeze was counted (a loaded server may stall by itself too: at least one).
            assert stalls_after >= stalls_before + 1, measured
            # Not kept, and not dropped twice over (that ran the buffer dry, and its level
            # was then raised by a frame for good).
            assert abs(settled_ours - before_ours) < 5.0, measured
        with Recorder(srv, "out.monitor", linger=0) as rec:
            time.sleep(1.0)
        final = read_stats(stats)[-1]
        print(f"MEASURED frozen server: {'; '.join(measured)}; device_stalls "
              f"{final['device_stalls']}, skipped_ms {final['skipped_ms']}; at the end "
              f"{dominant_frequency(rec.audio, RATE):.2f} Hz, drift_ppm {final['drift_ppm']}, "
              f"correction_ppm {final['correction_ppm']}, sink_ppm {final['sink_ppm']}")
        assert dominant_frequency(rec.audio, RATE) == pytest.approx(1000.0, abs=2.0)
        # The pitch window cannot tell the controller at its 2000 ppm limit from none; what
        # it applied can (a tone on the system clock, a null sink ~100 ppm off it).
        assert isinstance(final["correction_ppm"], float)
        assert abs(final["correction_ppm"]) <= SHARED_CLOCK_PPM
        assert level_db(rec.audio) > -30.0
    finally:
        statuses = [log.finish(sig=signal.SIGTERM) for log in (rx, tx)]
    assert statuses == [0, 0], rx.text


def test_sender_killed_and_restarted(cli: Cli, tmp_path: Path) -> None:
    """A sender is SIGKILLed mid-stream and a new one started 1 s later: the receiver fades
    the dead one out (no noise, silence while nobody sends) and plays the new one within
    500 ms of its first packet arriving."""
    port = free_port_pair()
    rx = receive(cli, port, tmp_path / "rx.wav", 6)
    first = start(cli, "send", f"127.0.0.1:{port}", "-s", "tone:500")
    first.wait_for("sending Opus")
    time.sleep(1.5)
    t_kill = time.monotonic()
    first.proc.kill()
    assert first.finish() == -signal.SIGKILL
    time.sleep(1.0)
    second = cli.run("send", f"127.0.0.1:{port}", "-s", "tone:1500", "-t", "2")
    assert second.returncode == 0, second.stderr
    assert rx.log.finish() == 0, rx.log.text
    t_first = rx.log.wait_for("new sender: ssrc")
    x = rx.audio()
    end = sound_end(x, rx.frame_at(t_kill))
    silent = x[end + RATE // 20: rx.frame_at(t_first)]
    start_new = onset(x, rx.frame_at(t_first) - RATE // 10)
    assert start_new is not None
    resumed_ms = 1000 * (rx.time_of(start_new) - t_first)
    tail_ms = 1000 * (rx.time_of(end) - t_kill)
    print(f"MEASURED sender killed: old sound ends {tail_ms:.0f} ms after the kill, "
          f"{len(silent) / RATE:.2f} s at {level_db(silent):.0f} dBFS, new sender heard "
          f"{resumed_ms:.0f} ms after its first packet")
    assert tail_ms < 300  # buffer + 40 ms hold + 80 ms fade
    assert level_db(silent) < SILENT_DB
    assert resumed_ms < 500
    new = x[start_new + RATE // 10: start_new + RATE]
    assert dominant_frequency(new, RATE) == pytest.approx(1500.0, abs=1.0)


def test_receiver_killed_and_restarted(cli: Cli, tmp_path: Path) -> None:
    """The receiver is SIGKILLed under a running sender and started again on the same port:
    it plays within 500 ms of listening (the new process' start, Python's import time
    included, is reported too); the sender never notices."""
    port = free_port_pair()
    tx_stats = tmp_path / "tx.json"
    tx = start(cli, "send", f"127.0.0.1:{port}", "-s", "tone:1000", "-t", "6",
               "--stats-json", str(tx_stats))
    first = receive(cli, port, tmp_path / "rx1.wav", 30)
    time.sleep(1.5)
    first.log.proc.kill()
    assert first.log.finish() == -signal.SIGKILL
    time.sleep(0.5)
    t_exec = time.monotonic()
    second = receive(cli, port, tmp_path / "rx2.wav", 2.5)
    t_listen = second.log.wait_for("listening for RTP")
    assert second.log.finish() == 0, second.log.text
    assert tx.finish() == 0, tx.text
    x = second.audio()
    first_sound = onset(x)
    assert first_sound is not None
    t_sound = second.time_of(first_sound)
    from_listen_ms = 1000 * (t_sound - t_listen)
    from_exec_ms = 1000 * (t_sound - t_exec)
    print(f"MEASURED receiver restarted: sound {from_listen_ms:.0f} ms after it listened, "
          f"{from_exec_ms:.0f} ms after the process was started")
    assert from_listen_ms < 500
    assert from_exec_ms < 2000
    heard = x[first_sound:]
    assert dominant_frequency(heard, RATE) == pytest.approx(1000.0, abs=1.0)
    assert longest_gap_ms(audible(heard)) <= 10
    sent = json.loads(tx_stats.read_text().splitlines()[-1])
    assert sent["elapsed_s"] >= 5.0
    assert sent["packets"] >= 49 * sent["elapsed_s"]  # 50 packets/s: it sent throughout


# --- the network gone for 5 s ----------------------------------------------------------------

def test_network_unreachable_for_5_s(cli: Cli, tmp_path: Path) -> None:
    """The proxy drops everything for 5 s: the receiver conceals briefly, then plays pure
    silence (no noise, no crash) and plays the tone again within 500 ms of the network
    coming back; the sender keeps sending throughout."""
    port = free_port_pair()
    rx = receive(cli, port, tmp_path / "rx.wav", 9.5)
    with ImpairmentProxy(("127.0.0.1", port), Impairment(), seed=NET_SEED) as proxy:
        host, pport = proxy.address
        tx = start(cli, "send", f"{host}:{pport}", "-s", "tone:1000", "-t", "8.5")
        tx.wait_for("sending Opus")
        time.sleep(1.5)
        t_gone = time.monotonic()
        proxy.set(blackhole=True)
        time.sleep(5.0)
        proxy.set(blackhole=False)
        t_back = time.monotonic()
        assert tx.finish() == 0, tx.text
        assert rx.log.finish() == 0, rx.log.text
    assert proxy.stats.blackholed >= 240
    x = rx.audio()
    end = sound_end(x, rx.frame_at(t_gone))
    silent = x[end + RATE // 20: rx.frame_at(t_back)]
    back = onset(x, rx.frame_at(t_back) - RATE // 10)
    assert back is not None
    tail_ms = 1000 * (rx.time_of(end) - t_gone)
    resumed_ms = 1000 * (rx.time_of(back) - t_back)
    print(f"MEASURED blackhole: sound ends {tail_ms:.0f} ms after the network went, then "
          f"{len(silent) / RATE:.2f} s at {level_db(silent):.0f} dBFS (peak "
          f"{20 * np.log10(max(np.abs(silent).max(), 1e-9)):.0f}); back {resumed_ms:.0f} ms "
          "after the network")
    assert tail_ms < 300
    assert len(silent) > 4.5 * RATE and level_db(silent) < SILENT_DB
    assert resumed_ms < 500
    after = x[back + RATE // 10: back + RATE]
    assert dominant_frequency(after, RATE) == pytest.approx(1000.0, abs=1.0)
    assert "Traceback" not in rx.log.text


# --- 10,000 hostile datagrams a second --------------------------------------------------------

def hostile_datagrams(n: int, seed: int) -> list[bytes]:
    """Random bytes and mutated RTP: truncated, bit-flipped, wrong version, bogus padding,
    extension and CSRC counts, RTCP-looking junk, other SSRCs with random payloads."""
    rng = random.Random(seed)
    template = bytes(RtpPacket(96, 1000, 48000, 0x5EED, b"\xfc" + rng.randbytes(250)))
    out: list[bytes] = []
    for _ in range(n):
        kind = rng.randrange(10)
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 1500))
        elif kind == 1:
            data = template[: rng.randrange(0, 12)]
        elif kind == 2:
            data = bytes(RtpPacket(96 + rng.randrange(31), rng.randrange(65536),
                                   rng.randrange(2**32), rng.randrange(2**32),
                                   rng.randbytes(rng.randrange(1, 400))))
        elif kind == 3:
            flipped = bytearray(template)
            for _ in range(rng.randrange(1, 9)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        elif kind == 4:  # padding bit, padding length beyond the payload
            data = bytes([template[0] | 0x20]) + template[1:-1] + bytes([255])
        elif kind == 5:  # extension bit, extension length beyond the packet
            data = bytes([template[0] | 0x10]) + template[1:12] + b"\xbe\xde\xff\xff" + b"x"
        elif kind == 6:  # 15 CSRCs announced, none there
            data = bytes([template[0] | 0x0F]) + template[1:16]
        elif kind == 7:  # RTCP-looking
            data = bytes([0x80 | rng.randrange(32), rng.randrange(200, 205)]) + \
                rng.randbytes(rng.randrange(0, 200))
        elif kind == 8:  # version 1, 3
            data = bytes([(template[0] & 0x3F) | rng.choice((0x40, 0xC0))]) + template[1:]
        else:
            data = rng.randbytes(rng.randrange(1500, 9000))
        out.append(data)
    return out


class Blaster:
    """Sends datagrams from a pool at ``rate`` per second (batches every 5 ms)."""

    def __init__(self, target: tuple[str, int], pool: list[bytes], rate: int) -> None:
        self.target, self.pool, self.rate = target, pool, rate
        self.sent = 0
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        batch = self.rate // 200
        pool, n = self.pool, len(self.pool)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            self.started = next_at = time.monotonic()
            while not self._stop.is_set():
                for _ in range(batch):
                    s.sendto(pool[self.sent % n], self.target)
                    self.sent += 1
                next_at += 0.005
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.stopped = time.monotonic()

    def __enter__(self) -> Blaster:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def achieved(self) -> float:
        return self.sent / max(1e-9, self.stopped - self.started)


def test_ten_thousand_hostile_datagrams_a_second(cli: Cli, tmp_path: Path) -> None:
    """10,000 random and mutated datagrams per second (measured) at a playing receiver for
    3 s: every one is counted and dropped, the tone plays on at its pitch with no gap over
    100 ms, and the receiver's CPU stays under half a core. (test_send_receive.py's garbage
    test covers more packet kinds at a lower rate.)"""
    port = free_port_pair()
    rx = receive(cli, port, tmp_path / "rx.wav", 5.5)
    pid = rx.log.proc.pid
    pool = hostile_datagrams(4096, seed=66)
    tx = start(cli, "send", f"127.0.0.1:{port}", "-s", "tone:1000", "-t", "4.5")
    tx.wait_for("sending Opus")
    time.sleep(0.5)
    cpu0 = cpu_s(pid)
    with Blaster(("127.0.0.1", port), pool, 10_000) as blaster:
        time.sleep(3.0)
    cpu1 = cpu_s(pid)
    assert tx.finish() == 0, tx.text
    assert rx.log.finish() == 0, rx.log.text
    rate = blaster.achieved
    cpu_pct = 100 * (cpu1 - cpu0) / (blaster.stopped - blaster.started)
    stats = rx.stats[-1]
    x = rx.audio()
    blasted = x[rx.frame_at(blaster.started): rx.frame_at(blaster.stopped)]
    gap = longest_gap_ms(audible(x))
    dropped = stats["dropped"]
    assert isinstance(dropped, int)
    print(f"MEASURED blast: {rate:.0f} datagrams/s for {blaster.stopped - blaster.started:.1f} s"
          f" ({blaster.sent} sent, {dropped} dropped: {stats['dropped_by_reason']}), receiver "
          f"CPU {cpu_pct:.0f} % of a core, longest gap {gap:.0f} ms, pitch "
          f"{dominant_frequency(blasted, RATE):.2f} Hz")
    assert rate >= 9500
    assert dropped >= 0.95 * blaster.sent  # the kernel may drop a few before we see them
    assert len(blasted) > 2.5 * RATE
    assert dominant_frequency(blasted, RATE) == pytest.approx(1000.0, abs=1.0)
    assert gap <= 100
    assert cpu_pct < 50
    assert "Traceback" not in rx.log.text
