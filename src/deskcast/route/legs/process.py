"""A leg that is a ``deskcast`` child process (``send``, ``serve``, or ``play`` for ``local`` on
plain ALSA). A process per leg keeps a crash (or a stuck device) of one leg away from the daemon
and the other legs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from deskcast.route.legs.base import Leg
from deskcast.route.legs.children import STOP_TIMEOUT_S, SparePool, spawn

logger = logging.getLogger(__name__)


class ProcessLeg(Leg):
    """A ``deskcast`` child; its stderr goes to the daemon's log, the last line is kept."""

    def __init__(self, word: str, kind: str, args: list[str], stats_path: Path | None = None,
                 pool: SparePool | None = None, *, commands: bool = False) -> None:
        super().__init__(word)
        self.commands = commands
        """The child reads commands on its standard input (:meth:`command`) while it runs."""
        self.kind = kind
        self.args = args
        self.argv = [sys.executable, "-m", "deskcast", *args]
        self.stats_path = stats_path
        self.pool = pool
        self.proc: asyncio.subprocess.Process | None = None
        self.last_lines: deque[str] = deque(maxlen=5)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.stats_path is not None:
            self.stats_path.unlink(missing_ok=True)
        self.last_lines.clear()
        proc = await self.pool.take() if self.pool is not None else None
        if proc is not None and proc.stdin is not None:
            proc.stdin.write(json.dumps(self.args).encode() + b"\n")
            with contextlib.suppress(OSError):
                await proc.stdin.drain()
            if not self.commands:
                proc.stdin.close()
        else:
            proc = await spawn(self.argv, asyncio.subprocess.PIPE if self.commands
                               else asyncio.subprocess.DEVNULL)
        self.proc = proc
        self.started = time.monotonic()
        self._reader = asyncio.create_task(self._read_stderr(self.proc))
        logger.info("%s: started pid %d: %s", self.word, self.proc.pid,
                    " ".join(self.argv[3:]))

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self.last_lines.append(text)
                logger.info("%s: %s", self.word, text)

    async def command(self, line: str) -> None:
        """One line to the running child's standard input (one that died meanwhile does not
        read it: :meth:`wait` says why it died)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        proc.stdin.write(line.encode() + b"\n")
        with contextlib.suppress(OSError):
            await proc.stdin.drain()

    async def wait(self) -> str:
        assert self.proc is not None
        return await self.ended(self.proc)

    async def ended(self, proc: asyncio.subprocess.Process) -> str:
        """Wait until ``proc`` (this leg's child, now or before) has died; why it did."""
        code = await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        why = self.last_lines[-1] if self.last_lines else ""
        why = why.removeprefix("deskcast: error: ")
        return f"exited with status {code}" + (f": {why}" if why else "")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    def last_stats(self) -> dict[str, Any]:
        """The last line of the child's ``--stats-json`` file ({} before the first)."""
        if self.stats_path is None:
            return {}
        try:
            with self.stats_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().splitlines()
        except OSError:
            return {}
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            return record if isinstance(record, dict) else {}
        return {}
