"""A private, throw-away ``icecast2`` server for tests and benchmarks.

:class:`IcecastServer` writes an Icecast XML config into a temporary directory,
starts the real ``icecast2`` binary on a free loopback port, waits until it
answers ``/status-json.xsl`` and stops it cleanly.  Nothing of the Debian
package's system instance is used (its service stays disabled; only the
``web``/``admin`` XSL files under ``/usr/share/icecast2`` are read).

Icecast refuses to run as root ("You should not run icecast2 as root")
unless ``<security><changeowner>`` names an unprivileged user; when the test
run is root the config therefore switches to ``icecast2:icecast`` (the
package's user) or ``nobody:nogroup``, and the log directory is handed to that
user.  As an ordinary user no ``<changeowner>`` is written.

Limits are set high enough for the fan-out benchmark (``clients`` 5000 by
default, a 512 KiB per-listener queue) and the process gets a raised open-file
limit.

Fixtures (registered in ``tests/conftest.py``):

* ``icecast`` (function): a started :class:`IcecastServer`, stopped after the test.
* ``icecast_session`` (session): one shared server for tests that only need
  a mount of their own (use a unique mount name per test).

Example::

    with IcecastServer() as ice:
        url = ice.source_url("/live.mp3")   # icecast://source:PW@127.0.0.1:PORT/live.mp3
        ...
        print(ice.status())                 # parsed /status-json.xsl
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import html
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape

import pytest

__all__ = [
    "IcecastError",
    "IcecastServer",
    "icecast",
    "icecast_session",
]

ICECAST_BINARY = "icecast2"
SHARE_DIR = Path("/usr/share/icecast2")

#: How long a start may take before we call it failed (icecast starts in ~50 ms).
START_TIMEOUT_S = 10.0
#: How long a SIGTERM may take before SIGKILL.
STOP_TIMEOUT_S = 5.0


_LIVE: weakref.WeakSet[IcecastServer] = weakref.WeakSet()
"""Servers started and not yet stopped: killed at interpreter exit should a test leak one."""


@atexit.register
def _kill_all_at_exit() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.kill()


class IcecastError(RuntimeError):
    """The private icecast2 could not be started (message says why and what to do)."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_owner() -> tuple[str, str, int, int] | None:
    """(user, group, uid, gid) for ``<changeowner>`` when running as root, else None."""
    if os.geteuid() != 0:
        return None
    for user, group in (("icecast2", "icecast"), ("nobody", "nogroup")):
        try:
            uid = pwd.getpwnam(user).pw_uid
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            continue
        return user, group, uid, gid
    raise IcecastError(
        "running as root but neither icecast2:icecast nor nobody:nogroup exists; "
        "icecast2 will not run as root: create one of them or run the tests as a normal user"
    )


def _raise_nofile(pid: int) -> None:
    """Let the server hold a listener socket per benchmark client (1024 is a common default)."""
    with contextlib.suppress(OSError):
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft < want:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (want, hard))


class IcecastServer:
    """A real icecast2 on ``host:port`` with its config, logs and pid file in a temp dir."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        source_password: str = "test-source-pw",
        admin_password: str = "test-admin-pw",
        admin_user: str = "admin",
        max_clients: int = 5000,
        max_sources: int = 20,
        queue_size_bytes: int = 512 * 1024,
        burst_size_bytes: int = 65536,
        source_timeout_s: int = 10,
        loglevel: int = 3,
    ) -> None:
        if shutil.which(ICECAST_BINARY) is None:
            raise IcecastError(
                "icecast2 is not installed: `apt-get install icecast2` "
                "(./bootstrap test installs it)"
            )
        self.host = host
        self.port = port if port is not None else _free_port(host)
        self.source_password = source_password
        self.admin_password = admin_password
        self.admin_user = admin_user
        self.max_clients = max_clients
        self.max_sources = max_sources
        self.queue_size_bytes = queue_size_bytes
        self.burst_size_bytes = burst_size_bytes
        self.source_timeout_s = source_timeout_s
        self.loglevel = loglevel
        self._tmp = Path(tempfile.mkdtemp(prefix="deskcast-icecast-"))
        self.log_dir = self._tmp / "log"
        self.config_path = self._tmp / "icecast.xml"
        self.stdout_path = self._tmp / "stdout.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._owner = _unprivileged_owner()

    # -- addresses -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def listen_url(self, mount: str) -> str:
        """Where a listener fetches ``mount`` (``http://127.0.0.1:PORT/mount``)."""
        return f"{self.base_url}/{mount.lstrip('/')}"

    def source_url(self, mount: str, *, password: str | None = None,
                   scheme: str = "icecast") -> str:
        """A source URL for ``mount`` with the source password in it."""
        pw = self.source_password if password is None else password
        return f"{scheme}://source:{pw}@{self.host}:{self.port}/{mount.lstrip('/')}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    # -- config ----------------------------------------------------------------------------
    def config_xml(self) -> str:
        security = "<chroot>0</chroot>"
        if self._owner is not None:
            user, group, _, _ = self._owner
            security += (f"<changeowner><user>{escape(user)}</user>"
                         f"<group>{escape(group)}</group></changeowner>")
        return f"""<icecast>
  <location>deskcast test rig</location>
  <admin>nobody@localhost</admin>
  <hostname>{escape(self.host)}</hostname>
  <limits>
    <clients>{self.max_clients}</clients>
    <sources>{self.max_sources}</sources>
    <queue-size>{self.queue_size_bytes}</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>{self.source_timeout_s}</source-timeout>
    <burst-on-connect>1</burst-on-connect>
    <burst-size>{self.burst_size_bytes}</burst-size>
  </limits>
  <authentication>
    <source-password>{escape(self.source_password)}</source-password>
    <relay-password>{escape(self.source_password)}</relay-password>
    <admin-user>{escape(self.admin_user)}</admin-user>
    <admin-password>{escape(self.admin_password)}</admin-password>
  </authentication>
  <listen-socket>
    <port>{self.port}</port>
    <bind-address>{escape(self.host)}</bind-address>
  </listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>{SHARE_DIR}</basedir>
    <logdir>{self.log_dir}</logdir>
    <webroot>{SHARE_DIR / "web"}</webroot>
    <adminroot>{SHARE_DIR / "admin"}</adminroot>
    <alias source="/" destination="/status.xsl"/>
  </paths>
  <logging>
    <accesslog>access.log</accesslog>
    <errorlog>error.log</errorlog>
    <loglevel>{self.loglevel}</loglevel>
    <logsize>10000</logsize>
  </logging>
  <security>{security}</security>
</icecast>
"""

    def _write_config(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_xml(), encoding="utf-8")
        if self._owner is not None:
            _, _, uid, gid = self._owner
            # icecast drops to this user before it opens its logs.
            os.chown(self.log_dir, uid, gid)
            for entry in self.log_dir.iterdir():
                os.chown(entry, uid, gid)
            os.chmod(self._tmp, 0o755)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> IcecastServer:
        """Start (or restart after :meth:`kill`/:meth:`stop`) on the same port; wait until up."""
        if self.pid is not None:
            return self
        self._write_config()
        with open(self.stdout_path, "ab") as log:
            self.proc = subprocess.Popen(
                [ICECAST_BINARY, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)
        _raise_nofile(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.stdout_path.read_text(errors="replace")[-2000:]
                self.proc = None
                raise IcecastError(
                    f"icecast2 exited at start on port {self.port}: {out.strip()!r}; "
                    f"error log: {self.error_log_tail()!r}"
                )
            if self._answers():
                return self
            time.sleep(0.05)
        self.kill()
        raise IcecastError(
            f"icecast2 did not answer on {self.base_url} within {START_TIMEOUT_S:.0f} s; "
            f"error log: {self.error_log_tail()!r}"
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/status-json.xsl", timeout=1.0) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL at once (a crash, for reconnect tests)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_TIMEOUT_S)

    def close(self) -> None:
        """Stop and remove the temp dir."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> IcecastServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- inspection ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``/status-json.xsl`` parsed; ``sources`` is always a list (icecast gives a dict
        for one source and omits the key for none).

        Icecast 2.4.4's XSL emits ``{"icestats":"server_start":…`` (a missing ``{``) when no
        source is connected; that known defect is repaired here before parsing."""
        with urllib.request.urlopen(f"{self.base_url}/status-json.xsl", timeout=3.0) as r:
            raw = r.read().decode("utf-8", errors="replace")
        broken = '{"icestats":"'
        if raw.startswith(broken):
            raw = '{"icestats":{"' + raw[len(broken):]
        data: dict[str, Any] = json.loads(raw, strict=False)["icestats"]
        sources = data.get("source", [])
        sources = [sources] if isinstance(sources, dict) else list(sources)
        # The XSL writes characters beyond Latin-1 as XML character references (&#8211;).
        data["sources"] = [{k: html.unescape(v) if isinstance(v, str) else v
                            for k, v in src.items()} for src in sources]
        return data

    def source_info(self, mount: str) -> dict[str, Any] | None:
        """The status entry of ``mount`` (None when no source is connected there)."""
        want = "/" + mount.lstrip("/")
        for src in self.status()["sources"]:
            if str(src.get("listenurl", "")).endswith(want):
                return dict(src)
        return None

    def wait_source(self, mount: str, timeout: float = 10.0, *,
                    present: bool = True) -> dict[str, Any] | None:
        """Wait until a source is (or is no longer) connected on ``mount``."""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                info = self.source_info(mount)
                if (info is not None) == present:
                    return info
            time.sleep(0.05)
        state = "connect to" if present else "leave"
        raise AssertionError(f"no source did {state} {mount} on icecast within {timeout} s; "
                             f"error log: {self.error_log_tail()!r}")

    def error_log_tail(self, n_chars: int = 2000) -> str:
        path = self.log_dir / "error.log"
        try:
            return path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


@pytest.fixture
def icecast() -> Iterator[IcecastServer]:
    """A private icecast2 for one test (started; stopped and removed afterwards)."""
    server = IcecastServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def icecast_session() -> Iterator[IcecastServer]:
    """One private icecast2 for the whole session; use a unique mount per test."""
    server = IcecastServer().start()
    try:
        yield server
    finally:
        server.close()
