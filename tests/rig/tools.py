"""What a test does when a tool it drives is not installed."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_tool(message: str) -> NoReturn:
    """Fail under CI (``./bootstrap test`` installs every tool the tests drive, so a missing one
    is a broken set-up, never a reason to pass quietly); skip on a developer's machine that
    runs pytest by hand. ``DESKCAST_REQUIRE_AUDIO=1`` fails there too."""
    if os.environ.get("CI") or os.environ.get("DESKCAST_REQUIRE_AUDIO"):
        pytest.fail(f"{message}: run ./bootstrap test, which installs it")
    pytest.skip(message)
