"""The private Snapcast of the rooms benchmark on a real sound server: two snapclients play
the hub's clicks into their rooms, none lost, at the buffer's delay, well within a millisecond
of each other (what Snapcast is known for, so a failure here is the rig's)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rig import SoundServer
from rig.meter import Meter, MeterRecording, SignalPlayer
from rig.rooms import ClickSignal, ClickTracker, summarize
from rig.snapcast import SNAPCLIENT, SNAPSERVER, Snapcast, SnapcastSettings
from rig.tools import missing_tool

HUB = "rooms-hub"  # the session server has a "hub" of its own
ROOMS = ("room1", "room2")


def test_two_snapclients_play_the_clicks_in_step(pulseaudio_server: SoundServer,
                                                 tmp_path: Path) -> None:
    if shutil.which(SNAPSERVER) is None or shutil.which(SNAPCLIENT) is None:
        missing_tool("snapserver/snapclient not installed (Debian snapserver, snapclient)")
    server = pulseaudio_server
    meter = Meter((HUB, *ROOMS))
    with meter.installed(server), \
            Snapcast(server, tmp_path / "snapcast", SnapcastSettings(buffer_ms=400),
                     source=f"{HUB}.monitor") as snap:
        for room in ROOMS:
            snap.add_client(room)
        server.wait_for(lambda: snap.playing_into() == list(ROOMS) or None, timeout=15)
        time.sleep(2.0)
        with MeterRecording(meter, tmp_path / "m.raw", server) as rec, \
                SignalPlayer(server, HUB, ClickSignal(), 6.0) as player:
            tracker = ClickTracker(rec, ROOMS, hub=HUB, max_delay_s=1.0)
            player.wait(timeout=20)
            time.sleep(1.5)
            snap.check_alive()
            tracker.update()
    s = summarize(tracker.clicks, ROOMS)
    assert s.clicks >= 10
    assert s.lost == dict.fromkeys(ROOMS, 0)
    for room in ROOMS:
        assert 380 <= s.delay_ms[room].median <= 430, s.delay_ms
    assert s.offset_ms[ROOMS].median < 1.0, s.offset_ms
