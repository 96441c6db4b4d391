"""Shared fixtures: private PulseAudio and PipeWire servers for the whole session.

* ``pulseaudio_server`` / ``pipewire_server`` (session): a started
  :class:`rig.SoundServer` with null sinks ``hub`` and ``out`` (48 kHz stereo),
  ``hub`` the default sink.  Started on first use, stopped at session end.
* ``sound_server`` (function, parametrized ``pa``/``pw``): one of the two, with
  ``os.environ`` pointed at it for the test (``PULSE_SERVER``,
  ``PULSE_RUNTIME_PATH``, … set; ``DBUS_SESSION_BUS_ADDRESS``, ``DISPLAY``,
  other ``PULSE_*``/``PIPEWIRE_*`` removed), so in-process libpulse users
  (pulsectl, pasimple) and subprocesses reach it.  Modules a test loads are
  unloaded and the default sink is reset to ``hub`` afterwards.

The PipeWire server runs with a minimum graph period (quantum) of 2048 frames
(42.7 ms): with PipeWire's default of "as small as a client asks", a 20 ms
capture makes the period 1024 frames and on this 2-vCPU VM about 1 playback in
10-30 got a whole period of silence inserted (an xrun).  Set
``DESKCAST_PW_MIN_QUANTUM`` to another number, or to ``0`` for PipeWire's
stock behaviour (e.g. for latency measurements).

Tests using any of these get the ``audio`` and ``realtime`` markers automatically.  If the
server programs are not installed the tests are skipped, unless ``CI`` or
``DESKCAST_REQUIRE_AUDIO`` is set, in which case they fail.

Run in parallel (``./bootstrap test`` runs ``pytest -n 2``, pytest-xdist), each worker has
its own servers, and the ``realtime`` tests (the ``audio`` ones, those of
``_REALTIME_MODULES`` and those marked so) take turns (:func:`one_audio_test_at_a_time`):
they judge audio in real time (levels, gaps, onsets), and two of them side by side on a
2-vCPU machine starve each other into dropouts. The ``cpu_heavy`` tests (minutes to an hour
of audio simulated in a unit test) run beside each other but never beside a ``realtime``
one; everything else runs beside anything.

A test that reaches a sound server without the ``realtime`` mark fails at once, saying so
(:func:`_reach`): a fixture that asks for a server through ``request.getfixturevalue``
hides it from the automatic marking, and such a test would run beside the others.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # so `import rig` also works with --import-mode=importlib
    sys.path.insert(0, str(_HERE))

from rig import HUB, OUT, ServerKind, SoundServer  # noqa: E402
from rig.icecast import icecast, icecast_session  # noqa: E402, F401  (private icecast2 fixtures)
from rig.signals import speech_wav, tone, write_wav  # noqa: E402
from rig.tools import missing_tool  # noqa: E402

_KIND_BY_ID: dict[str, ServerKind] = {"pa": "pulseaudio", "pw": "pipewire"}
_SERVER_FIXTURES = frozenset({"pulseaudio_server", "pipewire_server", "sound_server"})
_NEEDS: dict[ServerKind, tuple[str, ...]] = {
    "pulseaudio": ("pulseaudio", "pactl", "paplay", "parec"),
    "pipewire": ("pipewire", "wireplumber", "pipewire-pulse", "pactl", "paplay", "parec"),
}


_REALTIME_MODULES = frozenset({"test_send_receive.py", "test_faults.py", "test_realtime.py",
                               "test_srtp.py", "test_sdp_ffmpeg.py", "test_route.py"})
"""Modules of tests/integration whose tests judge audio in real time without a sound server
(to files, from the paced tone generator), or reach one through ``request.getfixturevalue``
(test_route.py's ``pa``): they take turns too."""
_LOCK_HELD = pytest.StashKey[int]()
"""The mode of the real-time lock the running test holds (``fcntl.LOCK_EX``/``LOCK_SH``)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "audio: needs a running sound server (started by the test rig)"
    )
    config.addinivalue_line(
        "markers", "realtime: judges audio in real time; under pytest-xdist these take turns"
    )
    config.addinivalue_line(
        "markers", "cpu_heavy: keeps a core busy for seconds (a long simulation); under "
        "pytest-xdist never beside a realtime test"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.audio)
            item.add_marker(pytest.mark.realtime)
            continue
        own_server = item.get_closest_marker("audio") is not None  # e.g. rig's start/stop
        listed = item.path.parent.name == "integration" and item.path.name in _REALTIME_MODULES
        if own_server or listed:
            item.add_marker(pytest.mark.realtime)


def _lock_mode(item: pytest.Item) -> int | None:
    if item.get_closest_marker("realtime") is not None:
        return fcntl.LOCK_EX
    if item.get_closest_marker("cpu_heavy") is not None:
        return fcntl.LOCK_SH
    return None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def one_audio_test_at_a_time(item: pytest.Item) -> Iterator[None]:
    """Under pytest-xdist, hold a lock shared by the run's workers while a ``realtime`` test
    runs (exclusive: no two of them at once, nor a ``cpu_heavy`` one beside) or a
    ``cpu_heavy`` one (shared: beside each other). A no-op in a plain run.

    Taken around the whole test (set-up to tear-down, a session server's start included)
    and outside pytest-timeout's timer: the wait for the other worker's test is not the
    test's time."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    mode = _lock_mode(item)
    if run is None or mode is None:
        yield
        return
    path = Path(tempfile.gettempdir()) / f"deskcast-tests-{run}.audio.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, mode)  # released when the file is closed
        item.stash[_LOCK_HELD] = mode
        try:
            yield
        finally:
            del item.stash[_LOCK_HELD]


pytest_runtest_protocol = one_audio_test_at_a_time


def _pw_min_quantum() -> int | None:
    value = int(os.environ.get("DESKCAST_PW_MIN_QUANTUM", "2048"))
    return value if value > 0 else None


def _start_session_server(kind: ServerKind) -> SoundServer:
    missing = [tool for tool in _NEEDS[kind] if shutil.which(tool) is None]
    if missing:
        missing_tool(f"{kind} test server needs {', '.join(missing)} (not installed)")
    min_quantum = _pw_min_quantum() if kind == "pipewire" else None
    server = SoundServer(kind, min_quantum=min_quantum).start()
    try:
        server.create_null_sink(HUB, rate=48000, channels=2, description="deskcast test hub")
        server.create_null_sink(OUT, rate=48000, channels=2, description="deskcast test out")
        server.set_default_sink(HUB)
        server.mark_baseline()
    except BaseException:
        server.stop()
        raise
    return server


class _SessionServer:
    """A worker's server of one kind, started by the first test that reaches it (inside the
    real-time lock), stopped at the end of the session."""

    def __init__(self, kind: ServerKind) -> None:
        self.kind = kind
        self.server: SoundServer | None = None

    def get(self) -> SoundServer:
        if self.server is None:
            self.server = _start_session_server(self.kind)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def _pulseaudio_session() -> Iterator[_SessionServer]:
    holder = _SessionServer("pulseaudio")
    try:
        yield holder
    finally:
        holder.stop()


@pytest.fixture(scope="session")
def _pipewire_session() -> Iterator[_SessionServer]:
    holder = _SessionServer("pipewire")
    try:
        yield holder
    finally:
        holder.stop()


def _reach(request: pytest.FixtureRequest, holder: _SessionServer) -> SoundServer:
    """The session's server for the test that asks, if it takes its turn with the other
    real-time tests; else it fails, saying so, before it plays a sample."""
    item = request.node
    if item.get_closest_marker("realtime") is None:
        pytest.fail(f"{item.nodeid} reaches the {holder.kind} test server but is not marked "
                    "realtime, so under pytest-xdist it would run beside the tests that judge "
                    "audio in real time: mark it @pytest.mark.realtime (a fixture that asks "
                    "for the server through request.getfixturevalue hides it from the "
                    "automatic marking in tests/conftest.py)", pytrace=False)
    if os.environ.get("PYTEST_XDIST_TESTRUNUID") is not None and \
            item.stash.get(_LOCK_HELD, None) != fcntl.LOCK_EX:
        pytest.fail(f"{item.nodeid} reaches the {holder.kind} test server without holding "
                    "the real-time lock (tests/conftest.py one_audio_test_at_a_time)",
                    pytrace=False)
    return holder.get()


@pytest.fixture
def pulseaudio_server(request: pytest.FixtureRequest,
                      _pulseaudio_session: _SessionServer) -> SoundServer:
    """The worker's PulseAudio server (started once, for the session)."""
    return _reach(request, _pulseaudio_session)


@pytest.fixture
def pipewire_server(request: pytest.FixtureRequest,
                    _pipewire_session: _SessionServer) -> SoundServer:
    """The worker's PipeWire server (started once, for the session)."""
    return _reach(request, _pipewire_session)


@pytest.fixture(params=["pa", "pw"])
def sound_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SoundServer]:
    kind = _KIND_BY_ID[request.param]
    server: SoundServer = request.getfixturevalue(f"{kind}_server")
    server.reset()
    for name in server.env_remove:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env_overrides.items():
        monkeypatch.setenv(name, value)
    yield server
    server.reset()


@pytest.fixture(scope="session")
def tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s, 1 kHz, -12 dBFS RMS, 48 kHz stereo 16-bit WAV."""
    path = tmp_path_factory.mktemp("signals") / "tone-1k.wav"
    return write_wav(path, tone(1000.0, 1.0, level_db=-12.0), 48000)


@pytest.fixture(scope="session")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short spoken sentence (espeak-ng), 48 kHz stereo 16-bit WAV."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        missing_tool("espeak-ng and sox are needed for speech_file")
    path = tmp_path_factory.mktemp("signals") / "speech.wav"
    return speech_wav(path, "Testing deskcast, one two three.")
