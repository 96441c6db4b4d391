"""Running the real ``deskcast`` command against the test rig's sound servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deskcast.transport.receive.decode import EXPAND_FADE_S, EXPAND_HOLD_S
from rig import SoundServer

DESKCAST = [sys.executable, "-m", "deskcast"]


@dataclass
class Cli:
    """Runs ``deskcast`` with a private HOME/XDG state and the current sound server env."""

    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HOME=str(self.home), XDG_STATE_HOME=str(self.home / "state"),
                   XDG_CONFIG_HOME=str(self.home / "config"))
        env.pop("DESKCAST_CONFIG", None)
        return env

    def run(self, *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*DESKCAST, *args], check=False, capture_output=True,
                              timeout=timeout,
                              env=dict(env or self.env), input=stdin,
                              stdin=None if stdin is not None else subprocess.DEVNULL)

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*DESKCAST, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env=dict(env or self.env))


@pytest.fixture
def pa_env(pulseaudio_server: SoundServer, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[SoundServer]:
    """The private PulseAudio, reset, with its environment in this process (and so in
    every ``deskcast`` that :class:`Cli` starts)."""
    server = pulseaudio_server
    server.reset()
    for name in server.env_remove:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env_overrides.items():
        monkeypatch.setenv(name, value)
    yield server
    server.reset()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process calls (hub state, config) use the same private folders as :class:`Cli`."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home" / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / "config"))


def audible(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """The recording from its first to its last audible frame (contiguous: dropping quiet
    frames inside would bend every zero crossing and shift the measured frequency)."""
    loud = np.flatnonzero(np.abs(audio).max(axis=1) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0]: loud[-1] + 1]


def received_seconds(heard: np.ndarray, sent_s: float, rate: int = 48000) -> bool:
    """Whether ``heard`` (from :func:`audible`) is what a receiver plays of ``sent_s`` seconds
    of a stream that then stopped: the stream, within 0.1 s, plus the receiver's concealment
    of the packet that never came, which fades out (EXPAND_HOLD_S + EXPAND_FADE_S)."""
    tail = EXPAND_HOLD_S + EXPAND_FADE_S
    return sent_s - 0.1 < len(heard) / rate < sent_s + 0.1 + tail


def wait_for_line(proc: subprocess.Popen[bytes], needle: str, timeout: float = 10.0) -> str:
    """Read stderr until a line containing ``needle`` (deskcast -v says when it is playing)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not seen on stderr within {timeout} s: {''.join(seen)}")


def finish(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[int, str]:
    """Wait for a started deskcast; return its exit status and the rest of stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err.decode(errors="replace")


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """Assert the run failed the way user errors must: status 2, one line, no traceback."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("deskcast: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_server_env(cli: Cli, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment where no PulseAudio/PipeWire server answers."""
    env = cli.env
    env["PULSE_SERVER"] = f"unix:{tmp_path}/nobody-listens-here"
    env["PULSE_RUNTIME_PATH"] = str(tmp_path / "no-runtime")
    yield env


def bindable(family: socket.AddressFamily, host: str, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, port))
    except OSError:
        return False
    return True


def free_port_pair(v6: bool = False) -> int:
    """An even UDP port whose successor (RTCP) is free too (on IPv6 as well if ``v6``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1]) & ~1
        ports = (port, port + 1)
        if all(bindable(socket.AF_INET, "", p) for p in ports) and (
                not v6 or all(bindable(socket.AF_INET6, "::", p) for p in ports)):
            return port
    raise RuntimeError("no free UDP port pair")
