"""The two pipelines under test (trx and deskcast) as configurations and as running child
processes: hub.monitor -> sender -> UDP on 127.0.0.1 -> receiver -> out; and another revision's
``src`` to run them from (``--rev``)."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.common.procs import DESKCAST, BenchError, Child, Procs, free_port_pair, wait_for_log

ROOT = Path(__file__).resolve().parents[2]


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
