"""What the benchmark scripts share: a private PulseAudio with the sinks ``hub`` and ``out`` on
one meter (``rig.meter``: both recorded on one sample clock), the two pipelines under test (trx
and deskcast) as child processes, CPU accounting from /proc, dropout detection and plain-text
tables.

The scripts put the repository root and ``tests/`` on ``sys.path`` before importing this module
(``rig`` lives in ``tests/rig``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from rig import SoundServer
from rig.meter import Meter, MeterRecording
from rig.signals import Audio, to_mono

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
DESKCAST: tuple[str, ...] = (sys.executable, "-m", "deskcast")
METER = Meter(("hub", "out"), RATE)
"""Every benchmark's sinks: what plays into ``hub`` and what the pipeline plays into ``out``
are recorded together from ``meter.monitor``, on one sample clock."""
SILENT_DB = -50.0
"""Below this RMS level (dBFS) a block of the output counts as silent."""


# --------------------------------------------------------------------------- #
# child processes
# --------------------------------------------------------------------------- #

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # best effort; never fail the exec
        pass


class BenchError(RuntimeError):
    """A pipeline did not start or died during a run."""


def one_line(message: str) -> str:
    """First line of an error, with the last line of the log tail it carries (the reason)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} ... {lines[-1]}"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


class Procs:
    """Child processes, each in its own process group, logs in ``logdir``; all of them (and
    anything they forked) are stopped by :meth:`stop_all`, at the latest when the ``with``
    ends, and they get SIGTERM from the kernel should this process die first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        log = self.logdir / f"{name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        for c in self.children:
            if c.proc.poll() is not None:
                raise BenchError(f"{c.name} exited with status {c.proc.returncode}:\n"
                                 f"{c.tail()}")

    def stop(self, child: Child, grace: float = 3.0) -> None:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        else:  # its own children may still be around
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        # The sender first, so the receiver does not see a half-finished stream as a fault.
        for child in reversed(self.children):
            self.stop(child)
        self.children.clear()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


def wait_for_log(child: Child, needle: str, timeout: float = 15.0) -> None:
    """Wait until ``needle`` appears in the child's log (deskcast -v says when it is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if needle in child.log.read_text(errors="replace"):
                return
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with status {child.proc.returncode}:\n"
                             f"{child.tail()}")
        time.sleep(0.05)
    raise BenchError(f"{child.name}: no {needle!r} within {timeout:.0f} s:\n{child.tail()}")


def free_port_pair() -> int:
    """An even UDP port whose successor (RTCP, used by trx and deskcast) is free too."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1]) & ~1
        if port < 1024:
            continue
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as b:
                a.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                a.bind(("::", port))
                b.bind(("::", port + 1))
                return port
        except OSError:
            continue
    raise BenchError("no free UDP port pair")


# --------------------------------------------------------------------------- #
# the sound server and the pipelines under test
# --------------------------------------------------------------------------- #


def add_server_priority(parser: argparse.ArgumentParser) -> None:
    """``--server-priority``: how the private PulseAudio runs its I/O threads."""
    parser.add_argument("--server-priority", choices=("realtime", "normal"), default="realtime",
                        help="PulseAudio's I/O threads: real-time (default, as a desktop's "
                        "PulseAudio gets from rtkit) or normal (like the test suite's server)")


def add_load(parser: argparse.ArgumentParser) -> None:
    """``--load N``: N busy processes beside the runs (see :func:`cpu_load`)."""
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run N busy processes (normal priority) beside the pipelines, "
                        "as a desktop busy with other work would (0)")


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """``processes`` children spinning at normal priority while the ``with`` runs: a machine
    busy with something else (on 2 CPUs, 2 of them keep both busy)."""
    spin = [sys.executable, "-c", "while True: pass"]
    children = [subprocess.Popen(spin, preexec_fn=_die_with_parent)  # noqa: PLW1509
                for _ in range(processes)]
    try:
        yield
    finally:
        for child in children:
            child.kill()
            child.wait()


class BenchServer:
    """A private PulseAudio with the sinks ``hub`` and ``out`` on one :class:`rig.meter.Meter`
    (``meter``: hub on channels 0-1, out on 2-3; record ``meter.monitor`` to have both on one
    sample clock), restarted if it dies.

    :attr:`env` reaches the server and gives deskcast an empty private config; :attr:`workdir`
    holds signals, logs and statistics (kept after the run if ``BENCH_KEEP`` is set).
    """

    def __init__(self, *, realtime: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="deskcast-bench-"))
        self.realtime = realtime
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
        self._meter = METER.installed(server)
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


Kind = Literal["trx", "deskcast"]


@dataclass(frozen=True)
class Pipeline:
    """hub.monitor -> sender -> UDP on 127.0.0.1 -> receiver -> out, with extra arguments."""

    label: str
    kind: Kind
    tx: tuple[str, ...] = ()
    rx: tuple[str, ...] = ()
    src: str | None = None
    """Run deskcast from this ``src/`` folder (another revision's worktree) instead of the
    installed one (``PYTHONPATH`` comes before the editable install)."""

    def at(self, rev: str, src: Path) -> Pipeline:
        """The same configuration run from another revision's ``src``."""
        return Pipeline(f"{self.label} @{rev}", self.kind, self.tx, self.rx, str(src))

    def describe(self) -> str:
        if self.kind == "trx":
            return (f"trx-tx -d pulse:hub.monitor -h 127.0.0.1 -p P {shlex.join(self.tx)}".strip()
                    + f" | trx-rx -d pulse:out -h 127.0.0.1 -p P {shlex.join(self.rx)}".rstrip())
        where = f" (PYTHONPATH={self.src})" if self.src else ""
        return (f"deskcast send 127.0.0.1:P -s pulse:hub.monitor {shlex.join(self.tx)}".strip()
                + f" | deskcast receive :P -o pulse:out {shlex.join(self.rx)}".rstrip() + where)

    def argv(self, send_to: tuple[str, int], listen_port: int,
             stats_json: Path | None) -> tuple[list[str], list[str]]:
        """(receiver argv, sender argv)."""
        host, port = send_to
        if self.kind == "trx":
            rx = ["trx-rx", "-d", "pulse:out", "-h", "127.0.0.1", "-p", str(listen_port),
                  *self.rx]
            tx = ["trx-tx", "-d", "pulse:hub.monitor", "-h", host, "-p", str(port), *self.tx]
            return rx, tx
        stats = ["--stats-json", str(stats_json)] if stats_json is not None else []
        rx = [*DESKCAST, "-v", "receive", f":{listen_port}", "-o", "pulse:out", "-q", *stats,
              *self.rx]
        tx = [*DESKCAST, "-v", "send", f"{host}:{port}", "-s", "pulse:hub.monitor", "-q",
              *self.tx]
        return rx, tx


TRX_DEFAULT = Pipeline("trx (defaults)", "trx")
DESKCAST_DEFAULT = Pipeline("deskcast (defaults)", "deskcast")
LOW_LATENCY = Pipeline(
    "deskcast low-latency", "deskcast",
    tx=("--frame-ms", "5", "--buffer-ms", "10"),
    rx=("--jitter-ms", "5", "--jitter-min-ms", "2", "--buffer-ms", "20", "--block-ms", "5"),
)
"""The lowest-latency settings that were as free of dropouts as trx at its defaults in
``bench/latency.py --sweep`` (see BENCHMARKS.md): 5 ms frames, a 20 ms device buffer."""


@dataclass
class Running:
    pipeline: Pipeline
    rx: Child
    tx: Child
    stats_json: Path | None

    def receiver_stats(self) -> dict[str, object] | None:
        """The receiver's last --stats-json line (deskcast only)."""
        if self.stats_json is None:
            return None
        try:
            lines = self.stats_json.read_text().strip().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(json.JSONDecodeError):
                record: dict[str, object] = json.loads(line)
                return record
        return None


def start_pipeline(procs: Procs, pipeline: Pipeline, env: dict[str, str], workdir: Path,
                   tag: str, *, listen_port: int | None = None,
                   send_to: tuple[str, int] | None = None) -> Running:
    """Start receiver then sender; return once both say they are running (deskcast) or after
    a short settling time (trx says nothing). ``send_to`` defaults to the receiver itself."""
    port = listen_port if listen_port is not None else free_port_pair()
    dest = send_to if send_to is not None else ("127.0.0.1", port)
    stats = workdir / f"{tag}-rx-stats.json" if pipeline.kind == "deskcast" else None
    rx_argv, tx_argv = pipeline.argv(dest, port, stats)
    if pipeline.src is not None:
        env = {**env, "PYTHONPATH": pipeline.src}
    rx = procs.start(f"{tag}-rx", rx_argv, env)
    if pipeline.kind == "deskcast":
        wait_for_log(rx, "listening for RTP")
    else:
        time.sleep(0.3)
    tx = procs.start(f"{tag}-tx", tx_argv, env)
    if pipeline.kind == "deskcast":
        wait_for_log(tx, "sending ")
    else:
        time.sleep(0.3)
    procs.check_alive()
    return Running(pipeline, rx, tx, stats)


@contextlib.contextmanager
def worktree(rev: str, parent: Path) -> Iterator[Path]:
    """A detached git worktree of ``rev`` under ``parent`` while the ``with`` runs; yields its
    ``src`` folder (for :meth:`Pipeline.at`). The same venv runs it: a revision that needs
    other Python packages cannot be compared this way."""
    path = parent / f"rev-{rev.replace('/', '_')}"
    res = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BenchError(f"git worktree add {rev}: {res.stderr.strip()}")
    try:
        yield path / "src"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       capture_output=True, check=False)


# --------------------------------------------------------------------------- #
# measurements
# --------------------------------------------------------------------------- #


class FrameClock:
    """When the meter mixed frame 0 of a growing :class:`MeterRecording`, in
    ``time.monotonic()`` (:attr:`t0`), from when the recording grew: a thread notes the time
    right after it sees the file longer; ``now - frames / rate`` is never earlier than when
    the last of those frames was mixed (the null sink hands its monitor each block as it
    mixes it), and its smallest value over many blocks is that moment to within a
    millisecond (the same convention as the delays of bench/latency.py: when the sound is
    mixed, a sink's latency before a sound card would play it). A frame inside a block was
    mixed with the whole block, up to one block (15 ms here) earlier than ``t0 + f / rate``.
    :meth:`stop` it before the meter's block size can change (a new client asking for
    another latency): it puts the one wall-clock event of a run, navigation start, onto the
    recording."""

    def __init__(self, rec: MeterRecording, poll_s: float = 0.002) -> None:
        self.rec, self.poll_s = rec, poll_s
        self.t0 = math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-clock", daemon=True)

    def _run(self) -> None:
        rate, last = self.rec.meter.rate, 0
        while not self._stop.wait(self.poll_s):
            frames = self.rec.frames()
            if frames != last:
                self.t0 = min(self.t0, time.monotonic() - frames / rate)
                last = frames

    def frame_at(self, t: float) -> float:
        """The frame of the recording rendered at ``time.monotonic()`` = ``t``."""
        if math.isinf(self.t0):
            raise BenchError("the recording never grew")
        return (t - self.t0) * self.rec.meter.rate

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def __enter__(self) -> FrameClock:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def block_levels_db(x: npt.ArrayLike, rate: int = RATE, block_ms: float = 1.0
                    ) -> npt.NDArray[np.float64]:
    """RMS level in dBFS of each whole ``block_ms`` block of the mono mix."""
    m = to_mono(x)
    block = max(1, round(rate * block_ms / 1000.0))
    n = m.size // block
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    blocks = m[: n * block].reshape(n, block)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    return np.asarray(20.0 * np.log10(np.maximum(rms, 1e-12)), dtype=np.float64)


def silent_runs_ms(x: Audio, rate: int = RATE, block_ms: float = 1.0,
                   threshold_db: float = SILENT_DB) -> list[float]:
    """Lengths (ms) of the runs of consecutive ``block_ms`` blocks below ``threshold_db``."""
    quiet = block_levels_db(x, rate, block_ms) < threshold_db
    runs: list[float] = []
    length = 0
    for q in quiet:
        if q:
            length += 1
        elif length:
            runs.append(length * block_ms)
            length = 0
    if length:
        runs.append(length * block_ms)
    return runs


def cpu_seconds(pid: int) -> float:
    """utime+stime (all threads) plus cutime+cstime (waited-for children) of ``pid`` and of
    every living descendant, in seconds."""
    tick = float(os.sysconf("SC_CLK_TCK"))
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
        ppid = int(fields[1])
        cpu = sum(int(v) for v in fields[11:15]) / tick
        stats[int(entry)] = (ppid, cpu)
    total = 0.0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in stats:
            continue
        seen.add(p)
        total += stats[p][1]
        todo.extend(q for q, (pp, _) in stats.items() if pp == p)
    return total


class MachineLoad:
    """How loaded the machine was between :meth:`start` and :meth:`stop`, from /proc/stat:
    :attr:`busy` is the share of all CPUs' time that was busy (anything but idle/iowait, so
    including the other processes on the machine), :attr:`steal` the share the hypervisor
    gave to other virtual machines."""

    def __init__(self) -> None:
        self._start: tuple[int, int, int] | None = None
        self.busy: float = math.nan
        self.steal: float = math.nan

    @staticmethod
    def read_proc_stat() -> tuple[int, int, int]:
        """(total, idle, steal) of all CPUs so far, in clock ticks."""
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        steal = values[7] if len(values) > 7 else 0
        return sum(values[:8]), idle, steal

    def start(self) -> MachineLoad:
        self._start = self.read_proc_stat()
        return self

    def stop(self) -> float:
        if self._start is None:
            return math.nan
        total, idle, steal = self.read_proc_stat()
        t0, i0, s0 = self._start
        span = max(1, total - t0)
        self.busy = 1.0 - (idle - i0) / span
        self.steal = (steal - s0) / span
        return self.busy


def load_summary(loads: Sequence[MachineLoad]) -> str:
    """One line on how busy the machine was during the runs."""
    busy = [100 * m.busy for m in loads if not math.isnan(m.busy)]
    steal = [100 * m.steal for m in loads if not math.isnan(m.steal)]
    if not busy:
        return ""
    return (f"machine during the runs (all CPUs, all processes, this benchmark included): busy "
            f"median {median(busy):.0f}%, max {max(busy):.0f}%; stolen by the hypervisor: "
            f"median {median(steal):.1f}%, max {max(steal):.1f}%.")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# --------------------------------------------------------------------------- #
# output
# --------------------------------------------------------------------------- #


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None
          = None) -> str:
    """Plain-text table with aligned columns (right-aligned where ``right`` says so)."""
    cols = len(headers)
    align = list(right) if right is not None else [False] + [True] * (cols - 1)
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) if rows else len(headers[i])
              for i in range(cols)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if a else c.ljust(w) for c, w, a in zip(cells, widths, align,
                                                                   strict=True)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _package_version(name: str) -> str:
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return res.stdout.strip() or "?"


def machine_summary() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    from deskcast import __version__

    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, deskcast {__version__}, trx {_package_version('trx')},"
            f" pulseaudio {_package_version('pulseaudio')}; load average before: {load}")


def tree_state() -> str:
    """The commit, and a digest of src/ when the working tree differs from it (deskcast is
    installed editable, so src/ is what runs)."""
    def git(*args: str) -> str:
        try:
            res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                 text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return res.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "src")
    if not dirty:
        return f"commit {commit}"
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return (f"commit {commit} + uncommitted src/ changes (src/**/*.py sha256 "
            f"{digest.hexdigest()[:12]})")


def header(title: str) -> str:
    cmd = shlex.join([".venv/bin/python", *[_relative(a) for a in sys.argv]])
    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"{title}\n$ {cmd}\n{now}; {tree_state()}\n{machine_summary()}"


def _relative(arg: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(arg).resolve().relative_to(ROOT))
    return arg


@dataclass
class Progress:
    """One line per step on stderr, so that stdout is only the report."""

    quiet: bool = False
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            print(f"[{time.monotonic() - self.started:6.1f} s] {message}", file=sys.stderr,
                  flush=True)


class _Result(Protocol):
    pipeline: Pipeline
    loads: list[MachineLoad]
    failures: list[str]


R = TypeVar("R", bound=_Result)


def print_footer(bs: BenchServer, ordered: Sequence[R],
                 per_config: Callable[[R], None] | None = None) -> None:
    """What every script prints under its table: machine load, server deaths, what each
    configuration ran and its failed runs (then ``per_config``'s own lines)."""
    summary = load_summary([m for r in ordered for m in r.loads])
    if summary:
        print(summary)
    if bs.deaths:
        print(f"the PulseAudio server died {len(bs.deaths)} time(s) and was restarted; the runs "
              "it was in are listed as failed. Last lines of its log:")
        for tail in bs.deaths:
            for line in tail.splitlines()[-3:]:
                print(f"    {line}")
    for r in ordered:
        print(f"  {r.pipeline.label}: {r.pipeline.describe()}")
        for f in r.failures:
            print(f"    failed run: {one_line(f)}")
        if per_config is not None:
            per_config(r)


# --------------------------------------------------------------------------- #
# for benchmarks without a sound server (bench/fanout.py)
# --------------------------------------------------------------------------- #


def package_version(name: str) -> str:
    """The installed Debian package version of ``name`` ("?" if unknown)."""
    return _package_version(name)


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of ``pid`` in MB (10^6 bytes); NaN if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def print_run_footer(loads: Sequence[MachineLoad],
                     configs: Sequence[tuple[str, str, Sequence[str]]],
                     extra: Sequence[str] = ()) -> None:
    """:func:`print_footer` for scripts that run no PulseAudio: machine load, then for each
    configuration (label, what ran, failed runs) its command line and failures, then ``extra``
    lines."""
    summary = load_summary(loads)
    if summary:
        print(summary)
    for label, described, failures in configs:
        print(f"  {label}: {described}")
        for f in failures:
            print(f"    failed run: {one_line(f)}")
    for line in extra:
        print(line)
