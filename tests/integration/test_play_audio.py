"""Audio really passes through deskcast: real sound servers, real files, the real CLI."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from rig import SoundServer
from rig.capture import Recorder, play_file, wait_played
from rig.signals import correlation, dominant_frequency, level_db, read_wav, tone, write_wav

from .conftest import DESKCAST, Cli, audible, finish, wait_for_line

RATE = 48000


def test_speech_in_the_hub_is_captured_by_play(sound_server: SoundServer, cli: Cli,
                                               speech_file: Path, tmp_path: Path) -> None:
    """paplay -> hub -> `deskcast play pulse:hub.monitor file:x.wav` -> the same speech."""
    out = tmp_path / "captured.wav"
    proc = cli.start("-v", "play", "pulse:hub.monitor", f"file:{out}", "-t", "7")
    wait_for_line(proc, "playing pulse:hub.monitor")
    time.sleep(0.5)  # let capture flow before anything plays (null-sink monitor latency)
    wait_played(play_file(sound_server, speech_file, "hub"))
    status, err = finish(proc)
    assert status == 0, err
    captured, rate = read_wav(out)
    reference, _ = read_wav(speech_file)
    assert rate == RATE and captured.shape == (7 * RATE, 2)
    assert correlation(reference, captured) > 0.95
    assert abs(level_db(captured[np.abs(captured).max(axis=1) > 0]) - level_db(reference)) < 6


@pytest.mark.parametrize("freq", [440.0, 1234.0])
def test_tone_source_plays_into_a_sink_at_the_right_frequency(
        sound_server: SoundServer, cli: Cli, freq: float) -> None:
    with Recorder(sound_server, "out.monitor") as rec:
        result = cli.run("play", f"tone:{freq}", "pulse:out", "-t", "1.5")
        assert result.returncode == 0, result.stderr
    heard = audible(rec.audio)
    assert len(heard) > RATE  # at least 1 s of the 1.5 s arrived
    assert dominant_frequency(heard, RATE) == pytest.approx(freq, abs=1.0)
    assert level_db(heard) == pytest.approx(-15.0, abs=1.0)  # -12 dBFS peak sine


def test_alsa_path_through_the_pulse_plugin(sound_server: SoundServer, cli: Cli,
                                            tmp_path: Path) -> None:
    """Capture and playback through plain ALSA (`alsa:pulse:…`), as on a machine without
    libpulse clients: a tone played with `alsa:pulse:out` is captured by
    `alsa:pulse:out.monitor`."""
    out = tmp_path / "alsa.wav"
    cap = cli.start("-v", "play", "alsa:pulse:out.monitor", f"file:{out}", "-t", "4")
    wait_for_line(cap, "playing alsa:pulse:out.monitor")
    time.sleep(0.5)
    result = cli.run("play", "tone:880", "alsa:pulse:out", "-t", "2")
    assert result.returncode == 0, result.stderr
    status, err = finish(cap)
    assert status == 0, err
    captured, _ = read_wav(out)
    heard = audible(captured)
    assert len(heard) > 1.5 * RATE
    assert dominant_frequency(heard, RATE) == pytest.approx(880.0, abs=1.0)
    assert correlation(tone(880.0, 0.5), heard[RATE // 2: RATE]) > 0.99


def test_file_source_through_a_real_sink_keeps_its_content(
        sound_server: SoundServer, cli: Cli, speech_file: Path) -> None:
    with Recorder(sound_server, "out.monitor") as rec:
        result = cli.run("play", f"file:{speech_file}", "pulse:out")
        assert result.returncode == 0, result.stderr
    reference, _ = read_wav(speech_file)
    assert correlation(reference, rec.audio) > 0.95


def test_mp3_file_is_decoded_and_resampled(cli: Cli, tmp_path: Path) -> None:
    """Any format ffmpeg reads: a 44.1 kHz mono MP3 comes out as 48 kHz stereo."""
    src = tmp_path / "in.wav"
    write_wav(src, tone(2000.0, 1.0, rate=44100, channels=1), 44100)
    mp3 = tmp_path / "in.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-b:a", "128k", str(mp3)],
                   check=True)
    out = tmp_path / "out.flac"
    result = cli.run("play", f"file:{mp3}?pace=0", f"file:{out}")
    assert result.returncode == 0, result.stderr
    data, rate = soundfile.read(str(out))
    assert rate == RATE and data.shape[1] == 2
    assert data.shape[0] == pytest.approx(RATE, abs=3000)  # MP3 adds encoder padding
    assert dominant_frequency(data, RATE) == pytest.approx(2000.0, abs=1.0)
    assert level_db(data[5000:40000, 0]) == pytest.approx(-12.0, abs=0.5)  # mono -> both at full


def test_file_pacing_is_real_time_end_to_end(cli: Cli, tmp_path: Path) -> None:
    """`play file:3s.wav null` takes 3 s of wall time (plus start-up), not 0.1 s."""
    src = tmp_path / "three.wav"
    write_wav(src, tone(500.0, 3.0), RATE)
    start = time.monotonic()
    result = cli.run("-v", "play", f"file:{src}", "null")
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert 2.95 < elapsed < 5.0


@pytest.mark.parametrize("ext", ["wav", "flac"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_leaves_a_complete_file(cli: Cli, tmp_path: Path, ext: str,
                                         sig: signal.Signals) -> None:
    out = tmp_path / f"stopped.{ext}"
    proc = cli.start("-v", "play", "tone:1000", f"file:{out}")
    wait_for_line(proc, "playing tone:1000")
    time.sleep(1.2)
    proc.send_signal(sig)
    status, err = finish(proc, timeout=10)
    assert status == 0, err
    assert "Traceback" not in err
    data, rate = soundfile.read(str(out))  # raises if the header was not finalised
    assert rate == RATE
    assert 0.8 * RATE < len(data) < 5 * RATE
    assert dominant_frequency(data, RATE) == pytest.approx(1000.0, abs=1.0)


def test_stdout_sink_and_stdin_source_pipe_together(cli: Cli, tmp_path: Path) -> None:
    first = cli.run("play", "tone:3000", "-", "-t", "0.5")
    assert first.returncode == 0 and len(first.stdout) == RATE // 2 * 4
    out = tmp_path / "piped.wav"
    second = cli.run("play", "-", f"file:{out}", stdin=first.stdout)
    assert second.returncode == 0, second.stderr
    data, _ = soundfile.read(str(out))
    assert len(data) == RATE // 2
    assert dominant_frequency(data, RATE) == pytest.approx(3000.0, abs=1.0)


def test_closed_stdout_ends_play_quietly(cli: Cli) -> None:
    proc = subprocess.Popen([*DESKCAST, "play", "tone", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli.env)
    assert proc.stdout is not None
    proc.stdout.read(48000)
    proc.stdout.close()
    status, err = finish(proc)
    assert status == 0 and err == ""


def test_meter_on_a_terminal_and_quiet_otherwise(cli: Cli, tmp_path: Path) -> None:
    quiet = cli.run("play", "tone", "null", "-t", "0.5")
    assert quiet.returncode == 0 and quiet.stderr == b""

    controller, child = pty.openpty()
    proc = subprocess.Popen([*DESKCAST, "play", "tone:440?level=-6", "null", "-t", "1.2"],
                            stdout=child, stderr=child, stdin=subprocess.DEVNULL, env=cli.env)
    os.close(child)
    output = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(timeout=10) == 0
    text = output.decode(errors="replace")
    assert "\r" in text and "dBFS" in text
    assert "00:01" in text           # elapsed time
    assert " -6.0 dBFS" in text      # the peak of a -6 dBFS tone
    assert "L [" in text and "R [" in text
