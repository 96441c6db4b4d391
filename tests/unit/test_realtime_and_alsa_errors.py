from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from deskcast import alsa, realtime
from deskcast.alsa import _error, loopback_holders
from deskcast.errors import DeviceError, EndpointError


def test_rt_refusal_warns_once_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    realtime.reset_warning()

    def refuse(priority: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    with caplog.at_level(logging.WARNING):
        assert realtime.request(80, setter=refuse) is False
        assert realtime.request(80, setter=refuse) is False
    warnings = [r for r in caplog.records if "real-time priority" in r.getMessage()]
    assert len(warnings) == 1
    assert "--rtprio 0" in warnings[0].getMessage()


def test_rt_zero_means_do_not_ask() -> None:
    def boom(priority: int) -> None:
        raise AssertionError("must not be called")

    assert realtime.request(0, setter=boom) is False


def test_rt_granted() -> None:
    got: list[int] = []
    assert realtime.request(70, setter=got.append) is True
    assert got == [70]


def test_alsa_busy_and_unknown_device_messages() -> None:
    busy = _error(Exception("Device or resource busy [hw:0]"), "hw:0", "playback", False)
    assert isinstance(busy, DeviceError) and "is busy" in str(busy)
    unknown = _error(Exception("No such file or directory [nope]"), "nope", "capture", True)
    assert isinstance(unknown, EndpointError)
    assert "available:" in str(unknown) and "pulse" in str(unknown)


def _substream(root: Path, card: int, card_id: str, pcm: str, sub: int, *, status: str,
               params: str) -> None:
    folder = root / f"card{card}" / pcm / f"sub{sub}"
    folder.mkdir(parents=True, exist_ok=True)
    (root / f"card{card}" / "id").write_text(f"{card_id}\n")
    (root / f"card{card}" / "pcm0p").mkdir(exist_ok=True)
    (root / f"card{card}" / "pcm0p" / "info").write_text(
        f"card: {card}\ndevice: 0\nid: {'Loopback PCM' if card_id != 'PCH' else 'ALC'}\n")
    (folder / "status").write_text(status)
    (folder / "hw_params").write_text(params)


def test_loopback_holders_say_who_has_which_side_at_which_format(tmp_path: Path) -> None:
    me = os.getpid()
    params = ("access: RW_INTERLEAVED\nformat: S32_LE\nsubformat: STD\nchannels: 1\n"
              "rate: 44100 (44100/1)\nperiod_size: 940\nbuffer_size: 3763\n")
    _substream(tmp_path, 0, "Loopback", "pcm0p", 0,
               status=f"state: RUNNING\nowner_pid   : {me}\ntrigger_time: 1.0\n", params=params)
    _substream(tmp_path, 0, "Loopback", "pcm1c", 0, status="closed\n", params="closed\n")
    _substream(tmp_path, 1, "PCH", "pcm0p", 0, status=f"state: RUNNING\nowner_pid   : {me}\n",
               params=params)
    comm = Path(f"/proc/{me}/comm").read_text().strip()
    assert loopback_holders(tmp_path) == [
        f"{comm} (pid {me}) plays to hw:Loopback,0,0 at 44100 Hz S32_LE 1 ch"]
    _substream(tmp_path, 0, "Loopback", "pcm1c", 0, status="state: SETUP\n", params="closed\n")
    assert loopback_holders(tmp_path)[1] == "a program records from hw:Loopback,1,0"


def test_a_failed_open_on_a_held_loopback_names_the_holder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alsa, "loopback_holders",
                        lambda: ["aplay (pid 42) plays to hw:Loopback,0,0 at 44100 Hz S32_LE 1 ch"])
    err = _error(Exception("Invalid argument [hubcap]"), "hubcap", "capture", True)
    assert isinstance(err, DeviceError)
    text = str(err)
    assert "aplay (pid 42)" in text and "44100 Hz" in text
    assert "whoever opens it first" in text and "stop that program" in text
    monkeypatch.setattr(alsa, "loopback_holders", lambda: [])
    assert "is busy" in str(_error(Exception("Device or resource busy"), "hw:0", "playback",
                                   False))
