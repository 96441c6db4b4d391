"""The hosts of a route sharing one ``send`` child (deskcast.route.legs.send.SendGroup), with a
fake child process: who starts it, what it is told on its stdin, who stops it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from deskcast.route.legs import SendGroup, SendLeg
from deskcast.route.legs import send as send_module


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.died = asyncio.Event()

    async def wait(self) -> int:
        await self.died.wait()
        assert self.returncode is not None
        return self.returncode


class FakeChild:
    """Stands in for ProcessLeg: records its command line and the lines it is sent."""

    started: ClassVar[list[FakeChild]] = []

    def __init__(self, word: str, kind: str, args: list[str], stats_path: Path | None = None,
                 pool: object = None, *, commands: bool = False) -> None:
        assert commands, "a group's child must read commands"
        self.args = args
        self.stats_path = stats_path
        self.lines: list[str] = []
        self.proc: FakeProc | None = None
        self.stopped = False

    async def start(self) -> None:
        self.proc = FakeProc(100 + len(FakeChild.started))
        FakeChild.started.append(self)

    async def command(self, line: str) -> None:
        self.lines.append(line)

    async def stop(self) -> None:
        self.stopped = True

    async def ended(self, proc: FakeProc) -> str:
        return f"exited with status {await proc.wait()}"

    def last_stats(self) -> dict[str, Any]:
        assert self.stats_path is not None
        record: dict[str, Any] = json.loads(self.stats_path.read_text())
        return record

    def die(self) -> None:
        assert self.proc is not None
        self.proc.returncode = 1
        self.proc.died.set()


@pytest.fixture(autouse=True)
def fake_children(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeChild.started = []
    monkeypatch.setattr(send_module, "ProcessLeg", FakeChild)


def leg(group: SendGroup, host: str) -> SendLeg:
    return SendLeg(host, host, 1350, trx=False, group=group, answer_timeout_s=4.0)


def test_hosts_join_and_leave_one_child(tmp_path: Path) -> None:
    async def scenario() -> None:
        group = SendGroup("send", lambda first: ["send", first, "--destinations-from-stdin"],
                          tmp_path / "send.json")
        a, b, c = leg(group, "a"), leg(group, "b"), leg(group, "c")
        await a.start()
        await b.start()
        await c.start()
        assert len(FakeChild.started) == 1
        child = FakeChild.started[0]
        assert child.args == ["send", "a:1350", "--destinations-from-stdin"]
        assert child.lines == ["+b:1350", "+c:1350"]
        assert a.pid == b.pid == c.pid == 100
        await b.stop()
        assert child.lines[-1] == "-b:1350" and not child.stopped
        await a.stop()
        await c.stop()  # the last one out stops it
        assert child.lines[-1] == "-a:1350" and child.stopped
        await b.start()  # and the next one in starts another
        assert len(FakeChild.started) == 2 and b.pid == 101

    asyncio.run(scenario())


def test_two_names_for_one_address_leave_it_once_both_are_gone(tmp_path: Path) -> None:
    async def scenario() -> None:
        group = SendGroup("send", lambda first: ["send", first], tmp_path / "send.json")
        x, y, z = leg(group, "box"), leg(group, "box"), leg(group, "other")
        for member in (x, y, z):
            await member.start()
        child = FakeChild.started[0]
        await x.stop()
        assert child.lines == ["+box:1350", "+other:1350"]  # y still wants box
        await y.stop()
        assert child.lines[-1] == "-box:1350"

    asyncio.run(scenario())


def test_a_dead_child_ends_every_host_and_the_first_back_starts_a_new_one(tmp_path: Path
                                                                         ) -> None:
    async def scenario() -> None:
        group = SendGroup("send", lambda first: ["send", first], tmp_path / "send.json")
        a, b = leg(group, "a"), leg(group, "b")
        await a.start()
        await b.start()
        old = FakeChild.started[0]
        waits = [asyncio.create_task(m.wait()) for m in (a, b)]
        old.die()
        assert await asyncio.gather(*waits) == ["exited with status 1"] * 2
        await b.stop()  # as Supervised does, then restarts after its backoff
        await b.start()
        assert len(FakeChild.started) == 2 and old.stopped
        new = FakeChild.started[1]
        assert new.args == ["send", "b:1350"]
        await a.stop()  # the old child's member: the new child hears nothing of it
        await a.start()
        assert new.lines == ["+a:1350"] and not new.stopped

    asyncio.run(scenario())


def test_each_host_reports_its_own_destination(tmp_path: Path) -> None:
    async def scenario() -> None:
        stats = tmp_path / "send.json"
        group = SendGroup("send", lambda first: ["send", first], stats)
        a, b = leg(group, "a"), leg(group, "b")
        await a.start()
        await b.start()
        stats.write_text(json.dumps({"kbit_s": 128.0, "destinations": [
            {"destination": "a:1350", "packets": 50, "send_errors": 0, "receiver_reports": 2,
             "since_report_s": 0.5, "receiver_loss_pct": 1.5, "receiver_jitter_ms": 0.2,
             "rtt_ms": 0.4},
            {"destination": "b:1350", "packets": 20, "send_errors": 0, "receiver_reports": 0,
             "since_report_s": None}]}))
        info_a, info_b = await a.info(), await b.info()
        assert (info_a["answer"], info_a["receiver_loss_pct"], info_a["rtt_ms"],
                info_a["packets"], info_a["kbit_s"]) == ("answering", 1.5, 0.4, 50, 128.0)
        assert (info_b["answer"], info_b["packets"]) == ("waiting", 20)

    asyncio.run(scenario())
