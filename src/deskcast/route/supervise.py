"""One leg under supervision: started, watched, restarted with backoff when it dies, stopped;
what the route daemon's status shows of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from deskcast.backoff import Backoff
from deskcast.errors import DeskcastError
from deskcast.route.legs import Leg
from deskcast.route.protocol import Target

logger = logging.getLogger(__name__)

RESTART_FIRST_S = 0.5
"""A leg that died is restarted after this, the wait doubling per failure in a row up to
``[route] restart_max_s`` ..."""
RESTART_STABLE_S = 30.0
"""... and a leg that ran this long before it died counts as healthy: the wait starts over."""


def restart_backoff(longest_s: float) -> Backoff:
    """The wait before a dead leg's restart: ``RESTART_FIRST_S`` doubling up to ``longest_s``."""
    return Backoff(min(RESTART_FIRST_S, longest_s), longest_s, stable_s=RESTART_STABLE_S)


@dataclass
class Supervised:
    """One leg and its restart loop."""

    target: Target
    leg: Leg
    backoff: Backoff
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""
    since: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first start has succeeded or failed: a switch answers after that."""
    prepare: Callable[[], Awaitable[None]] | None = None
    """Run before every start (the hub is re-created if the sound server lost it)."""
    _starting: asyncio.Future[None] | None = None

    async def run(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            # Shielded: a switch that stops this leg mid-start waits for the start to finish
            # (see stop), so that no loopback or child made a moment later is left behind.
            self._starting = asyncio.ensure_future(self._start_leg())
            try:
                await asyncio.shield(self._starting)
            except DeskcastError as err:
                why = str(err)
            except Exception as err:  # a bug: log it loudly, keep the other legs going
                logger.exception("%s: could not start", self.target.word)
                why = f"internal error: {err!r}"
            else:
                self.state = "running"
                self.since = time.time()
                self.attempted.set()
                why = await self.leg.wait()
            self.attempted.set()
            if self.stopping:
                return
            await self.leg.stop()
            self.restarts += 1
            self.last_error = why
            delay = self.backoff.next(time.monotonic() - started)
            self.state = "restarting"
            logger.warning("%s: %s; restarting in %.1f s", self.target.word, why, delay)
            await asyncio.sleep(delay)

    async def _start_leg(self) -> None:
        if self.prepare is not None:
            await self.prepare()
        await self.leg.start()

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await self._starting
        await self.leg.stop()

    async def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target.word, "kind": self.target.kind,
                               "state": self.state, "since": round(self.since, 3),
                               "restarts": self.restarts}
        if self.last_error:
            out["last_error"] = self.last_error
        if self.state == "running":
            if self.leg.pid is not None:
                out["pid"] = self.leg.pid
            out.update(await self.leg.info())
        return out

