"""The thin client: one request to the daemon, starting it first if nobody answers."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deskcast import state
from deskcast.errors import DeskcastError
from deskcast.route import protocol

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
"""A route switch stops and starts legs: a few hundred ms, more on a loaded machine."""
START_TIMEOUT_S = 20.0
"""How long a daemon started on demand gets to answer (it creates the hub, restores legs)."""


MAX_LOG_BYTES = 1 << 20
RACE_GRACE_S = 5.0
"""When two commands start a daemon at once, the loser waits this long for the winner."""


class DaemonNotRunningError(DeskcastError):
    pass


def log_path() -> Path:
    return state.state_dir() / "daemon.log"


def request(message: dict[str, Any], path: Path | None = None,
            timeout: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """Send one message and return the answer; DaemonNotRunningError if nobody listens."""
    path = path or protocol.socket_path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunningError(f"no deskcast daemon is answering on {path}: start it with "
                                   "`deskcast daemon`") from None
        sock.sendall(protocol.encode(message))
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise DeskcastError(f"the deskcast daemon did not answer within {timeout:.0f} s; "
                                f"see {log_path()}") from None
    if not data:
        raise DeskcastError(f"the deskcast daemon closed the connection; see {log_path()}")
    return protocol.decode(data)


def start_daemon(config_path: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``deskcast daemon`` detached (own session), logging to the state dir."""
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if log.stat().st_size > MAX_LOG_BYTES:  # keep one old log, never grow without end
            log.replace(log.with_suffix(".log.1"))
    except FileNotFoundError:
        pass
    argv = [sys.executable, "-m", "deskcast", "-v", "daemon"]
    if config_path:
        argv[3:3] = ["--config", config_path]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True, cwd="/")
    logger.info("started the deskcast daemon (pid %d), log in %s", proc.pid, log)
    return proc


def call(message: dict[str, Any], *, autostart: bool = True,
         config_path: str | None = None) -> dict[str, Any]:
    """A request, starting the daemon on demand; DeskcastError if the daemon said no."""
    try:
        answer = request(message)
    except DaemonNotRunningError:
        if not autostart:
            raise
        proc = start_daemon(config_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            time.sleep(0.05)
            try:
                answer = request(message)
                break
            except DaemonNotRunningError:
                code = proc.poll()
                if code is not None and code != 0:
                    # Lost a race with another `route` whose daemon is starting? Give that one
                    # a moment; otherwise our daemon's own error is the answer.
                    deadline = min(deadline, time.monotonic() + RACE_GRACE_S)
                    failure = _daemon_failure(code)
                    if "already running" not in failure or time.monotonic() >= deadline:
                        raise DeskcastError(failure) from None
                if time.monotonic() > deadline:
                    raise DeskcastError(f"the deskcast daemon did not start within "
                                        f"{START_TIMEOUT_S:.0f} s; see {log_path()}") from None
    if not answer.get("ok"):
        raise DeskcastError(str(answer.get("error") or "the daemon refused"))
    return answer


def _daemon_failure(code: int) -> str:
    """The daemon's own one-line error from its log, if it wrote one."""
    try:
        lines = log_path().read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines[-20:]):
        match = re.search(r"\berror: (.*)", line, re.IGNORECASE)
        if match:
            return "the deskcast daemon could not start: " + match.group(1)
    return f"the deskcast daemon exited with status {code}; see {log_path()}"


