"""Play into and record from a test :class:`~rig.soundserver.SoundServer`
with the stock command-line clients (``paplay``, ``parec``).

Recording from a null sink's monitor has one trap: the data only comes out
promptly once the capture stream is flowing.  A stock PulseAudio null sink
renders in blocks of up to 2 s while idle, so the first bytes of a new
capture show up only 0-2 s later (sinks made by
:meth:`SoundServer.create_null_sink` use ``norewinds=1``, which avoids that);
on PipeWire a suspended sink starts as soon as the capture is linked.  So
the rule is: start capture, wait for the first bytes, *then* play.
:class:`Recorder` does exactly that.  ``parec`` is always run with a small
``--latency-msec``; without it, it delivers in ~2 s chunks.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from .signals import Audio, level_db
from .soundserver import SoundServer

__all__ = [
    "CaptureError",
    "Recorder",
    "play",
    "play_and_record",
    "play_file",
    "record",
    "wait_played",
]

_CAPTURE_LATENCY_MS = 20
_FIRST_BYTES_TIMEOUT_S = 10.0


class CaptureError(RuntimeError):
    """paplay/parec failed or delivered too little."""


def _bytes_to_audio(data: bytes | bytearray, channels: int) -> Audio:
    frame = 2 * channels
    usable = len(data) - len(data) % frame
    pcm = np.frombuffer(bytes(data[:usable]), dtype="<i2")
    return (pcm.astype(np.float64) / 32768.0).reshape(-1, channels)


def _parec_argv(source: str, rate: int, channels: int, latency_ms: int) -> list[str]:
    return [
        "parec",
        f"--device={source}",
        "--format=s16le",
        f"--rate={rate}",
        f"--channels={channels}",
        "--raw",
        f"--latency-msec={latency_ms}",
        "--client-name=deskcast-test-rig",
        "--stream-name=rig capture",
    ]


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """SIGINT (parec/paplay quit cleanly on it), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# --------------------------------------------------------------------------- #
# playback
# --------------------------------------------------------------------------- #


def play_file(
    server: SoundServer,
    wav_path: str | Path,
    sink: str,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start ``paplay --device=SINK WAV`` and return at once.

    stdout is discarded and stderr is a pipe: finish the process with
    :func:`wait_played` (or use it as a context manager / call
    ``communicate()``) so that no pipe or process is left behind.
    """
    return subprocess.Popen(
        [
            "paplay",
            f"--device={sink}",
            *extra_args,
            str(wav_path),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server.env,
    )


def wait_played(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait for a :func:`play_file` process, close its pipe, and raise
    :class:`CaptureError` (with paplay's message) if it failed."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_process(proc)
        proc.communicate()
        raise CaptureError(f"paplay did not finish within {timeout} s") from None
    if proc.returncode != 0:
        raise CaptureError(
            f"paplay failed (exit {proc.returncode}): {err.decode(errors='replace').strip()}"
        )


def play(server: SoundServer, wav_path: str | Path, sink: str, timeout: float = 30.0) -> None:
    """Play a file into ``sink`` and wait until paplay is done."""
    wait_played(play_file(server, wav_path, sink), timeout)


# --------------------------------------------------------------------------- #
# recording
# --------------------------------------------------------------------------- #


def record(
    server: SoundServer,
    source: str,
    seconds: float,
    rate: int = 48000,
    channels: int = 2,
    *,
    timeout: float | None = None,
) -> Audio:
    """Record exactly ``seconds`` of ``source`` with parec and return it as
    float64 ``(frames, channels)``.

    Counts bytes, not wall time, so the result always has
    ``round(seconds*rate)`` frames; raises :class:`CaptureError` if that much
    did not arrive within ``timeout`` (default ``seconds + 10``).
    """
    want = round(seconds * rate) * 2 * channels
    limit = seconds + _FIRST_BYTES_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + limit
    buf = bytearray()
    with subprocess.Popen(
        _parec_argv(source, rate, channels, _CAPTURE_LATENCY_MS),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server.env,
    ) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while len(buf) < want:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if not sel.select(timeout=min(left, 0.5)):
                        continue
                    chunk = os.read(fd, min(65536, want - len(buf)))
                    if not chunk:
                        break
                    buf.extend(chunk)
        finally:
            _stop_process(proc)
            err = proc.stderr.read() if proc.stderr else b""
    if len(buf) < want:
        raise CaptureError(
            f"parec {source}: got {len(buf)} of {want} bytes "
            f"(exit {proc.returncode}): {err.decode(errors='replace').strip()}"
        )
    return _bytes_to_audio(buf, channels)


class Recorder:
    """Record ``source`` in the background while the body of a ``with`` runs.

    ``__enter__`` starts parec and returns only once the first bytes have
    arrived (so whatever is played afterwards is captured promptly and
    completely).  ``__exit__`` keeps recording for ``linger`` seconds, to
    catch what is still in the server's buffers, then stops parec.  The
    result is in :attr:`audio` (float64 ``(frames, channels)``)::

        with Recorder(server, "hub.monitor") as rec:
            play(server, "tone.wav", "hub")
        audio = rec.audio

    Frame 0 of :attr:`audio` is the first captured frame, about one
    fragment (``latency_ms``) before ``__enter__`` returned; :meth:`mark`
    gives the frame count at a moment during recording, for rough timing.
    """

    def __init__(
        self,
        server: SoundServer,
        source: str,
        rate: int = 48000,
        channels: int = 2,
        *,
        linger: float = 0.3,
        latency_ms: int = _CAPTURE_LATENCY_MS,
        start_timeout: float = _FIRST_BYTES_TIMEOUT_S,
    ) -> None:
        self.server = server
        self.source = source
        self.rate = rate
        self.channels = channels
        self.linger = linger
        self.latency_ms = latency_ms
        self.start_timeout = start_timeout
        self.audio: Audio = np.zeros((0, channels), dtype=np.float64)
        #: Frames captured when ``__enter__`` returned (all pre-roll).
        self.preroll_frames = 0
        #: Seconds from starting parec to its first bytes.
        self.first_bytes_after = 0.0
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._got_data = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stderr = b""
        self._finished = False

    # -- context manager --------------------------------------------------

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(linger=self.linger if exc_type is None else 0.0)

    # -- control ----------------------------------------------------------

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("Recorder already started")
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            _parec_argv(self.source, self.rate, self.channels, self.latency_ms),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.server.env,
        )
        self._thread = threading.Thread(
            target=self._pump, name=f"Recorder({self.source})", daemon=True
        )
        self._thread.start()
        deadline = t0 + self.start_timeout
        while not self._got_data.wait(timeout=0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._finish()
                raise CaptureError(
                    f"parec {self.source}: no data within {self.start_timeout} s "
                    f"(exit {self._proc.returncode}): "
                    f"{self._stderr.decode(errors='replace').strip()}"
                )
        self.first_bytes_after = time.monotonic() - t0
        self.preroll_frames = self.mark()

    def stop(self, linger: float = 0.0) -> Audio:
        """Stop recording (after ``linger`` seconds) and return :attr:`audio`."""
        if self._proc is None:
            return self.audio
        if linger > 0:
            time.sleep(linger)
        self._finish()
        with self._lock:
            self.audio = _bytes_to_audio(self._buf, self.channels)
        return self.audio

    def _finish(self) -> None:
        proc = self._proc
        if proc is None or self._finished:
            return
        self._finished = True
        _stop_process(proc)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            self._stderr = proc.stderr.read()
            proc.stderr.close()

    def _pump(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        fd = proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                self._buf.extend(chunk)
            self._got_data.set()

    # -- while running ----------------------------------------------------

    def mark(self) -> int:
        """Number of whole frames captured so far."""
        with self._lock:
            return len(self._buf) // (2 * self.channels)

    def snapshot(self) -> Audio:
        """Everything captured so far (recording goes on)."""
        with self._lock:
            return _bytes_to_audio(self._buf, self.channels)

    def wait_for_frames(self, frames: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``frames`` frames have been captured."""
        deadline = time.monotonic() + timeout
        while self.mark() < frames:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def wait_for_sound(
        self,
        timeout: float = 10.0,
        threshold_db: float = -50.0,
        window: float = 0.05,
    ) -> bool:
        """Wait until the latest ``window`` seconds captured are louder than
        ``threshold_db`` (checked only on audio captured after the call)."""
        start = self.mark()
        n = max(1, round(window * self.rate))
        deadline = time.monotonic() + timeout
        while time.monotonic() <= deadline:
            with self._lock:
                frames = len(self._buf) // (2 * self.channels)
                if frames - start >= n:
                    lo = (frames - n) * 2 * self.channels
                    hi = frames * 2 * self.channels
                    tail = _bytes_to_audio(self._buf[lo:hi], self.channels)
                else:
                    tail = None
            if tail is not None and level_db(tail) >= threshold_db:
                return True
            time.sleep(0.01)
        return False


def play_and_record(
    server: SoundServer,
    wav_path: str | Path,
    sink: str,
    source: str | None = None,
    *,
    linger: float = 0.3,
    timeout: float = 30.0,
) -> Audio:
    """Record ``source`` (default ``SINK.monitor``) while ``wav_path`` plays
    into ``sink``; returns the whole capture."""
    with Recorder(server, source or f"{sink}.monitor", linger=linger) as rec:
        play(server, wav_path, sink, timeout=timeout)
    return rec.audio
