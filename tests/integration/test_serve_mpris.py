"""Now playing from a media player over MPRIS: a private D-Bus session bus (dbus-daemon), a fake
player on it (jeepney) that answers like a real one, and `deskcast serve` following it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import MessageType, new_error, new_method_return  # type: ignore[import-untyped]
from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]

from deskcast.http.nowplaying.mpris import track_from_metadata

from .conftest import Cli, finish, wait_for_line
from .test_serve import free_tcp_port


@pytest.fixture
def session_bus(tmp_path: Path) -> Iterator[str]:
    address = f"unix:path={tmp_path / 'bus'}"
    proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                             f"--address={address}", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        printed = proc.stdout.readline().decode().strip()
        assert printed.startswith(address), printed
        yield address
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


class FakePlayer:
    """org.mpris.MediaPlayer2.NAME answering Properties.Get for PlaybackStatus and Metadata."""

    def __init__(self, address: str, name: str) -> None:
        self.status = "Playing"
        self.artist = ["Bus Artist", "Guest"]
        self.title = "Bus Title"
        self.conn = open_dbus_connection(bus=address)
        reply = self.conn.send_and_get_reply(
            message_bus.RequestName(f"org.mpris.MediaPlayer2.{name}"))
        assert reply.body[0] == 1  # primary owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            h = msg.header
            if h.message_type is not MessageType.method_call:
                continue
            if h.fields.get(3) == "Get":  # field 3: member
                _iface, prop = msg.body
                value: Any
                if prop == "PlaybackStatus":
                    value = ("s", self.status)
                elif prop == "Metadata":
                    value = ("a{sv}", {"xesam:artist": ("as", self.artist),
                                       "xesam:title": ("s", self.title),
                                       "mpris:length": ("x", 180_000_000)})
                else:
                    self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty"))
                    continue
                self.conn.send(new_method_return(msg, "v", (value,)))
            else:
                self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def test_track_from_metadata_tolerates_odd_values() -> None:
    assert track_from_metadata({"xesam:artist": ("as", ["A", "B"]),
                                "xesam:title": ("s", "T")}) == ("A, B", "T")
    assert track_from_metadata({"xesam:artist": ("s", "A")}) == ("A", "")
    assert track_from_metadata({"xesam:title": "not a variant"}) == ("", "")


def now_playing(base: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(
        urllib.request.urlopen(f"{base}/api/status", timeout=5).read())
    return dict(status["now_playing"])


def wait_for_title(base: str, title: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = now_playing(base)
        if current["title"] == title or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


def test_serve_follows_the_playing_mpris_player(cli: Cli, session_bus: str) -> None:
    player = FakePlayer(session_bus, "fakeplayer")
    port = free_tcp_port()
    env = {**cli.env, "DBUS_SESSION_BUS_ADDRESS": session_bus}
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "12", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_line(server, "serving")
        first = wait_for_title(base, "Bus Title", 5.0)
        player.title = "Next Song"
        second = wait_for_title(base, "Next Song", 5.0)
        # Paused player: the last title stays; an API title is not overwritten by MPRIS.
        player.status = "Paused"
        request = urllib.request.Request(
            f"{base}/api/metadata", data=b'{"title": "From API"}', method="POST",
            headers={"Authorization": "Bearer " + (cli.home / "state" / "deskcast" /
                                                   "serve-token").read_text().strip()})
        urllib.request.urlopen(request, timeout=5).close()
        time.sleep(2.5)
        third = now_playing(base)
    finally:
        player.close()
        code, err = finish(server, timeout=20)
    assert code == 0, err
    assert "Traceback" not in err
    assert first["artist"] == "Bus Artist, Guest" and first["title"] == "Bus Title"
    assert first["source"] == "mpris:fakeplayer"
    assert second["title"] == "Next Song"
    assert third["title"] == "From API" and third["source"] == "api"


def test_serve_without_a_session_bus_says_so_once(cli: Cli) -> None:
    port = free_tcp_port()
    env = {k: v for k, v in cli.env.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "-t", "2", env=env)
    code, err = finish(server, timeout=20)
    assert code == 0, err
    assert err.count("no D-Bus session bus") == 1
