"""Private, throw-away sound servers for tests.

A :class:`SoundServer` starts either a real PulseAudio daemon or a real PipeWire
stack (``pipewire`` + ``wireplumber`` + ``pipewire-pulse``) as child processes of
the test run, each inside its own temporary directory.  Nothing is shared with
the user's desktop session or with other test runs: the servers use their own
``XDG_RUNTIME_DIR``, ``HOME``, config and state dirs, D-Bus is hidden from them,
and clients reach them only through :attr:`SoundServer.env` (``PULSE_SERVER``
pointing at a socket inside the temporary directory).

Both kinds speak the PulseAudio protocol, so ``pactl``/``paplay``/``parec``,
pulsectl and pasimple work the same way against either.

Example::

    with SoundServer("pipewire") as srv:
        srv.create_null_sink("hub")
        print(srv.pactl("info"))
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

__all__ = [
    "ENV_TO_REMOVE",
    "ServerKind",
    "SoundServer",
    "SoundServerError",
    "available_kinds",
]

ServerKind = Literal["pulseaudio", "pipewire"]

#: Variables that would make a client (or a server we start) talk to the
#: user's real session instead of ours.  They are removed from every
#: environment the rig hands out.
ENV_TO_REMOVE: tuple[str, ...] = (
    "DBUS_SESSION_BUS_ADDRESS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "PULSE_SERVER",
    "PULSE_SINK",
    "PULSE_SOURCE",
    "PULSE_COOKIE",
    "PULSE_CLIENTCONFIG",
    "PULSE_CONFIG",
    "PULSE_RUNTIME_PATH",
    "PULSE_STATE_PATH",
    "PULSE_LATENCY_MSEC",
    "PULSE_PROP",
    "PIPEWIRE_REMOTE",
    "PIPEWIRE_RUNTIME_DIR",
    "PIPEWIRE_CONFIG_DIR",
    "PIPEWIRE_LATENCY",
    "PIPEWIRE_DEBUG",
    "WIREPLUMBER_CONFIG_DIR",
    "JACK_DEFAULT_SERVER",
)

_STOP_GRACE_S = 3.0
_READY_TIMEOUT_S = 10.0
_PACTL_TIMEOUT_S = 10.0
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL

_T = TypeVar("_T")


class SoundServerError(RuntimeError):
    """A sound server could not be started, queried or changed."""


def available_kinds() -> list[ServerKind]:
    """The server kinds whose executables are installed on this machine."""
    kinds: list[ServerKind] = []
    if shutil.which("pulseaudio") and shutil.which("pactl"):
        kinds.append("pulseaudio")
    if all(shutil.which(x) for x in ("pipewire", "wireplumber", "pipewire-pulse", "pactl")):
        kinds.append("pipewire")
    return kinds


# --------------------------------------------------------------------------- #
# Process bookkeeping: every server still running at interpreter exit is
# stopped, and each child asks the kernel to SIGTERM it if the test process
# dies without running atexit handlers (PR_SET_PDEATHSIG).
# --------------------------------------------------------------------------- #

_LIVE: set[SoundServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for srv in servers:
        with contextlib.suppress(Exception):
            srv.stop()


atexit.register(_stop_all_at_exit)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # best effort only; never fail the exec
        pass


def _wait_until(
    probe: Callable[[], _T | None],
    timeout: float,
    interval: float = 0.05,
) -> _T | None:
    """Call ``probe`` until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def _tail(path: Path, max_lines: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-max_lines:])


_DIR_PREFIX: dict[ServerKind, str] = {"pulseaudio": "deskcast-pa-", "pipewire": "deskcast-pw-"}
_OWNER_FILE = "owner.pid"


def _sweep_orphans(parent: Path) -> None:
    """Delete server dirs left behind by test processes that were killed
    (their children died with them, see PR_SET_PDEATHSIG, but nothing removed
    the directory).  Only dirs whose recorded owner process is gone."""
    for prefix in _DIR_PREFIX.values():
        for d in parent.glob(f"{prefix}*"):
            try:
                owner = int((d / _OWNER_FILE).read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                shutil.rmtree(d, ignore_errors=True)
            except PermissionError:
                continue


_SHORT_ROW = re.compile(r"^(\d+)\t([^\t\n]*)", re.MULTILINE)


class SoundServer:
    """A private PulseAudio or PipeWire server running in a temporary directory.

    Attributes (valid after :meth:`start`):

    * ``kind`` -- ``"pulseaudio"`` or ``"pipewire"``.
    * ``root`` -- the server's private temporary directory.
    * ``server`` -- the ``PULSE_SERVER`` string (``unix:/…/pulse/native``).
    * ``env_overrides`` -- the variables a client needs set to reach this server.
    * ``env_remove`` -- the variables a client must *not* have (see
      :data:`ENV_TO_REMOVE`).
    * ``env`` -- a complete environment for ``subprocess`` calls: a copy of
      ``os.environ`` (taken at start) without ``env_remove`` and with
      ``env_overrides`` applied.
    """

    def __init__(
        self,
        kind: ServerKind = "pulseaudio",
        *,
        rate: int = 48000,
        min_quantum: int | None = None,
        realtime: bool = False,
    ) -> None:
        """``rate``: the server's default sample rate.  ``min_quantum``
        (PipeWire only): smallest graph period in frames; ``None`` keeps
        PipeWire's default (32, i.e. whatever the most demanding client
        asks for).  A larger floor makes glitches from late scheduling less
        likely on a busy machine, at the cost of latency.  ``realtime``
        (PulseAudio only): run its I/O threads at real-time priority, as a
        desktop's PulseAudio does through rtkit (the tests leave it off so
        that a stuck server cannot starve the machine)."""
        if kind not in ("pulseaudio", "pipewire"):
            raise ValueError(f"unknown sound server kind {kind!r}")
        self.kind: ServerKind = kind
        self.rate = rate
        self.min_quantum = min_quantum
        self.realtime = realtime
        self.root: Path = Path()
        self.server: str = ""
        self.env_overrides: dict[str, str] = {}
        self.env_remove: tuple[str, ...] = ENV_TO_REMOVE
        self.env: dict[str, str] = {}
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: dict[str, Path] = {}
        self._child_env: dict[str, str] = {}
        self._baseline_modules: set[int] = set()
        self._baseline_default_sink: str | None = None
        self._started = False

    # ------------------------------------------------------------------ #
    # lifecycle
    # ------------------------------------------------------------------ #

    def __enter__(self) -> SoundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"<SoundServer {self.kind} {state} {self.server or '-'}>"

    @property
    def running(self) -> bool:
        """True while started and every child process is still alive."""
        return self._started and all(p.poll() is None for _, p in self._procs)

    def start(self) -> SoundServer:
        """Start the server and wait (at most 10 s) until clients can use it."""
        if self._started:
            return self
        prefix = _DIR_PREFIX[self.kind]
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        if len(str(self.root / "run" / "pulse" / "native")) > _UNIX_PATH_MAX:
            # TMPDIR is too deep for a unix socket path; fall back to /tmp.
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        (self.root / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        _sweep_orphans(self.root.parent)
        self._started = True
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._prepare_dirs()
            if self.kind == "pulseaudio":
                self._start_pulseaudio()
            else:
                self._start_pipewire()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every child process (SIGTERM, SIGKILL after 3 s) and delete the
        temporary directory.  Safe to call more than once."""
        procs, self._procs = self._procs, []
        # Newest first: pipewire-pulse and wireplumber before pipewire.
        for _, proc in reversed(procs):
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for _, proc in reversed(procs):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_STOP_GRACE_S)
        if self._started and self.root != Path() and not os.environ.get("DESKCAST_RIG_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)
        self._started = False
        with _LIVE_LOCK:
            _LIVE.discard(self)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        if proc.poll() is not None:
            return
        # Each child leads its own process group (start_new_session=True), so
        # this reaches anything it forked, and nothing else.
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    # ------------------------------------------------------------------ #
    # setup helpers
    # ------------------------------------------------------------------ #

    def _prepare_dirs(self) -> None:
        run = self.root / "run"
        dirs = {
            "HOME": self.root / "home",
            "XDG_RUNTIME_DIR": run,
            "XDG_CONFIG_HOME": self.root / "config",
            "XDG_STATE_HOME": self.root / "state",
            "XDG_DATA_HOME": self.root / "data",
            "XDG_CACHE_HOME": self.root / "cache",
        }
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (run / "pulse").mkdir(exist_ok=True)
        run.chmod(0o700)
        (self.root / "logs").mkdir()

        # Client side: never autospawn a daemon, keep the cookie private.
        client_conf = self.root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        self.server = f"unix:{run / 'pulse' / 'native'}"
        self.env_overrides = {
            "PULSE_SERVER": self.server,
            "PULSE_RUNTIME_PATH": str(run / "pulse"),
            "PULSE_CLIENTCONFIG": str(client_conf),
            "PULSE_COOKIE": str(self.root / "cookie"),
            "PIPEWIRE_RUNTIME_DIR": str(run),
        }
        self.env = self._environment(self.env_overrides)

        child = {k: str(v) for k, v in dirs.items()}
        child.update(self.env_overrides)
        child["LC_ALL"] = "C"
        self._child_env = self._environment(child)

    def _environment(self, overrides: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self.env_remove}
        env.update(overrides)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.root / "logs" / f"{name}.log"
        self._logs[name] = log
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self._child_env,
                cwd=self.root,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self._procs.append((name, proc))
        return proc

    def _fail(self, message: str) -> SoundServerError:
        parts = [f"{self.kind} test server: {message}", f"(temp dir {self.root})"]
        for name, proc in self._procs:
            rc = proc.poll()
            state = "running" if rc is None else f"exit {rc}"
            parts.append(f"--- {name} (pid {proc.pid}, {state})")
        for name, log in self._logs.items():
            parts.append(f"--- tail of {name} log:\n{_tail(log)}")
        return SoundServerError("\n".join(parts))

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise self._fail(f"{name} exited early with status {proc.returncode}")

    def _pactl_ok(self, *args: str) -> str | None:
        try:
            res = subprocess.run(
                ["pactl", *args],
                env=self._child_env,
                capture_output=True,
                text=True,
                timeout=2.0,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        return res.stdout if res.returncode == 0 else None

    def _wait_ready(self, extra: Callable[[], bool] | None = None) -> None:
        def probe() -> bool:
            self._check_alive()
            if self._pactl_ok("info") is None:
                return False
            return extra is None or extra()

        if not _wait_until(probe, _READY_TIMEOUT_S, interval=0.05):
            raise self._fail(f"not ready after {_READY_TIMEOUT_S:.0f} s")

    def _start_pulseaudio(self) -> None:
        socket = self.server.removeprefix("unix:")
        pulse_cfg = self.root / "config" / "pulse"
        pulse_cfg.mkdir(parents=True, exist_ok=True)
        yes_no = "yes" if self.realtime else "no"
        (pulse_cfg / "daemon.conf").write_text(
            "\n".join(
                [
                    f"default-sample-rate = {self.rate}",
                    f"alternate-sample-rate = {self.rate}",
                    "default-sample-channels = 2",
                    "default-sample-format = s16le",
                    "exit-idle-time = -1",
                    "flat-volumes = no",
                    f"high-priority = {yes_no}",
                    f"realtime-scheduling = {yes_no}",
                    "enable-shm = yes",
                    "",
                ]
            )
        )
        # PulseAudio ignores XDG_CONFIG_HOME for daemon.conf; name it directly.
        self._child_env["PULSE_CONFIG"] = str(pulse_cfg / "daemon.conf")
        script = self.root / "startup.pa"
        script.write_text(
            "\n".join(
                [
                    f"load-module module-native-protocol-unix socket={socket} auth-anonymous=1",
                    "load-module module-always-sink",
                    "",
                ]
            )
        )
        # As root, PulseAudio only warns ("not intended to be run as root")
        # as long as --system=false is given explicitly.
        self._spawn(
            "pulseaudio",
            [
                "pulseaudio",
                "-n",
                f"--file={script}",
                "--daemonize=no",
                "--system=false",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--use-pid-file=no",
                f"--high-priority={yes_no}",
                f"--realtime={yes_no}",
                f"--log-target=file:{self.root / 'logs' / 'pulseaudio-server.log'}",
                "--log-level=info",
                "--log-time=yes",
            ],
        )
        self._logs["pulseaudio-server"] = self.root / "logs" / "pulseaudio-server.log"
        self._wait_ready()

    def _start_pipewire(self) -> None:
        wp = self.root / "config" / "wireplumber"
        (wp / "main.lua.d").mkdir(parents=True)
        (wp / "bluetooth.lua.d").mkdir(parents=True)
        (wp / "main.lua.d" / "51-test.lua").write_text(
            "\n".join(
                [
                    "-- deskcast test rig: no hardware, no D-Bus, no saved state",
                    'alsa_monitor.properties["alsa.reserve"] = false',
                    'default_access.properties["enable-flatpak-portal"] = false',
                    'stream_defaults.properties["restore-target"] = false',
                    'stream_defaults.properties["restore-props"] = false',
                    'device_defaults.properties["use-persistent-storage"] = false',
                    "v4l2_monitor.enabled = false",
                    "libcamera_monitor.enabled = false",
                    "",
                ]
            )
        )
        (wp / "bluetooth.lua.d" / "51-test.lua").write_text(
            'bluez_monitor.properties["with-logind"] = false\nbluez_monitor.enabled = false\n'
        )
        clock = [
            f"    default.clock.rate = {self.rate}",
            f"    default.clock.allowed-rates = [ {self.rate} ]",
        ]
        if self.min_quantum is not None:
            quantum = max(self.min_quantum, 1024)
            clock += [
                f"    default.clock.min-quantum = {self.min_quantum}",
                f"    default.clock.quantum = {quantum}",
                f"    default.clock.max-quantum = {max(quantum, 2048)}",
            ]
        conf_d = self.root / "config" / "pipewire" / "pipewire.conf.d"
        conf_d.mkdir(parents=True)
        (conf_d / "50-deskcast-test.conf").write_text(
            "context.properties = {\n" + "\n".join(clock) + "\n}\n"
        )
        run = self.root / "run"
        self._spawn("pipewire", ["pipewire"])

        def socket_ready() -> bool:
            self._check_alive()
            return (run / "pipewire-0").exists()

        if not _wait_until(socket_ready, _READY_TIMEOUT_S):
            raise self._fail("pipewire-0 socket did not appear")
        self._spawn("wireplumber", ["wireplumber"])
        self._spawn("pipewire-pulse", ["pipewire-pulse"])

        def session_manager_ready() -> bool:
            # Until WirePlumber has published the default nodes the answer is
            # the literal "@DEFAULT_SINK@"; streams would not be linked yet.
            out = self._pactl_ok("get-default-sink")
            return out is not None and bool(out.strip()) and not out.startswith("@")

        self._wait_ready(session_manager_ready)

    # ------------------------------------------------------------------ #
    # queries and changes
    # ------------------------------------------------------------------ #

    def _require_started(self) -> None:
        if not self._started:
            raise SoundServerError(f"{self.kind} test server is not running")

    def pactl(self, *args: str, timeout: float = _PACTL_TIMEOUT_S) -> str:
        """Run ``pactl ARGS`` against this server and return its stdout.

        Raises :class:`SoundServerError` (with pactl's stderr) on failure.
        """
        self._require_started()
        try:
            res = subprocess.run(
                ["pactl", *args],
                env=self._child_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise self._fail(f"pactl {' '.join(args)} timed out after {timeout} s") from exc
        if res.returncode != 0:
            raise SoundServerError(
                f"pactl {' '.join(args)} failed on {self.kind} (exit {res.returncode}): "
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
        return res.stdout

    def info(self) -> dict[str, str]:
        """``pactl info`` as a dict (keys as pactl prints them, e.g. ``Server Name``)."""
        out: dict[str, str] = {}
        for line in self.pactl("info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def _short_list(self, what: str) -> list[tuple[int, str]]:
        return [(int(m[1]), m[2]) for m in _SHORT_ROW.finditer(self.pactl("list", "short", what))]

    def sinks(self) -> list[str]:
        """Names of all sinks, in server order."""
        return [name for _, name in self._short_list("sinks")]

    def sources(self) -> list[str]:
        """Names of all sources (monitors included), in server order."""
        return [name for _, name in self._short_list("sources")]

    def modules(self) -> dict[int, str]:
        """Loaded modules: index -> module name."""
        return dict(self._short_list("modules"))

    def default_sink(self) -> str:
        return self.pactl("get-default-sink").strip()

    def default_source(self) -> str:
        return self.pactl("get-default-source").strip()

    def set_default_sink(self, name: str, timeout: float = 5.0) -> None:
        """Make ``name`` the default sink and wait until the server reports it.

        (On PipeWire the change goes through WirePlumber and shows up a moment
        later.)
        """
        self.pactl("set-default-sink", name)
        if not _wait_until(lambda: self.default_sink() == name, timeout):
            raise SoundServerError(
                f"{self.kind}: default sink is {self.default_sink()!r}, wanted {name!r}"
            )

    def create_null_sink(
        self,
        name: str,
        rate: int = 48000,
        channels: int = 2,
        description: str | None = None,
        *,
        timeout: float = 5.0,
        norewinds: bool = True,
    ) -> int:
        """Load ``module-null-sink`` named ``name`` and wait until the sink and
        its ``NAME.monitor`` source are listed.  Returns the module index.

        ``norewinds`` (PulseAudio only; PipeWire has no rewinds): load the sink
        with ``norewinds=1``.  A stock PulseAudio null sink renders in blocks
        of up to 2 s while idle, so a new capture of its monitor gets its
        first bytes only after up to 2 s, and it rewinds to mix in a new
        stream, so the monitor loses the first ~10-15 ms of every stream that
        starts.  With ``norewinds=1`` the monitor delivers within ~50 ms and
        bit-exactly.  Pass False to get the stock behaviour.
        """
        args = [
            "load-module",
            "module-null-sink",
            f"sink_name={name}",
            f"rate={rate}",
            f"channels={channels}",
        ]
        if norewinds and self.kind == "pulseaudio":
            args.append("norewinds=1")
        desc = description if description is not None else name
        # Module arguments are split on blanks unless quoted; quotes inside
        # the description cannot be escaped reliably on both servers.
        plain = desc.replace('"', "").replace("'", "")
        args.append(f"sink_properties='device.description=\"{plain}\"'")
        module = int(self.pactl(*args).strip())

        def present() -> bool:
            return name in self.sinks() and f"{name}.monitor" in self.sources()

        if not _wait_until(present, timeout):
            raise self._fail(f"null sink {name!r} (module {module}) did not appear")
        return module

    def unload_module(self, index: int) -> None:
        self.pactl("unload-module", str(index))

    def sink_inputs(self) -> list[dict[str, Any]]:
        """Playback streams: ``[{"index", "sink", "application", "media",
        "corked", "properties"}, ...]`` where ``sink`` is the sink *name*, or
        None while the stream is not connected to a sink yet (on PipeWire a
        new stream is listed a moment before WirePlumber links it)."""
        return self._streams("sink-inputs", "Sink Input", "Sink", self._short_list("sinks"))

    def source_outputs(self) -> list[dict[str, Any]]:
        """Capture streams: like :meth:`sink_inputs` with ``source`` instead of
        ``sink``."""
        return self._streams(
            "source-outputs", "Source Output", "Source", self._short_list("sources")
        )

    def _streams(
        self, what: str, header: str, device_key: str, devices: list[tuple[int, str]]
    ) -> list[dict[str, Any]]:
        names = dict(devices)
        text = self.pactl("list", what)
        streams: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        in_props = False
        head = re.compile(rf"^{re.escape(header)} #(\d+)")
        prop = re.compile(r'^\s+([\w.\-]+) = "(.*)"$')
        for line in text.splitlines():
            if m := head.match(line):
                current = {
                    "index": int(m[1]),
                    device_key.lower(): None,
                    "application": None,
                    "media": None,
                    "corked": None,
                    "properties": {},
                }
                streams.append(current)
                in_props = False
                continue
            if current is None:
                continue
            stripped = line.strip()
            if line.startswith("\t") and not line.startswith("\t\t"):
                in_props = stripped == "Properties:"
                key, _, value = stripped.partition(": ")
                if key == device_key:
                    # PipeWire lists a stream before WirePlumber has linked it,
                    # with index 4294967295 (PA_INVALID_INDEX): reported as None.
                    with contextlib.suppress(ValueError):
                        current[device_key.lower()] = names.get(int(value))
                elif key == "Corked":
                    current["corked"] = value == "yes"
            elif in_props and (pm := prop.match(line)):
                current["properties"][pm[1]] = pm[2]
        for s in streams:
            props = s["properties"]
            s["application"] = props.get("application.name")
            s["media"] = props.get("media.name")
        return streams

    def wait_for(self, probe: Callable[[], _T | None], timeout: float = 5.0) -> _T:
        """Poll ``probe`` every 50 ms until it returns a truthy value; return it
        or raise :class:`SoundServerError` after ``timeout`` seconds."""
        result = _wait_until(probe, timeout)
        if result is None:
            raise SoundServerError(f"{self.kind}: condition not met within {timeout} s")
        return result

    # ------------------------------------------------------------------ #
    # state between tests
    # ------------------------------------------------------------------ #

    def mark_baseline(self) -> None:
        """Remember the current modules and default sink; :meth:`reset` returns
        to this state."""
        self._baseline_modules = set(self.modules())
        self._baseline_default_sink = self.default_sink()

    def reset(self) -> None:
        """Unload modules loaded since :meth:`mark_baseline` (null sinks a test
        made, …) and restore the default sink."""
        if not self.running:
            raise self._fail("a server process has died")
        extra = sorted(set(self.modules()) - self._baseline_modules, reverse=True)
        for index in extra:
            with contextlib.suppress(SoundServerError):
                self.unload_module(index)
        if self._baseline_default_sink and self.default_sink() != self._baseline_default_sink:
            self.set_default_sink(self._baseline_default_sink)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every server log (for failure messages)."""
        return "\n".join(f"--- {n}:\n{_tail(p, lines)}" for n, p in self._logs.items())
