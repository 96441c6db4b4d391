"""`deskcast hub` on real PulseAudio and PipeWire servers, and the ALSA config it writes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from deskcast.capture import make_source
from deskcast.capture.pulse import PulseSource
from deskcast.media import AudioFormat
from rig import SoundServer
from rig.capture import Recorder, play_file
from rig.signals import dominant_frequency, level_db, tone, write_wav

from .conftest import Cli, one_error_line

RATE = 48000


def stream_sinks(server: SoundServer) -> dict[str, str]:
    """application/media name -> sink name for every playing stream."""
    sinks = {s["index"]: s["name"] for s in json.loads(server.pactl("-f", "json", "list",
                                                                     "sinks"))}
    out = {}
    for si in json.loads(server.pactl("-f", "json", "list", "sink-inputs")):
        props = si.get("properties", {})
        name = props.get("application.name") or props.get("media.name") or str(si["index"])
        out[name] = sinks.get(si["sink"], str(si["sink"]))
    return out


def wait_until(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_hub_setup_moves_playing_streams_and_remove_puts_them_back(
        sound_server: SoundServer, cli: Cli, tmp_path: Path) -> None:
    long_tone = write_wav(tmp_path / "long.wav", tone(700.0, 60.0), RATE)
    sound_server.set_default_sink("out")
    player = play_file(sound_server, long_tone, "out", extra_args=["--client-name=player"])
    try:
        assert wait_until(lambda: stream_sinks(sound_server).get("player") == "out")

        result = cli.run("hub", "setup")
        assert result.returncode == 0, result.stderr
        assert "the default sink" in result.stdout.decode()
        assert "deskcast" in sound_server.sinks()
        assert sound_server.default_sink() == "deskcast"
        assert wait_until(lambda: stream_sinks(sound_server).get("player") == "deskcast")
        desc = json.loads(sound_server.pactl("-f", "json", "list", "sinks"))
        assert any(s["name"] == "deskcast" and s["description"] == "Desktop audio hub"
                   for s in desc)

        # The moved stream is now audible on the hub's monitor: the app was not restarted.
        with Recorder(sound_server, "deskcast.monitor") as rec:
            assert rec.wait_for_sound(timeout=5)
            time.sleep(1.0)
        assert rec.first_bytes_after < 1.0  # the hub's monitor delivers at once (norewinds)
        heard = rec.audio[-RATE // 2:]
        assert level_db(heard) == pytest.approx(-12.0, abs=1.0)
        assert dominant_frequency(heard, RATE) == pytest.approx(700.0, abs=1.0)

        # Idempotent: a second setup changes nothing and remembers the real speakers.
        again = cli.run("hub", "status", "--json")
        status = json.loads(cli.run("hub", "setup", "--json").stdout)
        assert again.returncode == 0
        assert status["exists"] and status["is_default"]
        assert status["previous_default"] == "out"
        assert status["streams"] == ["player"]
        assert sound_server.sinks().count("deskcast") == 1

        # `pulse` as a source is now the hub's monitor; as a sink it is the speakers.
        src = make_source("desktop", AudioFormat(), 480)
        assert isinstance(src, PulseSource)
        with src:
            assert src.device == "deskcast.monitor"

        removed = cli.run("hub", "remove")
        assert removed.returncode == 0, removed.stderr
        assert "deskcast" not in sound_server.sinks()
        assert sound_server.default_sink() == "out"
        assert wait_until(lambda: stream_sinks(sound_server).get("player") == "out")
        assert player.poll() is None, "the application must keep playing throughout"
    finally:
        player.kill()
        player.communicate()


def test_desktop_source_without_a_hub_is_the_default_sinks_monitor(
        sound_server: SoundServer) -> None:
    sound_server.set_default_sink("out")
    with make_source("desktop", AudioFormat(), 480) as src:
        assert isinstance(src, PulseSource)
        assert src.device == "out.monitor"


def test_playing_a_monitor_into_its_own_sink_is_refused(sound_server: SoundServer,
                                                       cli: Cli) -> None:
    line = one_error_line(cli.run("play", "pulse:out.monitor", "pulse:out", "-t", "1"))
    assert "feed it back into itself" in line


def test_devices_marks_default_and_hub(sound_server: SoundServer, cli: Cli) -> None:
    assert cli.run("hub", "setup").returncode == 0
    result = cli.run("devices")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "* pulse:deskcast " in text and "[hub]" in text
    assert "pulse:out.monitor" in text and "alsa:pulse" in text
    data = json.loads(cli.run("devices", "--json").stdout)
    hub = [d for d in data["pulse"]["sinks"] if d["is_hub"]]
    assert [d["name"] for d in hub] == ["deskcast"] and hub[0]["is_default"]
    assert cli.run("hub", "remove").returncode == 0


ORIGINAL_ASOUNDRC = "# my own settings\npcm.mine {\n    type plug\n    slave.pcm \"null\"\n}\n"


def aplay_list(home: Path) -> str:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["aplay", "-L"], capture_output=True, text=True, env=env,
                          check=True).stdout


def test_alsa_hub_needs_snd_aloop_and_says_how_to_load_it(cli: Cli) -> None:
    line = one_error_line(cli.run("hub", "setup", "--backend", "alsa"))
    assert "modprobe snd-aloop" in line
    assert not (cli.home / ".asoundrc").exists()


def test_alsa_hub_config_is_valid_idempotent_and_removable(cli: Cli) -> None:
    rc = cli.home / ".asoundrc"
    rc.write_text(ORIGINAL_ASOUNDRC)
    assert "hubcap" not in aplay_list(cli.home)

    first = cli.run("hub", "setup", "--backend", "alsa", "--force")
    assert first.returncode == 0, first.stderr
    written = rc.read_text()
    assert written.startswith(ORIGINAL_ASOUNDRC)
    assert (cli.home / ".asoundrc.deskcast-backup").read_text() == ORIGINAL_ASOUNDRC
    listing = aplay_list(cli.home)  # alsa-lib parses the file: a syntax error fails here
    assert "hubcap" in listing
    assert 'pcm "hw:Loopback,0,0"' in written and 'pcm "hw:Loopback,1,0"' in written

    second = cli.run("hub", "setup", "--backend", "alsa", "--force")
    assert second.returncode == 0 and rc.read_text() == written

    status = json.loads(cli.run("hub", "status", "--backend", "alsa", "--json").stdout)
    assert status["exists"] and not status["module_loaded"]

    removed = cli.run("hub", "remove", "--backend", "alsa")
    assert removed.returncode == 0, removed.stderr
    assert rc.read_text() == ORIGINAL_ASOUNDRC
    assert "hubcap" not in aplay_list(cli.home)


def test_alsa_hub_without_an_existing_file_removes_what_it_created(cli: Cli) -> None:
    rc = cli.home / ".asoundrc"
    assert cli.run("hub", "setup", "--backend", "alsa", "--force").returncode == 0
    assert "hubcap" in aplay_list(cli.home)
    assert cli.run("hub", "remove", "--backend", "alsa").returncode == 0
    assert not rc.exists()
