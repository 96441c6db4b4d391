"""The pipelines' child processes: started in their own process groups with their logs kept,
stopped together, killed by the kernel should the benchmark die; UDP ports for them, and busy
processes beside them (``--load``)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

DESKCAST: tuple[str, ...] = (sys.executable, "-m", "deskcast")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
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
                env=env, start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509
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
    children = [subprocess.Popen(spin, preexec_fn=die_with_parent)  # noqa: PLW1509
                for _ in range(processes)]
    try:
        yield
    finally:
        for child in children:
            child.kill()
            child.wait()
