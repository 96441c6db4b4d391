"""The legs of a route: each reads the hub and takes its audio somewhere.

* :class:`LoopbackLeg` — ``local`` on PulseAudio/PipeWire: the server's own ``module-loopback``
  from the hub's monitor to the speakers (see the module docstring of :mod:`deskcast.route.daemon`
  for why a loopback and not moving the streams back).
* :class:`ProcessLeg` — a ``deskcast`` child process: ``send`` to one host, ``serve`` for the
  web, ``play alsa:hubcap alsa:SPEAKERS`` for ``local`` on plain ALSA. A process per leg keeps a
  crash (or a stuck device) of one leg away from the daemon and the other legs.

Every leg can ``start`` (raises :class:`DeskcastError` when it cannot), ``wait`` until it dies
(returning why), ``stop`` and describe itself with ``info``. The daemon restarts dead legs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deskcast.errors import DeskcastError, DeviceError
from deskcast.http.client import LocalServe

logger = logging.getLogger(__name__)

LOOPBACK_MARK = "deskcast-route-local"
"""media.name of the loopback's streams: how a restarted daemon finds a loopback it left."""
STOP_TIMEOUT_S = 3.0
"""How long a child gets to finish after SIGTERM before it is killed."""
POLL_S = 0.5
"""How often a loopback is checked for still being loaded."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Children get SIGTERM when the daemon dies, even by SIGKILL: no orphan keeps sending."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Leg(ABC):
    kind: str = ""

    def __init__(self, word: str) -> None:
        self.word = word
        self.started = 0.0

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def wait(self) -> str:
        """Return (with the reason) when the leg has died."""

    @abstractmethod
    async def stop(self) -> None: ...

    async def info(self) -> dict[str, Any]:
        return {}

    @property
    def pid(self) -> int | None:
        """The leg's process, if it has its own."""
        return None


# --- local on PulseAudio/PipeWire ------------------------------------------------------------

class LoopbackLeg(Leg):
    kind = "local"

    def __init__(self, word: str, monitor: str, speakers: str, latency_ms: float) -> None:
        super().__init__(word)
        self.monitor = monitor
        self.speakers = speakers
        self.latency_ms = latency_ms
        self.module: int | None = None
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self.module = await asyncio.to_thread(self._load)
        self.started = time.monotonic()

    def _load(self) -> int:
        import pulsectl

        from deskcast import soundserver

        with soundserver.connect() as pulse:
            remove_stale_loopbacks(pulse)
            names = [s.name for s in pulse.sink_list()]
            if self.speakers not in names:
                raise DeviceError(f"the speakers sink {self.speakers!r} does not exist; set "
                                  "[route] speakers to one of: " + ", ".join(names))
            props = f"'application.name=deskcast media.name={LOOPBACK_MARK}'"
            args = (f"source={self.monitor} sink={self.speakers} "
                    f"latency_msec={round(self.latency_ms)} source_dont_move=true "
                    f"sink_dont_move=true sink_input_properties={props} "
                    f"source_output_properties={props}")
            try:
                module = int(pulse.module_load("module-loopback", args))
            except pulsectl.PulseError as err:
                raise DeviceError(f"the sound server refused a loopback from {self.monitor} to "
                                  f"{self.speakers}: {err}") from None
        logger.info("local: loopback %s -> %s (%d ms), module %d", self.monitor, self.speakers,
                    round(self.latency_ms), module)
        return module

    def _loaded(self) -> bool:
        from deskcast import soundserver

        try:
            with soundserver.connect() as pulse:
                return any(m.index == self.module for m in pulse.module_list())
        except DeskcastError:
            return False

    async def wait(self) -> str:
        while not self._stopping:
            await asyncio.sleep(POLL_S)
            if not self._stopping and not await asyncio.to_thread(self._loaded):
                return "the loopback module was unloaded (sound server restarted?)"
        return "stopped"

    async def stop(self) -> None:
        self._stopping = True
        module, self.module = self.module, None
        if module is not None:
            await asyncio.to_thread(_unload, module)

    async def info(self) -> dict[str, Any]:
        return {"via": "loopback", "from": self.monitor, "to": self.speakers,
                "latency_ms": round(self.latency_ms), "module": self.module}


def _unload(module: int) -> None:
    import pulsectl

    from deskcast import soundserver

    try:
        with soundserver.connect() as pulse:
            pulse.module_unload(module)
    except (DeskcastError, pulsectl.PulseError) as err:
        logger.info("loopback module %d already gone (%s)", module, err)


def remove_stale_loopbacks(pulse: Any) -> int:
    """Unload loopbacks a previous daemon left behind (killed before it could clean up)."""
    removed = 0
    for m in pulse.module_list():
        if m.name == "module-loopback" and LOOPBACK_MARK in str(m.argument or ""):
            with contextlib.suppress(Exception):
                pulse.module_unload(m.index)
                removed += 1
                logger.info("removed a loopback left by an earlier daemon (module %d)", m.index)
    return removed


# --- child processes: send, serve, play ------------------------------------------------------

def _spawn(argv: list[str], stdin: int) -> Any:
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
            proc = await _spawn([sys.executable, "-m", "deskcast.spare"],
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


class ProcessLeg(Leg):
    """A ``deskcast`` child; its stderr goes to the daemon's log, the last line is kept."""

    def __init__(self, word: str, kind: str, args: list[str], stats_path: Path | None = None,
                 pool: SparePool | None = None) -> None:
        super().__init__(word)
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
            proc.stdin.close()
        else:
            proc = await _spawn(self.argv, asyncio.subprocess.DEVNULL)
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

    async def wait(self) -> str:
        assert self.proc is not None
        code = await self.proc.wait()
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


class SendLeg(ProcessLeg):
    """``deskcast send`` to one host; says whether a receiver answers (RTCP receiver reports)."""

    def __init__(self, word: str, host: str, port: int, *, trx: bool,
                 args_for: Callable[[str], list[str]], stats_path: Path,
                 answer_timeout_s: float, pool: SparePool | None = None,
                 resolve: Callable[[str, int], tuple[str, int]] | None = None) -> None:
        super().__init__(word, "host", args_for(_hostport(host, port)), stats_path, pool)
        self.host = host
        self.port = port
        self.trx = trx
        self.answer_timeout_s = answer_timeout_s
        self.args_for = args_for
        self.resolve = resolve
        self.address = ""

    async def start(self) -> None:
        """Resolve the name now (each restart again: a receiver found by mDNS may have moved),
        then start ``send`` to the address."""
        host, port = self.host, self.port
        if self.resolve is not None:
            host, port = await asyncio.to_thread(self.resolve, self.host, self.port)
        self.address = _hostport(host, port)
        self.args = self.args_for(self.address)
        self.argv = [*self.argv[:3], *self.args]
        await super().start()

    async def info(self) -> dict[str, Any]:
        st = self.last_stats()
        running_s = time.monotonic() - self.started if self.started else 0.0
        out: dict[str, Any] = {"address": self.address, "packets": st.get("packets", 0),
                               "kbit_s": st.get("kbit_s", 0.0),
                               "send_errors": st.get("send_errors", 0)}
        out["answer"] = answer_state(st, running_s, self.trx, self.answer_timeout_s)
        if out["answer"] == "not answering":
            out["answer_text"] = f"no receiver at {self.host}:{self.port} is answering"
        if st.get("receiver_reports"):
            out.update(receiver_loss_pct=st.get("receiver_loss_pct"),
                       receiver_jitter_ms=st.get("receiver_jitter_ms"),
                       rtt_ms=st.get("rtt_ms"), since_report_s=st.get("since_report_s"))
        return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


REPORT_STALE_S = 7.0
"""Receivers report every 2 s: three missed reports (and a margin) mean nobody is there."""


def answer_state(stats: dict[str, Any], running_s: float, trx: bool, timeout_s: float) -> str:
    """'answering', 'not answering', 'waiting' (too early to say) or 'unconfirmed' (trx-rx
    never sends RTCP) — from the sender's ``--stats-json`` record."""
    if trx:
        return "unconfirmed"
    since = stats.get("since_report_s")
    if stats.get("receiver_reports") and isinstance(since, int | float) and (
            since <= REPORT_STALE_S):
        return "answering"
    refused = bool(stats.get("send_errors"))  # ICMP port unreachable: nothing listens there
    if refused and not stats.get("receiver_reports"):
        return "not answering"
    return "not answering" if running_s >= timeout_s else "waiting"


class WebLeg(ProcessLeg):
    """``deskcast serve``; its listeners come from its own ``/api/status``."""

    def __init__(self, word: str, args: list[str], serve: LocalServe, page_url: str,
                 pool: SparePool | None = None) -> None:
        super().__init__(word, "web", args, pool=pool)
        self.serve = serve
        self.status_url = f"{serve.base_url}/api/status"
        self.page_url = page_url

    external = False
    """A ``serve`` started by someone else already answers there: it is used, not started
    (and not stopped by ``route none``)."""

    async def start(self) -> None:
        """Start ``serve`` and return once it answers HTTP (browsers can connect)."""
        self.external = await self._status() is not None
        if self.external:
            self.started = time.monotonic()
            logger.info("%s: a serve already answers at %s; using it", self.word,
                        self.page_url)
            return
        await super().start()
        deadline = time.monotonic() + WEB_START_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                return  # wait() reports why it died
            if await self._status() is not None:
                return
            await asyncio.sleep(0.05)
        logger.warning("%s: serve did not answer within %.0f s", self.word, WEB_START_S)

    async def _status(self) -> dict[str, Any] | None:
        import aiohttp

        try:
            timeout = aiohttp.ClientTimeout(total=0.5)
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(self.status_url, headers=self.serve.headers(),
                                ssl=self.serve.ssl_context or True) as resp:
                body = await resp.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def wait(self) -> str:
        if not self.external:
            return await super().wait()
        while await self._status() is not None:
            await asyncio.sleep(1.0)
        return "the serve that was already running stopped answering"

    async def stop(self) -> None:
        if self.external:
            self.external = False
            return
        await super().stop()

    async def info(self) -> dict[str, Any]:
        body = await self._status()
        out = {"url": self.page_url, "listeners": None if body is None
               else body.get("listeners")}
        if self.external:
            out["via"] = "a serve that was already running"
        return out


WEB_START_S = 5.0
"""How long a starting ``serve`` gets to answer before the switch is reported anyway."""
