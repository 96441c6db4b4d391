"""``host``: the hosts of a route share one ``deskcast send`` child, and whether each one's
receiver answers.

One capture, one encoder, one stream (one SSRC, one timestamp line) for every host: each host
is a :class:`SendLeg` that joins the :class:`SendGroup`'s child (``+HOST:PORT`` on its standard
input, ``send --destinations-from-stdin``) and leaves it (``-HOST:PORT``), so a host that comes
or goes neither restarts the child nor interrupts the others' audio. The first host to join
starts the child, the last to leave stops it; trx-rx wants a stream of its own (8 kHz
timestamps), so trx hosts have their own group. Each host's answer comes from its entry in the
child's ``--stats-json`` ``destinations``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from deskcast.endpoints import format_hostport
from deskcast.route.legs.base import Leg
from deskcast.route.legs.children import SparePool
from deskcast.route.legs.process import ProcessLeg


class SendGroup:
    """The one ``deskcast send`` child of a route's hosts (of one kind: trx or not).

    ``args_for(first)`` is the child's command line, sending to ``first`` and reading more
    destinations on its standard input."""

    def __init__(self, word: str, args_for: Callable[[str], list[str]], stats_path: Path,
                 pool: SparePool | None = None) -> None:
        self.word = word
        self.args_for = args_for
        self.stats_path = stats_path
        self.pool = pool
        self.child: ProcessLeg | None = None
        self.members: collections.Counter[str] = collections.Counter()
        """The current child's destinations, each with how many hosts want it (two names
        for one address are one destination)."""
        self._lock = asyncio.Lock()

    def _alive(self, child: ProcessLeg | None) -> bool:
        return child is not None and child.proc is not None and child.proc.returncode is None

    async def join(self, address: str) -> ProcessLeg:
        """Send to ``address`` too: through the running child, else a new one."""
        async with self._lock:
            child = self.child
            if child is not None and self._alive(child):
                await child.command(f"+{address}")
            else:
                if child is not None:
                    await child.stop()  # dead: only its reader is left to end
                child = ProcessLeg(self.word, "host", self.args_for(address), self.stats_path,
                                   self.pool, commands=True)
                self.members.clear()
                self.child = child
                await child.start()
            self.members[address] += 1
            return child

    async def leave(self, address: str, child: ProcessLeg) -> None:
        """Stop sending to ``address`` (joined on ``child``); the last host out stops it."""
        async with self._lock:
            if child is not self.child:
                return  # an earlier child, dead: the one that replaced it has stopped it
            self.members[address] -= 1
            if self.members[address] > 0:
                return
            del self.members[address]
            if self.members:
                await child.command(f"-{address}")
                return
            self.child = None
        await child.stop()  # outside the lock: a new host need not wait for it

    def destination(self, address: str) -> dict[str, Any]:
        """``address``'s entry in the child's last ``--stats-json`` record, with the stream's
        own ``kbit_s`` ({} before the child has reported on it)."""
        if self.child is None:
            return {}
        st = self.child.last_stats()
        for entry in st.get("destinations") or []:
            if isinstance(entry, dict) and entry.get("destination") == address:
                return {"kbit_s": st.get("kbit_s", 0.0), **entry}
        return {}


class SendLeg(Leg):
    """One host of the route, served by the group's child; says whether a receiver answers
    (RTCP receiver reports from that host)."""

    kind = "host"

    def __init__(self, word: str, host: str, port: int, *, trx: bool, group: SendGroup,
                 answer_timeout_s: float,
                 resolve: Callable[[str, int], Awaitable[tuple[str, int]]] | None = None
                 ) -> None:
        super().__init__(word)
        self.host = host
        self.port = port
        self.trx = trx
        self.group = group
        self.answer_timeout_s = answer_timeout_s
        self.resolve = resolve
        self.address = ""
        self.child: ProcessLeg | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Resolve the name now (each restart again: a receiver found by mDNS may have moved),
        then join the group's child with the address."""
        host, port = self.host, self.port
        if self.resolve is not None:
            host, port = await self.resolve(self.host, self.port)
        self.address = format_hostport(host, port)
        self.child = await self.group.join(self.address)
        self._proc = self.child.proc
        self.started = time.monotonic()

    async def wait(self) -> str:
        assert self.child is not None and self._proc is not None, "start() first"
        return await self.child.ended(self._proc)

    async def stop(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            await self.group.leave(self.address, child)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def info(self) -> dict[str, Any]:
        st = self.group.destination(self.address)
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


REPORT_STALE_S = 7.0
"""Receivers report every 2 s: three missed reports (and a margin) mean nobody is there."""


def answer_state(stats: dict[str, Any], running_s: float, trx: bool, timeout_s: float) -> str:
    """'answering', 'not answering', 'waiting' (too early to say) or 'unconfirmed' (trx-rx
    never sends RTCP) — from the sender's ``--stats-json`` entry of one destination."""
    if trx:
        return "unconfirmed"
    since = stats.get("since_report_s")
    if stats.get("receiver_reports") and isinstance(since, int | float) and (
            since <= REPORT_STALE_S):
        return "answering"
    refused = bool(stats.get("send_errors"))  # e.g. unreachable: nothing can answer there
    if refused and not stats.get("receiver_reports"):
        return "not answering"
    return "not answering" if running_s >= timeout_s else "waiting"
