"""Starting the daemon's ``deskcast`` children: they die with the daemon, and one spare child
(:mod:`deskcast.spare`) is kept started ahead, its imports done, for the next leg."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from typing import Any

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 3.0
"""How long a child gets to finish after SIGTERM before it is killed."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Children get SIGTERM when the daemon dies, even by SIGKILL: no orphan keeps sending."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: list[str], stdin: int) -> Any:
    return asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent)


class SparePool:
    """Keeps one pre-started :mod:`deskcast.spare` child ready, so that a switch does
    not wait for Python to import numpy, libpulse, Opus… (measured: the onset of sound at a
    host went from ~0.7 s to ~0.4 s after `deskcast route HOST` on the test rig)."""

    def __init__(self) -> None:
        self._spare: asyncio.subprocess.Process | None = None
        self._filling: asyncio.Task[None] | None = None
        self._closed = False

    async def take(self) -> asyncio.subprocess.Process | None:
        spare, self._spare = self._spare, None
        self.refill()
        return spare if spare is not None and spare.returncode is None else None

    def refill(self) -> None:
        if self._closed or self._spare is not None or (
                self._filling is not None and not self._filling.done()):
            return
        self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        try:
            proc = await spawn([sys.executable, "-m", "deskcast.spare"],
                                asyncio.subprocess.PIPE)
        except OSError as err:
            logger.warning("cannot start a spare process: %s", err)
            return
        if self._closed:
            await _end_spare(proc)
        else:
            self._spare = proc

    async def close(self) -> None:
        self._closed = True
        if self._filling is not None:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._filling
        spare, self._spare = self._spare, None
        if spare is not None:
            await _end_spare(spare)


async def _end_spare(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # an empty command line: it exits by itself
    try:
        await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
