"""The daemon's switching, persistence, restarts and socket, with fake legs (no sound)."""

from __future__ import annotations

import asyncio
import json
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deskcast import state
from deskcast.errors import DeskcastError
from deskcast.route import protocol
from deskcast.route.daemon import Daemon, RouteConfig
from deskcast.route.legs import Leg
from deskcast.route.protocol import Target


class FakeLeg(Leg):
    """Records what happened to it; ``die()`` makes it crash, ``fail_starts`` refuses."""

    log: list[str]

    def __init__(self, word: str, log: list[str], fail_starts: int = 0) -> None:
        super().__init__(word)
        self.log = log
        self.fail_starts = fail_starts
        self._died: asyncio.Event = asyncio.Event()

    slow_start_s = 0.0

    async def start(self) -> None:
        await asyncio.sleep(self.slow_start_s)
        if self.fail_starts:
            self.fail_starts -= 1
            self.log.append(f"refuse {self.word}")
            raise DeskcastError(f"{self.word} refused")
        self._died = asyncio.Event()
        self.log.append(f"start {self.word}")

    async def wait(self) -> str:
        await self._died.wait()
        return "crashed"

    def die(self) -> None:
        self._died.set()

    async def stop(self) -> None:
        self.log.append(f"stop {self.word}")

    async def info(self) -> dict[str, Any]:
        return {"fake": True}


@pytest.fixture
def sock_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with tempfile.TemporaryDirectory(prefix="dcu-") as d:  # short: socket path limit
        yield Path(d) / "deskcast"


class Harness:
    def __init__(self, sock_dir: Path, fail_starts: int = 0) -> None:
        self.log: list[str] = []
        self.legs: dict[str, FakeLeg] = {}
        self.fail_starts = fail_starts
        self.refuse_local = False
        self.daemon = Daemon(RouteConfig(restart_max_s=0.2), "alsa",
                             socket_path=sock_dir / protocol.SOCKET_NAME,
                             leg_factory=self.make)
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def make(self, t: Target) -> Leg:
        if t.kind == "local" and self.refuse_local:
            raise DeskcastError("no speakers to play to")
        leg = FakeLeg(t.word, self.log, self.fail_starts)
        self.legs[t.word] = leg
        return leg

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.daemon.run(self.ready.set))
        await asyncio.wait_for(self.ready.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.daemon.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(self.daemon.socket_path))
        writer.write(protocol.encode(message))
        await writer.drain()
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return protocol.decode(line)


def test_switching_persistence_and_socket(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with Harness(sock_dir) as h:
            sock = h.daemon.socket_path
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
            st = (await h.call({"cmd": "status"}))["status"]
            assert st["route"] == ["none"] and st["legs"] == []

            st = (await h.call({"cmd": "route", "targets": ["local"]}))["status"]
            assert st["route"] == ["local"]
            assert st["legs"][0]["state"] == "running" and st["legs"][0]["fake"]
            since = st["since"]
            # idempotent
            st = (await h.call({"cmd": "route", "targets": ["local"]}))["status"]
            assert st["since"] == since and h.log == ["start local"]
            # a leg that stays is not restarted when others come and go
            await h.call({"cmd": "route", "targets": ["local", "127.0.0.1:5000"]})
            await h.call({"cmd": "route", "targets": ["127.0.0.1:5000"]})
            assert h.log == ["start local", "start 127.0.0.1:5000", "stop local"]
            assert state.load("route")["targets"] == ["127.0.0.1:5000"]
            answer = await h.call({"cmd": "route", "targets": ["none", "local"]})
            assert answer["ok"] is False and "'none'" in answer["error"]
            # a leg that cannot be made: the error is the answer, the route stays
            h.refuse_local = True
            answer = await h.call({"cmd": "route", "targets": ["local", "127.0.0.1:5000"]})
            assert answer == {"ok": False, "error": "no speakers to play to"}
            st = (await h.call({"cmd": "status"}))["status"]
            assert st["route"] == ["127.0.0.1:5000"] and len(st["legs"]) == 1
            answer = await h.call({"cmd": "jump"})
            assert answer == {"ok": False, "error": "unknown command 'jump'"}
        # SIGTERM-like stop: every leg stopped, socket gone, route kept for the next start
        assert h.log[-1] == "stop 127.0.0.1:5000"
        assert not sock.exists()
        async with Harness(sock_dir) as h2:
            st = (await h2.call({"cmd": "status"}))["status"]
            assert st["route"] == ["127.0.0.1:5000"] and st["legs"][0]["state"] == "running"
            assert h2.log == ["start 127.0.0.1:5000"]

    asyncio.run(scenario())


def test_crashed_leg_is_restarted_with_backoff_and_reported(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with Harness(sock_dir, fail_starts=2) as h:
            st = (await h.call({"cmd": "route", "targets": ["web"]}))["status"]
            assert st["legs"][0]["state"] == "restarting"
            assert st["legs"][0]["last_error"] == "web refused"
            # restarts after 0.2 s (the cap), twice: running within ~0.5 s
            for _ in range(40):
                st = (await h.call({"cmd": "status"}))["status"]
                if st["legs"][0]["state"] == "running":
                    break
                await asyncio.sleep(0.05)
            assert st["legs"][0]["state"] == "running" and st["legs"][0]["restarts"] == 2
            h.legs["web"].die()
            await asyncio.sleep(0.05)
            st = (await h.call({"cmd": "status"}))["status"]
            assert st["legs"][0]["restarts"] == 3 and st["legs"][0]["last_error"] == "crashed"
            for _ in range(40):
                st = (await h.call({"cmd": "status"}))["status"]
                if st["legs"][0]["state"] == "running":
                    break
                await asyncio.sleep(0.05)
            assert st["legs"][0]["state"] == "running"

    asyncio.run(scenario())


def test_one_daemon_per_user_and_garbage_on_the_socket(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with Harness(sock_dir) as h:
            second = Daemon(RouteConfig(), "alsa", socket_path=h.daemon.socket_path)
            with pytest.raises(DeskcastError, match="already running"):
                await second.run()
            reader, writer = await asyncio.open_unix_connection(str(h.daemon.socket_path))
            writer.write(b"\x00garbage\n")
            await writer.drain()
            answer = json.loads(await reader.readline())
            writer.close()
            assert answer["ok"] is False and "not JSON" in answer["error"]
            assert (await h.call({"cmd": "status"}))["ok"]  # still serving

    asyncio.run(scenario())


def test_a_leg_stopped_while_starting_is_stopped_after_its_start(sock_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """A switch away from a leg still starting (a loopback being loaded) must not leave what
    that start makes behind: the stop waits for the start, then undoes it."""
    monkeypatch.setattr(FakeLeg, "slow_start_s", 0.3)
    monkeypatch.setattr("deskcast.route.daemon.START_WAIT_S", 0.05)

    async def scenario() -> None:
        async with Harness(sock_dir) as h:
            await h.call({"cmd": "route", "targets": ["local"]})  # answers before started
            assert h.log == []
            await h.call({"cmd": "route", "targets": ["none"]})
            assert h.log == ["start local", "stop local"]

    asyncio.run(scenario())
