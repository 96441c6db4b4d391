"""``host``: ``deskcast send`` to one receiver, and whether a receiver answers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from deskcast.route.legs.children import SparePool
from deskcast.route.legs.process import ProcessLeg


class SendLeg(ProcessLeg):
    """``deskcast send`` to one host; says whether a receiver answers (RTCP receiver reports)."""

    def __init__(self, word: str, host: str, port: int, *, trx: bool,
                 args_for: Callable[[str], list[str]], stats_path: Path,
                 answer_timeout_s: float, pool: SparePool | None = None,
                 resolve: Callable[[str, int], Awaitable[tuple[str, int]]] | None = None
                 ) -> None:
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
            host, port = await self.resolve(self.host, self.port)
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
