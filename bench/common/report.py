"""What a benchmark prints: progress on stderr; on stdout a header (the command, the commit, the
machine), plain-text tables and the footer under them (machine load, server deaths, what each
configuration ran, its failed runs)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from bench.common.measure import MachineLoad, load_summary
from bench.common.pipelines import ROOT, Pipeline
from bench.common.procs import one_line
from bench.common.server import BenchServer


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


def package_version(name: str) -> str:
    """The installed Debian package version of ``name`` ("?" if unknown)."""
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
            f"{platform.python_version()}, deskcast {__version__}, trx {package_version('trx')},"
            f" pulseaudio {package_version('pulseaudio')}; load average before: {load}")


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
