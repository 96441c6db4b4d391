"""Every user error is one line and exit status 2; -v/--debug add detail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from rig import SoundServer
from rig.signals import level_db

from .conftest import Cli, one_error_line


def test_unknown_pulse_source_lists_the_available_ones(sound_server: SoundServer,
                                                      cli: Cli) -> None:
    line = one_error_line(cli.run("play", "pulse:nope.monitor", "null", "-t", "1"))
    assert "'nope.monitor'" in line and "hub.monitor" in line and "out.monitor" in line


def test_unknown_pulse_sink_lists_the_available_ones(sound_server: SoundServer,
                                                    cli: Cli) -> None:
    line = one_error_line(cli.run("play", "tone", "pulse:speakers", "-t", "1"))
    assert "'speakers'" in line and "hub, out" in line


def test_unknown_alsa_device_lists_the_available_ones(cli: Cli) -> None:
    line = one_error_line(cli.run("play", "tone", "alsa:nonexistent", "-t", "1"))
    assert "'nonexistent'" in line and "available:" in line and "pulse" in line


@pytest.mark.parametrize("args", [("play", "pulse", "null", "-t", "1"),
                                  ("play", "tone", "pulse", "-t", "1"),
                                  ("hub", "setup", "--backend", "pulse")])
def test_no_sound_server(cli: Cli, no_server_env: dict[str, str],
                         args: tuple[str, ...]) -> None:
    line = one_error_line(cli.run(*args, env=no_server_env, timeout=20))
    assert "no PulseAudio/PipeWire server is answering" in line
    assert "start it" in line


def test_debug_adds_the_traceback(cli: Cli, no_server_env: dict[str, str]) -> None:
    result = cli.run("--debug", "play", "pulse", "null", env=no_server_env, timeout=20)
    assert result.returncode == 2
    assert b"Traceback" in result.stderr


@pytest.mark.parametrize(
    "source, message",
    [("file:/nonexistent/song.mp3", "does not exist"),
     ("bogus:uri", "unknown source 'bogus:uri'"),
     ("file:song.mp3?shuffle", "unknown option 'shuffle'"),
     ("tone:99999", "frequency must be between")],
)
def test_bad_sources(cli: Cli, source: str, message: str) -> None:
    assert message in one_error_line(cli.run("play", source, "null", "-t", "1"))


def test_undecodable_and_unreadable_files(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(1).bytes(20000))
    assert "junk.mp3" in one_error_line(cli.run("play", f"file:{junk}", "null"))
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert "folder.wav" in one_error_line(cli.run("play", f"file:{folder}", "null"))


def test_bad_sink_and_bad_options(cli: Cli, tmp_path: Path) -> None:
    assert ".mp3" in one_error_line(cli.run("play", "tone", f"file:{tmp_path}/x.mp3"))
    assert "does not exist" in one_error_line(
        cli.run("play", "tone", f"file:{tmp_path}/no/x.wav"))
    assert "--buffer-ms" in one_error_line(cli.run("play", "tone", "null", "--buffer-ms", "x"))
    assert "--rate" in one_error_line(cli.run("play", "tone", "null", "--rate", "100"))


def test_config_file_errors_name_the_file_and_key(cli: Cli, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[play]\nsorce = 'tone'\n")
    line = one_error_line(cli.run("--config", str(cfg), "play"))
    assert str(cfg) in line and "play.sorce" in line


def test_config_file_sets_defaults_and_flags_win(cli: Cli, tmp_path: Path) -> None:
    cfg = cli.home / "config" / "deskcast" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[play]\nsource = "tone:1500"\nsink = "-"\n[run]\nduration = 0.25\n'
                   '[audio]\nchannels = 1\n')
    result = cli.run("play")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 12000 * 2  # 0.25 s mono s16
    x = np.frombuffer(result.stdout, dtype="<i2") / 32768.0
    peak_bin = np.argmax(np.abs(np.fft.rfft(x)))
    assert peak_bin * 48000 / len(x) == pytest.approx(1500, abs=5)
    flagged = cli.run("play", "-t", "0.5", "--channels", "2")
    assert len(flagged.stdout) == 24000 * 4


def test_no_sound_server_falls_back_to_the_demo_chime(cli: Cli, no_server_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """The main job on a machine without a sound server: one line, then the demo plays."""
    out = tmp_path / "demo.flac"
    result = cli.run("play", "desktop", f"file:{out}", "-t", "1", env=no_server_env, timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "demo chime" in lines[0] and "no sound server" in lines[0]
    data, _ = soundfile.read(str(out))
    assert len(data) == 48000 and level_db(data) > -30


@pytest.mark.parametrize("command", ["devices", "play", "send", "receive", "hub", "tx", "rx"])
def test_every_command_has_help(cli: Cli, command: str) -> None:
    result = cli.run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert b"usage: deskcast" in result.stdout
