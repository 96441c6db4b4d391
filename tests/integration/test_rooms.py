"""Rooms on one timeline, judged from the sound: one ``deskcast send`` to two receivers whose
output paths differ (one keeps three times the other's sound-server buffer); the hub's clicks
come out of both rooms at the same instant, found in one recording on one sample clock (every
delay a sample offset), at the route's latency."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rig import SoundServer
from rig.meter import Meter, MeterRecording, SignalPlayer
from rig.rooms import ClickSignal, ClickTracker, summarize

from .conftest import Cli, free_port_pair, wait_for_line

HUB = "rooms-hub"  # the session server has a "hub" of its own
ROOMS = ("room1", "room2")


def test_two_rooms_with_different_output_paths_play_each_click_together(
        pa_env: SoundServer, cli: Cli, tmp_path: Path) -> None:
    server = pa_env
    meter = Meter((HUB, *ROOMS))
    ports = [free_port_pair()]
    while len(ports) < 2:
        if (port := free_port_pair()) not in ports:
            ports.append(port)
    procs = []
    try:
        with meter.installed(server):
            for room, port, extra in zip(ROOMS, ports, ([], ["--buffer-ms", "60"]),
                                         strict=True):
                rx = cli.start("-v", "receive", f":{port}", "-o", f"pulse:{room}", *extra,
                               "--stats-json", str(tmp_path / f"{room}.json"))
                procs.append(rx)
                wait_for_line(rx, "listening for RTP")
            procs.append(cli.start("send", *(f"127.0.0.1:{p}" for p in ports), "-s",
                                   f"pulse:{HUB}.monitor", "--latency-ms", "80"))
            time.sleep(3.0)  # on the timeline within 2 s
            with MeterRecording(meter, tmp_path / "m.raw", server) as rec, \
                    SignalPlayer(server, HUB, ClickSignal(), 10.0) as player:
                tracker = ClickTracker(rec, ROOMS, hub=HUB, max_delay_s=1.0)
                player.wait(timeout=25)
                time.sleep(1.0)
                tracker.update()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=10)
    s = summarize(tracker.clicks, ROOMS)
    stats = [json.loads((tmp_path / f"{room}.json").read_text().splitlines()[-1])
             for room in ROOMS]
    print(f"\ndelays {s.delay_ms}, offsets {s.offset_ms}, "
          f"receivers' own view: {[(x['schedule_error_ms'], x['clock_rtt_ms']) for x in stats]}")
    assert s.clicks >= 15
    assert s.lost == dict.fromkeys(ROOMS, 0)
    for room in ROOMS:
        # The route's 80 ms, less what the sender's timeline runs behind its reads (a few
        # ms); measured 73-74 ms in both rooms (bench/rooms.py).
        assert 65 <= s.delay_ms[room].median <= 90, s.delay_ms
    offset = s.offset_ms[ROOMS]
    # Measured over 8 runs of this test (19 clicks each): median 0.09-0.69 ms, max 0.66-2.7
    # ms, while each receiver put its own error at < 0.1 ms: the rest is in what it knows of
    # its output path (the sound server's reported latency), to be found (issue 18). Before
    # the timeline the same two rooms were 10-50 ms apart (BENCHMARKS.md section 10).
    assert offset.median < 1.5 and offset.max < 5.0, offset
    for x in stats:
        assert x["schedule_locks"] == 1, x
