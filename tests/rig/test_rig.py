"""Self-tests of the test rig: signal helpers on synthetic data, and real
playback/capture through both PulseAudio and PipeWire."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rig import HUB, OUT, ServerKind, SoundServer, available_kinds
from rig.capture import Recorder, play, play_file, record, wait_played
from rig.signals import (
    Audio,
    aligned_segment,
    as_2d,
    chirp,
    correlation,
    dominant_frequency,
    find_delay,
    level_db,
    noise,
    onset_time,
    peak_db,
    read_wav,
    silence,
    silence_fraction,
    speech_wav,
    tone,
    tone_level_db,
    write_wav,
)
from rig.tools import missing_tool

RATE = 48000


def _fractional_delay(x: Audio, samples: float, total: int) -> Audio:
    """``x`` delayed by a (possibly fractional) number of samples, in a buffer
    of ``total`` frames, via a linear phase shift (x must be band-limited)."""
    m = as_2d(x)
    n = 1 << (total - 1).bit_length()
    freqs = np.fft.rfftfreq(n)
    shift = np.exp(-2j * np.pi * freqs * samples)
    padded = np.zeros((n, m.shape[1]))
    padded[: m.shape[0]] = m
    out = np.fft.irfft(np.fft.rfft(padded, axis=0) * shift[:, None], n, axis=0)
    return np.asarray(out[:total], dtype=np.float64)


# --------------------------------------------------------------------------- #
# signals.py on synthetic data
# --------------------------------------------------------------------------- #


def test_tone_shape_and_level() -> None:
    x = tone(1000.0, 1.0, rate=RATE, channels=2, level_db=-12.0)
    assert x.shape == (RATE, 2)
    assert x.dtype == np.float64
    assert level_db(x) == pytest.approx(-12.0, abs=0.01)
    assert peak_db(x) == pytest.approx(-12.0 + 3.0103, abs=0.01)
    assert np.array_equal(x[:, 0], x[:, 1])


@pytest.mark.parametrize("freq", [50.0, 440.0, 997.3, 1000.0, 4321.9, 15000.0])
def test_dominant_frequency_of_one_second_tone(freq: float) -> None:
    x = tone(freq, 1.0, rate=RATE, phase=0.7)
    assert dominant_frequency(x, RATE) == pytest.approx(freq, abs=0.5)


def test_dominant_frequency_with_noise_and_short_signal() -> None:
    x = tone(1234.5, 0.25, rate=RATE) + noise(0.25, rate=RATE, level_db=-30.0, seed=3)
    assert dominant_frequency(x, RATE) == pytest.approx(1234.5, abs=1.0)
    # The band limits pick the weaker of two tones.
    two = tone(300.0, 1.0, level_db=-6.0) + tone(2000.0, 1.0, level_db=-20.0)
    assert dominant_frequency(two, RATE) == pytest.approx(300.0, abs=0.5)
    assert dominant_frequency(two, RATE, fmin=1000.0) == pytest.approx(2000.0, abs=0.5)


def test_tone_level_picks_one_tone_out_of_two() -> None:
    two = tone(660.0, 0.5, level_db=-12.0) + tone(440.0, 0.5, level_db=-50.0)
    assert tone_level_db(two, 660.0, RATE) == pytest.approx(-12.0, abs=0.2)
    assert tone_level_db(two, 440.0, RATE) == pytest.approx(-50.0, abs=1.0)
    assert tone_level_db(tone(660.0, 0.5), 440.0, RATE) < -100


@pytest.mark.parametrize("kind", ["noise", "chirp", "speechlike"])
def test_find_delay_recovers_known_shift(kind: str) -> None:
    if kind == "noise":
        ref = noise(1.0, rate=RATE, seed=1)
    elif kind == "chirp":
        ref = chirp(100.0, 8000.0, 1.0, rate=RATE)
    else:  # amplitude-modulated noise bursts, a crude stand-in for speech
        env = (np.sin(2 * np.pi * 3.0 * np.arange(RATE) / RATE) > 0).astype(float)
        ref = noise(1.0, rate=RATE, seed=2) * env[:, None]
    delay_s = 0.1234  # 5923.2 samples: not a whole number
    rec = _fractional_delay(ref, delay_s * RATE, total=2 * RATE)
    rec = 0.5 * rec + noise(2.0, rate=RATE, level_db=-50.0, seed=9)
    measured = find_delay(ref, rec, RATE)
    assert measured == pytest.approx(delay_s, abs=0.001)
    # The other way round gives the negative delay.
    assert find_delay(rec, ref, RATE) == pytest.approx(-delay_s, abs=0.001)
    # A search window that excludes the true delay finds something else.
    assert abs(find_delay(ref, rec, RATE, max_delay=0.05) - delay_s) > 0.05


def test_find_delay_handles_inverted_polarity_and_mono() -> None:
    ref = noise(0.5, rate=RATE, channels=1, seed=5)[:, 0]
    rec = np.concatenate([np.zeros(480), -ref])
    assert find_delay(ref, rec, RATE) == pytest.approx(0.010, abs=1e-4)


def test_correlation() -> None:
    ref = noise(1.0, rate=RATE, seed=11)
    delayed = np.concatenate([np.zeros((1000, 2)), 0.3 * ref, np.zeros((500, 2))])
    assert correlation(ref, ref) == pytest.approx(1.0, abs=1e-9)
    assert correlation(ref, delayed) == pytest.approx(1.0, abs=1e-6)
    assert correlation(ref, -delayed) == pytest.approx(-1.0, abs=1e-6)
    other = noise(1.0, rate=RATE, seed=12)
    assert abs(correlation(ref, other)) < 0.1
    # A 100 ms dropout in a tone costs correlation, but not all of it.
    t = tone(1000.0, 1.0)
    broken = t.copy()
    broken[24000:28800] = 0.0
    assert 0.8 < correlation(t, broken) < 0.99
    assert correlation(t, silence(1.0)) == 0.0


def test_aligned_segment() -> None:
    ref = chirp(200.0, 4000.0, 0.5, rate=RATE)
    rec = np.concatenate([np.zeros((777, 2)), 0.5 * ref, np.zeros((100, 2))])
    seg = aligned_segment(ref, rec)
    assert seg.shape == ref.shape
    assert np.allclose(seg, 0.5 * ref)
    # A recording that stops early leaves zeros at the end.
    short = aligned_segment(ref, rec[: 777 + 12000])
    assert np.allclose(short[:12000], 0.5 * ref[:12000])
    assert not short[12000:].any()


def test_silence_fraction_and_onset() -> None:
    x = np.concatenate([silence(0.25), tone(500.0, 0.5), silence(0.25)])
    assert silence_fraction(x, RATE) == pytest.approx(0.5, abs=0.021)
    assert silence_fraction(silence(1.0), RATE) == 1.0
    assert silence_fraction(tone(500.0, 1.0), RATE) == 0.0
    onset = onset_time(x, RATE)
    assert onset is not None
    assert onset == pytest.approx(0.25, abs=0.002)
    assert onset_time(silence(0.5), RATE) is None
    assert level_db(silence(0.1)) < -200.0


def test_wav_roundtrip(tmp_path: Path) -> None:
    x = tone(440.0, 0.5, channels=2, level_db=-6.0)
    path = write_wav(tmp_path / "t.wav", x, RATE)
    y, rate = read_wav(path)
    assert rate == RATE
    assert y.shape == x.shape
    assert y.dtype == np.float64
    assert np.max(np.abs(y - x)) < 1.0 / 32768 + 1e-9
    mono_path = write_wav(tmp_path / "m.wav", x[:, 0], 16000)
    m, mrate = read_wav(mono_path)
    assert (mrate, m.shape) == (16000, (RATE // 2, 1))


def test_speech_wav(tmp_path: Path) -> None:
    path = speech_wav(tmp_path / "speech.wav", "Hello from the test rig.")
    x, rate = read_wav(path)
    assert rate == 48000
    assert x.shape[1] == 2
    assert 0.5 < x.shape[0] / rate < 5.0
    assert level_db(x) > -40.0
    assert 0.0 < silence_fraction(x, rate) < 0.9


# --------------------------------------------------------------------------- #
# the sound servers
# --------------------------------------------------------------------------- #


@pytest.mark.audio
@pytest.mark.parametrize("kind", ["pulseaudio", "pipewire"])
def test_server_start_stop_leaves_nothing(kind: ServerKind) -> None:
    if kind not in available_kinds():
        missing_tool(f"{kind} is not installed")
    with SoundServer(kind) as srv:
        assert srv.kind == kind
        root = srv.root
        assert root.is_dir()
        pids = [p.pid for _, p in srv._procs]
        assert pids
        assert srv.running
        assert srv.server == f"unix:{root}/run/pulse/native"
    assert not root.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_server_is_private_and_configured(sound_server: SoundServer) -> None:
    srv = sound_server
    assert os.environ["PULSE_SERVER"] == srv.server
    assert os.environ["PULSE_RUNTIME_PATH"] == str(srv.root / "run" / "pulse")
    assert "DBUS_SESSION_BUS_ADDRESS" not in os.environ
    assert "DBUS_SESSION_BUS_ADDRESS" not in srv.env
    assert srv.env["PULSE_SERVER"] == srv.server
    assert srv.server.startswith(f"unix:{srv.root}")
    info = srv.info()
    assert info["Server String"] == srv.server
    expected = "PulseAudio (on PipeWire" if srv.kind == "pipewire" else "pulseaudio"
    assert info["Server Name"].startswith(expected)
    assert {HUB, OUT} <= set(srv.sinks())
    assert {f"{HUB}.monitor", f"{OUT}.monitor"} <= set(srv.sources())
    assert srv.default_sink() == HUB
    for line in srv.pactl("list", "short", "sinks").splitlines():
        if line.split("\t")[1] in (HUB, OUT):
            assert "2ch 48000Hz" in line


def test_create_null_sink_set_default_and_reset(sound_server: SoundServer) -> None:
    srv = sound_server
    module = srv.create_null_sink("rigextra", rate=44100, channels=1, description="Extra one")
    assert module in srv.modules()
    assert "rigextra" in srv.sinks()
    assert "rigextra.monitor" in srv.sources()
    srv.set_default_sink("rigextra")
    assert srv.default_sink() == "rigextra"
    srv.reset()
    assert "rigextra" not in srv.sinks()
    assert srv.default_sink() == HUB


def test_sink_inputs_show_playing_streams(sound_server: SoundServer, tmp_path: Path) -> None:
    srv = sound_server
    wav = write_wav(tmp_path / "long.wav", tone(440.0, 3.0, level_db=-30.0), RATE)
    procs = [play_file(srv, wav, HUB), play_file(srv, wav, OUT)]
    try:

        def both_listed() -> list[dict[str, object]] | None:
            mine = [s for s in srv.sink_inputs() if s["application"] == "paplay"]
            linked = len(mine) == 2 and all(s["sink"] is not None for s in mine)
            return mine if linked else None

        streams = srv.wait_for(both_listed, timeout=5.0)
        assert sorted(str(s["sink"]) for s in streams) == [HUB, OUT]
        for s in streams:
            assert isinstance(s["index"], int)
            assert s["media"] is not None
    finally:
        for p in procs:
            p.terminate()
            p.communicate()
    srv.wait_for(lambda: not srv.sink_inputs(), timeout=5.0)


def test_record_fixed_length_of_silence(sound_server: SoundServer) -> None:
    x = record(sound_server, f"{OUT}.monitor", 0.5)
    assert x.shape == (24000, 2)
    assert level_db(x) < -80.0


def test_tone_through_null_sink_monitor(sound_server: SoundServer, tone_wav: Path) -> None:
    srv = sound_server
    ref, rate = read_wav(tone_wav)
    with Recorder(srv, f"{HUB}.monitor") as rec:
        assert srv.wait_for(
            lambda: any(s["application"] == "deskcast-test-rig" for s in srv.source_outputs())
        )
        player = play_file(srv, tone_wav, HUB)
        assert rec.wait_for_sound(timeout=5.0, threshold_db=-30.0)
        wait_played(player)
    audio = rec.audio
    assert audio.shape[1] == 2
    assert audio.shape[0] > ref.shape[0]
    seg = aligned_segment(ref, audio)
    assert dominant_frequency(seg, rate) == pytest.approx(1000.0, abs=2.0)
    assert correlation(ref, audio) > 0.9
    assert level_db(seg) == pytest.approx(level_db(ref), abs=1.0)
    assert silence_fraction(seg, rate) == 0.0  # no dropouts inside the tone
    # Both channels carry it.
    assert level_db(seg[:, 0]) == pytest.approx(level_db(seg[:, 1]), abs=0.1)


def test_capture_is_lossless_from_the_first_sample(
    sound_server: SoundServer, tmp_path: Path
) -> None:
    # A chirp has one sharp alignment, so a lost start or a glitch would show.
    ref = chirp(200.0, 8000.0, 0.5, level_db=-15.0)
    wav = write_wav(tmp_path / "chirp.wav", ref, RATE)
    ref, _ = read_wav(wav)  # compare with what the file really holds (16-bit)
    with Recorder(sound_server, f"{HUB}.monitor") as rec:
        play(sound_server, wav, HUB)
    seg = aligned_segment(ref, rec.audio)
    assert correlation(ref, rec.audio) > 0.9999
    assert np.max(np.abs(seg - ref)) < 2.0 / 32768


def test_speech_through_null_sink_monitor(sound_server: SoundServer, speech_file: Path) -> None:
    srv = sound_server
    ref, rate = read_wav(speech_file)
    with Recorder(srv, f"{OUT}.monitor") as rec:
        start = rec.mark()
        play(srv, speech_file, OUT)
    delay = find_delay(ref, rec.audio, rate)
    # paplay starts within a fraction of a second of being launched.
    assert -0.03 <= delay - start / rate < 1.0
    assert correlation(ref, rec.audio) > 0.95
    assert level_db(aligned_segment(ref, rec.audio)) == pytest.approx(level_db(ref), abs=0.5)


def test_in_process_clients_reach_the_server(sound_server: SoundServer) -> None:
    import pasimple
    import pulsectl

    srv = sound_server
    with pulsectl.Pulse("deskcast-rig-selftest") as pulse:
        assert pulse.server_info().default_sink_name == HUB
        assert {HUB, OUT} <= {s.name for s in pulse.sink_list()}

    ref = tone(750.0, 0.5, level_db=-20.0)
    pcm = (np.clip(ref, -1, 1) * 32767).astype("<i2").tobytes()
    with (
        Recorder(srv, f"{HUB}.monitor") as rec,
        pasimple.PaSimple(
            pasimple.PA_STREAM_PLAYBACK,
            pasimple.PA_SAMPLE_S16LE,
            2,
            RATE,
            app_name="deskcast-rig-selftest",
            device_name=HUB,
        ) as pa,
    ):
        pa.write(pcm)
        pa.drain()
    assert dominant_frequency(aligned_segment(ref, rec.audio), RATE) == pytest.approx(
        750.0, abs=2.0
    )
    assert correlation(ref, rec.audio) > 0.9


def test_play_file_reports_errors(sound_server: SoundServer, tmp_path: Path) -> None:
    from rig.capture import CaptureError

    wav = write_wav(tmp_path / "x.wav", tone(440.0, 0.1), RATE)
    with pytest.raises(CaptureError):
        wait_played(play_file(sound_server, tmp_path / "missing.wav", HUB))
    proc = play_file(sound_server, wav, "no-such-sink")
    assert isinstance(proc, subprocess.Popen)
    if sound_server.kind == "pulseaudio":
        with pytest.raises(CaptureError):
            wait_played(proc)
    else:
        # pipewire-pulse does not refuse an unknown sink: the stream goes to the default sink,
        # where it is heard.
        wait_played(proc)
        wav = write_wav(tmp_path / "y.wav", tone(440.0, 0.5, level_db=-12.0), RATE)
        with Recorder(sound_server, "@DEFAULT_MONITOR@") as rec:
            wait_played(play_file(sound_server, wav, "no-such-sink"))
        assert dominant_frequency(rec.audio, RATE) == pytest.approx(440.0, abs=1.0)
        assert peak_db(rec.audio) > -15.0
