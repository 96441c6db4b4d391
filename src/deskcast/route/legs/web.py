"""``web``: ``deskcast serve`` for browsers (or a serve that already answers there)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from deskcast.http.client import LocalServe
from deskcast.route.legs.children import SparePool
from deskcast.route.legs.process import ProcessLeg

logger = logging.getLogger(__name__)


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
