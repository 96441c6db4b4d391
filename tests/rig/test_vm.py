"""The ALSA VM rig's pure parts: the tone judge finds the gaps and clicks it is there to find
(and none in clean audio), the modprobe line, the timing files, the kernel package's name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rig import vm, vmkernel
from rig.signals import silence, tone
from rig.tonecheck import judge, sound_span

RATE = 48000


def _mix(*freqs: float, seconds: float = 2.0) -> np.ndarray:
    mixed = sum((tone(f, seconds, level_db=-15.0, phase=i) for i, f in enumerate(freqs)),
                start=np.zeros((round(seconds * RATE), 2)))
    padded = np.concatenate([silence(0.5), mixed, silence(0.5)])
    return np.round(padded * 32767) / 32767  # 16-bit, as recorded


def test_clean_two_tone_mix_is_whole_at_its_levels() -> None:
    report = judge(_mix(440.0, 660.0), RATE, [440.0, 660.0])
    assert report is not None
    assert report.span.start_s == pytest.approx(0.5, abs=0.01)
    assert report.span.seconds == pytest.approx(2.0, abs=0.01)
    assert report.span.silent_blocks == 0
    assert report.levels_db[440.0] == pytest.approx(-15.0, abs=0.1)
    assert report.levels_db[660.0] == pytest.approx(-15.0, abs=0.1)
    assert report.worst_residual_db < -60
    assert report.bad_windows == 0


@pytest.mark.parametrize("gap_ms", [1.0, 5.0, 20.0])
def test_a_gap_shows_as_a_bad_window(gap_ms: float) -> None:
    audio = _mix(550.0)
    at = round(1.3 * RATE)
    audio[at : at + round(gap_ms * RATE / 1000)] = 0.0
    report = judge(audio, RATE, [550.0])
    assert report is not None
    assert report.bad_windows >= 1
    assert report.worst_residual_db > -25
    # Only a gap as long as a 10 ms block (here 20 ms: two of them) is also a hole in the span.
    assert report.span.silent_blocks == (2 if gap_ms >= 20 else 0)


def test_a_click_and_a_pitch_jump_show_but_slow_drift_does_not() -> None:
    clicked = _mix(440.0)
    clicked[round(1.1 * RATE)] += 0.5
    report = judge(clicked, RATE, [440.0])
    assert report is not None and report.bad_windows == 1
    drifted = np.concatenate([silence(0.5), tone(440.05, 2.0, level_db=-15.0), silence(0.5)])
    report = judge(drifted, RATE, [440.0])
    assert report is not None and report.bad_windows == 0
    assert report.frequency_hz == pytest.approx(440.05, abs=0.02)
    jumped = np.concatenate([tone(440.0, 1.0), tone(470.0, 1.0)])
    report = judge(jumped, RATE, [440.0])
    assert report is not None and report.bad_windows >= 5


def test_silence_has_no_span() -> None:
    assert sound_span(silence(1.0), RATE) is None
    assert judge(silence(1.0), RATE, [440.0]) is None


def test_modprobe_line_names_each_card() -> None:
    assert vm.modprobe_args(["Loopback", "Speakers"]) == [
        "modprobe", "snd-aloop", "index=0,1", "enable=1,1", "id=Loopback,Speakers"]


def test_marks_and_calibration_files(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.write_text("a 10.5\nb 12.0\na 13.0\n")
    assert vm._read_pairs(marks) == {"a": 13.0, "b": 12.0}
    calib = tmp_path / "calibration"
    calib.write_text("pass 100.0 101.6\npass 200.0 201.5\nhelp 300 309\n")
    assert vm._read_pairs(calib) == pytest.approx({"pass": 1.5, "help": 9.0})
    assert vm._read_pairs(tmp_path / "none") == {}
    run = vm.VmRun(tmp_path, 0, "log", 10.0, 60.0, 62.0, {"a": 1.0, "b": 3.5}, {"pass": 1.5})
    assert vm.VmRun.from_json(json.loads(json.dumps(run.to_json()))) == run
    assert run.since("a", "b") == 2.5


def test_kernel_package_is_read_from_apt_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    out = ("linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n"
           "  Depends: <linux-image-6.1.0-57-amd64-unsigned>\n")
    monkeypatch.setattr(vmkernel, "_run", lambda args, what, cwd=None: out)
    assert vmkernel.kernel_package() == "linux-image-6.1.0-57-amd64"
    monkeypatch.setattr(vmkernel, "_run", lambda args, what, cwd=None: "")
    with pytest.raises(vmkernel.VmUnavailableError, match="apt-get update"):
        vmkernel.kernel_package()


def test_a_half_unpacked_kernel_is_not_taken(tmp_path: Path) -> None:
    root = tmp_path / "6.1.0-1-amd64"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-1-amd64").write_bytes(b"x")
    assert vmkernel.cached_kernel(tmp_path) is None
    mods = root / "lib" / "modules" / "6.1.0-1-amd64"
    (mods / "kernel" / "sound" / "drivers").mkdir(parents=True)
    (mods / vmkernel.NEEDED_MODULE).write_bytes(b"x")
    assert vmkernel.cached_kernel(tmp_path) is None  # no modules.dep: depmod did not run
    (mods / "modules.dep").write_text("")
    kernel = vmkernel.cached_kernel(tmp_path)
    assert kernel is not None and kernel.version == "6.1.0-1-amd64"


def test_launcher_runs_deskcast_commands_with_their_output_status_and_signals(
        tmp_path: Path) -> None:
    """The VM's launcher, run here: each request becomes ``deskcast ARGS`` in a forked child
    (output to NAME.out, errors to NAME.log, pid and exit status in NAME.pid/NAME.rc), a
    child stopped by a signal reports 128 + signal, and ``quit`` ends the launcher."""
    import os
    import subprocess
    import sys
    import time

    fifo, ready = tmp_path / "fifo", tmp_path / "ready"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(vm.SRC)}
    launcher = subprocess.Popen([sys.executable, str(Path(vm.__file__).with_name("vmlaunch.py")),
                                 str(fifo), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)

        def request(name: str, *argv: str) -> None:
            with fifo.open("w") as f:
                f.write("\t".join([name, str(tmp_path), *argv]) + "\n")

        def status(name: str) -> int:
            rc = tmp_path / f"{name}.rc"
            while not rc.exists():
                assert time.monotonic() < deadline, f"{name} never ended"
                time.sleep(0.05)
            return int(rc.read_text())

        request("version", "--version")
        request("bad", "play", "alsa:hubcap", "nowhere:x")
        request("long", "play", "tone:440", "null")
        assert status("version") == 0
        assert (tmp_path / "version.out").read_text().startswith("deskcast ")
        assert status("bad") == 2
        assert "nowhere" in (tmp_path / "bad.log").read_text()
        while not (tmp_path / "long.pid").exists():
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(int((tmp_path / "long.pid").read_text()), 9)
        assert status("long") == 128 + 9
        with fifo.open("w") as f:
            f.write("quit\n")
        assert launcher.wait(timeout=10) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
