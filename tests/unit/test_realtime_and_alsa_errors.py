from __future__ import annotations

import logging

import pytest

from deskcast import realtime
from deskcast.alsa import _error
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
