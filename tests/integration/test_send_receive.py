"""send -> (impaired network) -> receive, with real sound servers and real trx peers."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deskcast.transport.receive.decode import EXPAND_FADE_S, EXPAND_HOLD_S
from deskcast.transport.rtp import RtpPacket
from rig import SoundServer
from rig.capture import Recorder, play_file, wait_played
from rig.netem import Impairment, ImpairmentProxy
from rig.signals import dominant_frequency, level_db, read_wav, tone, write_wav

from .conftest import (
    DESKCAST,
    Cli,
    audible,
    finish,
    free_port_pair,
    received_seconds,
    wait_for_line,
)

RATE = 48000


def last_stats(path: Path) -> dict[str, object]:
    lines = path.read_text().strip().splitlines()
    assert lines, "no --stats-json lines were written"
    record: dict[str, object] = json.loads(lines[-1])
    return record


SHARED_CLOCK_PPM = 150.0
"""Largest drift correction (``correction_ppm``, any second) allowed where sender and receiver
run on one machine's clocks: the private sound server's null sinks run about 100 ppm off the
system clock (RELIABILITY.md), the controller at its limit corrects 2000 ppm. A pitch window
of 2 Hz at 1 kHz cannot tell the two apart; this can. (In a run under ten seconds the
controller has measured nothing yet and applies exactly 0.)"""


def corrections_ppm(stats: Path) -> list[float]:
    """The correction the receiver applied in each second of its ``--stats-json``."""
    values = [json.loads(line).get("correction_ppm")
              for line in stats.read_text().splitlines() if line.strip()]
    out = [float(v) for v in values if isinstance(v, int | float)]
    assert out, "no correction_ppm in the receiver's --stats-json"
    return out


def receive(cli: Cli, port: int, out: Path, seconds: float, *extra: str
            ) -> subprocess.Popen[bytes]:
    proc = cli.start("-v", "receive", f":{port}", "-o", f"file:{out}", "-t", str(seconds),
                     "--stats-json", str(out.with_suffix(".json")), *extra)
    wait_for_line(proc, "listening for RTP")
    return proc


def test_tone_over_loopback(cli: Cli, tmp_path: Path) -> None:
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 4)
    tx_stats = tmp_path / "tx.json"
    tx = cli.run("send", f"127.0.0.1:{port}", "-s", "tone:1000", "-t", "3",
                 "--stats-json", str(tx_stats))
    assert tx.returncode == 0, tx.stderr
    # The receiver reports back over RTCP: the sender knows someone is listening.
    sent = last_stats(tx_stats)
    assert isinstance(sent["receiver_reports"], int) and sent["receiver_reports"] >= 1
    assert sent["receiver_loss_pct"] == 0.0
    assert sent["rtt_ms"] is not None and 0 <= float(str(sent["rtt_ms"])) < 50
    assert isinstance(sent["kbit_s"], float) and 110 < sent["kbit_s"] < 145
    status, err = finish(rx)
    assert status == 0, err
    x, _ = read_wav(out)
    heard = audible(x)
    assert received_seconds(heard, 3.0), len(heard) / RATE
    assert dominant_frequency(heard, RATE) == pytest.approx(1000.0, abs=0.5)
    assert level_db(heard[RATE // 10: -RATE // 10]) == pytest.approx(-15.0, abs=0.5)
    stats = last_stats(out.with_suffix(".json"))
    assert stats["concealed_pct"] == 0.0 and stats["dropped"] == 0
    assert stats["trx"] is False


def test_hub_to_speakers_through_both_sound_servers(sound_server: SoundServer, cli: Cli,
                                                    tmp_path: Path) -> None:
    """paplay -> hub -> send -s pulse:hub.monitor -> receive -o pulse:out -> out.monitor."""
    port = free_port_pair()
    long_tone = write_wav(tmp_path / "t.wav", tone(660.0, 4.0), RATE)
    stats_file = tmp_path / "rx.json"
    rx = cli.start("-v", "receive", f":{port}", "-o", "pulse:out", "-t", "6",
                   "--stats-json", str(stats_file))
    wait_for_line(rx, "listening for RTP")
    tx = cli.start("-v", "send", f"127.0.0.1:{port}", "-s", "pulse:hub.monitor", "-t", "5")
    wait_for_line(tx, "sending Opus")
    with Recorder(sound_server, "out.monitor") as rec:
        time.sleep(0.3)
        wait_played(play_file(sound_server, long_tone, "hub"))
        time.sleep(0.5)
    for proc in (tx, rx):
        status, err = finish(proc)
        assert status == 0, err
    heard = audible(rec.audio)
    corrections = corrections_ppm(stats_file)
    print(f"MEASURED {sound_server.kind}: {dominant_frequency(heard, RATE):.2f} Hz, correction "
          f"{min(corrections):+.0f}..{max(corrections):+.0f} ppm")
    assert len(heard) > 3.5 * RATE
    # 1.5 Hz on PipeWire (its own rate matching, see below) is 2300 ppm at 660 Hz: what the
    # receiver itself corrected is checked apart.
    assert dominant_frequency(heard, RATE) == pytest.approx(660.0, abs=0.5 if sound_server.kind
                                                            == "pulseaudio" else 1.5)
    assert max(abs(c) for c in corrections) <= SHARED_CLOCK_PPM
    assert level_db(heard[RATE // 2: -RATE // 2]) == pytest.approx(-12.0, abs=1.0)


def test_hub_to_speakers_over_a_lossy_jittery_network(sound_server: SoundServer, cli: Cli,
                                                      tmp_path: Path) -> None:
    """The whole path a user has: paplay -> hub -> send -> 5 % loss + 10 ms jitter -> receive
    -> out, through the real sound server. The tone arrives at its pitch and level, the
    receiver conceals about what was lost, and it never falls silent."""
    port = free_port_pair()
    stats_file = tmp_path / "rx.json"
    long_tone = write_wav(tmp_path / "t.wav", tone(660.0, 5.0), RATE)
    rx = cli.start("-v", "receive", f":{port}", "-o", "pulse:out", "-t", "7",
                   "--stats-json", str(stats_file))
    wait_for_line(rx, "listening for RTP")
    with ImpairmentProxy(("127.0.0.1", port), Impairment(loss=0.05, jitter_ms=10.0),
                         seed=5) as proxy:
        host, pport = proxy.address
        tx = cli.start("-v", "send", f"{host}:{pport}", "-s", "pulse:hub.monitor", "-t", "6")
        wait_for_line(tx, "sending Opus")
        with Recorder(sound_server, "out.monitor") as rec:
            time.sleep(0.3)
            wait_played(play_file(sound_server, long_tone, "hub"))
            time.sleep(0.5)
        for proc in (tx, rx):
            status, err = finish(proc)
            assert status == 0, err
    lost_pct = 100 * proxy.stats.dropped / max(1, proxy.stats.received)
    stats = last_stats(stats_file)
    assert isinstance(stats["concealed_pct"], float)
    # What was lost (4.7 % with seed 5), not more: measured 4.6-4.8 % (3 runs on each server).
    assert 0 < lost_pct <= stats["concealed_pct"] + 1.0
    assert stats["concealed_pct"] <= lost_pct + 1.0
    heard = audible(rec.audio)
    corrections = corrections_ppm(stats_file)
    print(f"MEASURED {sound_server.kind}: {dominant_frequency(heard, RATE):.2f} Hz, correction "
          f"{min(corrections):+.0f}..{max(corrections):+.0f} ppm, concealed "
          f"{stats['concealed_pct']:.1f} % of {lost_pct:.1f} % lost")
    assert len(heard) > 4.5 * RATE
    assert dominant_frequency(heard, RATE) == pytest.approx(660.0, abs=0.5 if sound_server.kind
                                                            == "pulseaudio" else 1.5)
    assert max(abs(c) for c in corrections) <= SHARED_CLOCK_PPM
    body = heard[RATE // 2: -RATE // 2]
    assert level_db(body) == pytest.approx(-12.0, abs=1.5)
    # Never silent: no 20 ms window in the middle below -40 dBFS (trx plays silence here).
    windows = body[: len(body) // 960 * 960, 0].reshape(-1, 960)
    quietest = 10 * np.log10(np.mean(windows ** 2, axis=1).min() + 1e-12)
    assert quietest > -40.0


@pytest.mark.parametrize(
    "impairment, send_args, max_excess_pct",
    [(Impairment(loss=0.05, jitter_ms=10.0), (), 1.0),
     (Impairment(burst_loss=0.02, burst_length=(3, 6), delay_ms=5.0), (), 0.5),
     (Impairment(reorder=0.1, duplicate=0.1, jitter_ms=5.0), (), 0.0),
     (Impairment(loss=0.10), ("--fec", "4:2"), None)],
    ids=["loss5-jitter10", "bursts", "reorder-dup", "loss10-fec"],
)
def test_impaired_network(cli: Cli, tmp_path: Path, impairment: Impairment,
                          send_args: tuple[str, ...], max_excess_pct: float | None) -> None:
    """4 s of tone through the seeded proxy: what is concealed is at most what the proxy
    dropped (+ ``max_excess_pct``; with FEC at most 1 %), every frame is played (heard, less
    what expanding added and plus what catching up skipped, is the 4 s sent and the fade after
    the last packet) at its pitch.

    Seed 11 drops 9 of 200 packets at 5 % (4.5 %; concealed 4.59-4.71 %), two bursts of 6 at
    burst_loss 2 % (6.0 %; concealed 6.15-6.19 %: the concealed share is of what was played,
    a little less than 200 frames; at the 1 % this case had, it dropped none), none when
    reordering and duplicating; 27 of 300 with FEC, all recovered or repair packets (concealed
    0.00 %, 16 recovered). 3 runs, one beside a busy core."""
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 5)
    with ImpairmentProxy(("127.0.0.1", port), impairment, seed=11) as proxy:
        host, pport = proxy.address
        tx = cli.run("send", f"{host}:{pport}", "-s", "tone:1000", "-t", "4", *send_args)
        assert tx.returncode == 0, tx.stderr
        status, err = finish(rx)
    assert status == 0, err
    stats = last_stats(out.with_suffix(".json"))
    concealed, expanded_ms = stats["concealed_pct"], stats["expanded_ms"]
    assert isinstance(concealed, float) and isinstance(expanded_ms, float)
    x, _ = read_wav(out)
    heard = audible(x)
    ps = proxy.stats
    drop_pct = 100 * ps.dropped / max(1, ps.received)
    print(f"MEASURED impaired: dropped {ps.dropped}/{ps.received} ({drop_pct:.1f} %), concealed "
          f"{concealed:.2f} %, heard {len(heard) / RATE:.3f} s, expanded {expanded_ms} ms, "
          f"skipped {stats['skipped_ms']} ms, "
          f"fec {stats['fec_recovered']}, pitch {dominant_frequency(heard, RATE):.2f} Hz")
    if impairment.loss or impairment.burst_loss:
        assert ps.dropped > 0  # the impairment did happen
    if max_excess_pct is None:
        assert concealed <= 1.0
        assert isinstance(stats["fec_recovered"], int) and stats["fec_recovered"] > 10
    else:
        assert concealed <= drop_pct + max_excess_pct
    # Every frame played: heard, less what expanding added, plus what catching up after a
    # dry buffer skipped (a burst at the buffer's end: 2 x 50 ms expanded, then 2 x 60 ms
    # skipped), is the 4 s sent and the fade after the last packet (4.117 s in every case).
    skipped_ms = stats["skipped_ms"]
    assert isinstance(skipped_ms, float)
    played_s = len(heard) / RATE - expanded_ms / 1000 + skipped_ms / 1000
    assert 4.0 <= played_s <= 4.0 + EXPAND_HOLD_S + EXPAND_FADE_S + 0.01, played_s
    assert dominant_frequency(heard, RATE) == pytest.approx(1000.0, abs=1.0)
    assert ps.forwarded > 150


def test_garbage_never_stops_playback(cli: Cli, tmp_path: Path) -> None:
    """Random bytes, truncated/oversized/wrong-version/wrong-PT packets and corrupt Opus are
    blasted at a playing receiver: they are counted and dropped, the tone plays on."""
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 8)  # room for a sender slowed down by the blast
    stop = threading.Event()
    sent = [0]

    def blast() -> None:
        rng = random.Random(5)
        good = bytes(RtpPacket(96, 1, 960, 0x1234, b"\xfc" + bytes(100)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                kind = rng.randrange(6)
                if kind == 0:
                    data = rng.randbytes(rng.randrange(0, 1500))
                elif kind == 1:
                    data = good[: rng.randrange(0, 12)]
                elif kind == 2:
                    data = bytes([0x40]) + good[1:]                 # version 1
                elif kind == 3:
                    data = bytes(RtpPacket(13, 1, 2, 3, b"x"))       # comfort noise PT
                elif kind == 4:
                    data = bytes(RtpPacket(96, rng.randrange(65536), rng.randrange(2**32),
                                           rng.randrange(2**32), rng.randbytes(200)))
                else:
                    data = rng.randbytes(60000)
                s.sendto(data, ("127.0.0.1", port))
                sent[0] += 1
                if sent[0] % 50 == 0:
                    time.sleep(0.005)

    blaster = threading.Thread(target=blast)
    blaster.start()
    try:
        tx = cli.run("send", f"127.0.0.1:{port}", "-s", "tone:1000", "-t", "4")
    finally:
        stop.set()
        blaster.join()
    assert tx.returncode == 0, tx.stderr
    status, err = finish(rx)
    assert status == 0, err
    assert "Traceback" not in err
    stats = last_stats(out.with_suffix(".json"))
    assert isinstance(stats["dropped"], int)
    assert stats["dropped"] >= 0.95 * sent[0]  # counted (the kernel may drop a few first)
    x, _ = read_wav(out)
    heard = audible(x)
    corrections = corrections_ppm(out.with_suffix(".json"))
    print(f"MEASURED garbage: {sent[0]} datagrams, {stats['dropped']} dropped, pitch "
          f"{dominant_frequency(heard, RATE):.2f} Hz, correction {min(corrections):+.0f}.."
          f"{max(corrections):+.0f} ppm, expanded {stats['expanded_ms']} ms, concealed "
          f"{stats['concealed_pct']:.2f} %")
    assert len(heard) > 3.5 * RATE
    # 1 Hz, as for every steady tone to a file. (It allowed 2.5 Hz for "the drift controller
    # correcting up to its 2 per mille limit under the blast": in a run this short it has
    # measured nothing and applies 0, and 1000.00 Hz was measured in 3 runs, 2 of them beside
    # a busy core.)
    assert dominant_frequency(heard, RATE) == pytest.approx(1000.0, abs=1.0)
    assert max(abs(c) for c in corrections) <= SHARED_CLOCK_PPM
    assert sent[0] > 2000


def test_second_sender_does_not_mix_and_a_new_one_takes_over(cli: Cli, tmp_path: Path) -> None:
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 6)
    first = cli.start("send", f"127.0.0.1:{port}", "-s", "tone:500", "-t", "3")
    time.sleep(1.0)
    second = cli.start("send", f"127.0.0.1:{port}", "-s", "tone:1500", "-t", "4.5")
    for proc in (first, second):
        status, err = finish(proc)
        assert status == 0, err
    status, err = finish(rx)
    assert status == 0, err
    x, _ = read_wav(out)
    heard = audible(x)
    spans = [heard[i: i + RATE // 4] for i in range(0, len(heard) - RATE // 4, RATE // 4)]
    freqs = [dominant_frequency(s, RATE) for s in spans if level_db(s) > -30]
    assert freqs[0] == pytest.approx(500, abs=2)
    assert freqs[-1] == pytest.approx(1500, abs=2)
    # Never both at once: each quarter second is one tone, and 500 Hz lasts until the first
    # sender stops (about 3 s), not just until the second one starts (1 s).
    assert all(abs(f - 500) < 3 or abs(f - 1500) < 3 for f in freqs)
    switch = next(i for i, f in enumerate(freqs) if abs(f - 1500) < 3)
    assert switch >= 7
    assert all(abs(f - 1500) < 3 for f in freqs[switch:])
    assert max(abs(c) for c in corrections_ppm(out.with_suffix(".json"))) <= SHARED_CLOCK_PPM
    stats = last_stats(out.with_suffix(".json"))
    assert stats["senders"] == 2
    assert isinstance(stats["dropped_by_reason"], dict)
    assert stats["dropped_by_reason"].get("other-sender", 0) > 50


def test_trx_tx_into_deskcast_receive(sound_server: SoundServer, cli: Cli,
                                      tmp_path: Path) -> None:
    """The Debian trx package's sender (PT 0, 8 kHz timestamps) is recognised and played."""
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 5)
    player = cli.start("play", "tone:700", "pulse:hub", "-t", "5")
    trx = subprocess.Popen(["trx-tx", "-d", "pulse:hub.monitor", "-h", "127.0.0.1",
                            "-p", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=dict(sound_server.env))
    try:
        status, err = finish(rx)
    finally:
        trx.terminate()
        trx.wait(5)
        player.kill()
        player.communicate()
    assert status == 0, err
    stats = last_stats(out.with_suffix(".json"))
    assert stats["trx"] is True and stats["concealed_pct"] == 0.0
    x, _ = read_wav(out)
    heard = audible(x)
    assert len(heard) > 3 * RATE
    # PipeWire's own rate matching (2048-frame quantum on a loaded machine) moves the pitch
    # by up to ~0.1 % on this path, whoever the receiver is; PulseAudio's is exact.
    assert dominant_frequency(heard, RATE) == pytest.approx(700.0, abs=0.5 if sound_server.kind
                                                            == "pulseaudio" else 1.5)
    assert max(abs(c) for c in corrections_ppm(out.with_suffix(".json"))) <= SHARED_CLOCK_PPM
    assert level_db(heard[RATE // 2: -RATE // 2]) == pytest.approx(-15.0, abs=1.0)


def test_deskcast_send_trx_into_trx_rx(sound_server: SoundServer, cli: Cli) -> None:
    """`send --trx` is played correctly by the Debian trx package's receiver."""
    port = free_port_pair()
    trx = subprocess.Popen(["trx-rx", "-d", "pulse:out", "-h", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=dict(sound_server.env))
    try:
        time.sleep(0.5)
        with Recorder(sound_server, "out.monitor") as rec:
            tx = cli.run("send", f"127.0.0.1:{port}", "--trx", "-s", "tone:900", "-t", "3")
            assert tx.returncode == 0, tx.stderr
            time.sleep(0.5)
    finally:
        trx.terminate()
        trx.wait(5)
    heard = audible(rec.audio)
    assert len(heard) > 2.5 * RATE
    # 1.5 Hz: trx-rx conceals a late packet with a fixed 40 ms of Opus PLC and has no drift
    # correction, so its output has seams (a clean CI run on PulseAudio read 900.8 Hz)
    assert dominant_frequency(heard, RATE) == pytest.approx(900.0, abs=1.5)
    assert level_db(heard[RATE // 2: -RATE // 2]) == pytest.approx(-15.0, abs=1.5)


def test_clock_drift_is_followed_without_running_dry(cli: Cli, tmp_path: Path) -> None:
    """A sender whose clock runs 1000 ppm slow for a minute: uncorrected, the 40 ms buffer
    would run dry after 40 s and again and again; corrected, it stays put, the receiver
    measures the drift to a few ppm within the minute (README), applies it, and the tone is
    played at the sender's speed: 999 Hz. (An hour at +-300 ppm:
    tests/unit/transport/playout/test_controller.py.)

    Measured on 2026-12-07 (5 runs, one beside a busy core): the first estimate at ~12 s
    read -998 to -1010 ppm, ``drift_ppm`` (the mean of the last ten seconds) -999.5 to
    -1001.8 at the end; the correction applied in the last second -998 to -1031 ppm (the
    level term still pulling back the ~12 ms the buffer lost before the estimate came); the
    last 30 s at 998.96 to 999.00 Hz."""
    ppm = -1000.0
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 61, "--no-adaptive", "--jitter-ms", "40")
    tx = cli.run("send", f"127.0.0.1:{port}", "-s", f"tone:1000?clock_ppm={ppm}", "-t", "60",
                 timeout=90)
    assert tx.returncode == 0, tx.stderr
    status, err = finish(rx, timeout=90)
    assert status == 0, err
    records = [json.loads(line) for line in
               out.with_suffix(".json").read_text().strip().splitlines()]
    late = [r for r in records if 10 <= r["elapsed_s"] <= 59.5]
    assert late, records
    x, _ = read_wav(out)
    heard = audible(x)
    pitch = dominant_frequency(heard[-31 * RATE: -RATE], RATE)
    last = late[-1]
    print(f"MEASURED drift {ppm:+.0f} ppm: drift_ppm {last['drift_ppm']}, correction_ppm "
          f"{last['correction_ppm']} at {last['elapsed_s']:.0f} s; last 30 s at {pitch:.3f} Hz")
    assert last["drift_ppm"] == pytest.approx(ppm, abs=5.0)   # the drift was learnt
    # ... and applied: the estimate plus the level term, a few tens of ppm here
    assert last["correction_ppm"] == pytest.approx(ppm, abs=100.0)
    assert last["skipped_ms"] == 0 and last["underruns"] <= 2
    tail = [r["buffer_ms"] for r in late if r["elapsed_s"] >= 40]
    assert sum(tail) / len(tail) >= 15, tail  # on target reads 20 (after a pop); uncorrected ~10
    # The slow sender's 1 kHz is 999 Hz in real time; 998 would be the controller at its
    # 2 per mille limit, 1000 no correction.
    assert pitch == pytest.approx(1000.0 * (1 + ppm / 1e6), abs=0.1)


@pytest.mark.parametrize("group, target", [("239.255.77.1", "239.255.77.1:{port}"),
                                           ("::1", "[::1]:{port}")],
                         ids=["ipv4-multicast", "ipv6"])
def test_multicast_and_ipv6(cli: Cli, tmp_path: Path, group: str, target: str) -> None:
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    listen = f"[{group}]:{port}"
    rx = cli.start("-v", "receive", listen, "-o", f"file:{out}", "-t", "3",
                   "--stats-json", str(out.with_suffix(".json")))
    wait_for_line(rx, "listening for RTP")
    tx = cli.run("send", target.format(port=port), "--ttl", "1", "-s", "tone:1200", "-t", "2")
    assert tx.returncode == 0, tx.stderr
    status, err = finish(rx)
    assert status == 0, err
    x, _ = read_wav(out)
    heard = audible(x)
    assert len(heard) > 1.5 * RATE
    assert dominant_frequency(heard, RATE) == pytest.approx(1200.0, abs=1.0)


def destinations(record: dict[str, object]) -> list[dict[str, Any]]:
    """The sender's per-destination entries of one --stats-json record."""
    entries = record.get("destinations")
    assert isinstance(entries, list), record
    return entries


def silent_blocks(heard: np.ndarray, floor_db: float = -40.0) -> int:
    """10 ms blocks of ``heard`` (less its first and last 0.1 s: the stream's own start and
    end) below ``floor_db``: a gap in what should be an unbroken tone."""
    body = heard[RATE // 10: -RATE // 10]
    blocks = body[: len(body) // 480 * 480, 0].reshape(-1, 480)
    levels = 10 * np.log10(np.mean(blocks ** 2, axis=1) + 1e-12)
    return int(np.sum(levels < floor_db))


@pytest.fixture
def pa_rooms(pa_env: SoundServer) -> SoundServer:
    """The private PulseAudio with three rooms: null sinks room0, room1, room2."""
    for room in range(3):
        pa_env.create_null_sink(f"room{room}", rate=RATE, channels=2)
    return pa_env


def test_one_stream_to_receivers_that_come_and_go(pa_rooms: SoundServer, cli: Cli,
                                                  tmp_path: Path) -> None:
    """`send A B --destinations-from-stdin`: both rooms play the tone and both receivers
    answer the one sender; then +C and -B while it plays. A plays on without a gap or a lost
    packet, C joins the same stream, B falls silent."""
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port_pair()
        if port not in ports:
            ports.append(port)
    hosts = [f"127.0.0.1:{p}" for p in ports]
    rxs = [cli.start("-v", "receive", f":{p}", "-o", f"pulse:room{i}", "-t", "16",
                     "--stats-json", str(tmp_path / f"rx{i}.json"))
           for i, p in enumerate(ports)]
    for rx in rxs:
        wait_for_line(rx, "listening for RTP")
    tx_stats = tmp_path / "tx.json"
    # Without a timeline (--latency-ms 0): the fan-out as the route uses it today. On the
    # default 80 ms timeline room0 concealed 2 % here: not understood yet (issue 18 note).
    tx = subprocess.Popen([*DESKCAST, "-v", "send", hosts[0], hosts[1], "-s", "tone:1000",
                           "--latency-ms", "0",
                           "-t", "10", "--destinations-from-stdin", "--stats-json",
                           str(tx_stats)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=cli.env)
    assert tx.stdin is not None
    try:
        with Recorder(pa_rooms, "room0.monitor", linger=0.5) as room0, \
                Recorder(pa_rooms, "room1.monitor", linger=0.5) as room1, \
                Recorder(pa_rooms, "room2.monitor", linger=0.5) as room2:
            wait_for_line(tx, "sending Opus")
            deadline = time.monotonic() + 6
            while True:  # receivers report every 2 s
                both = tx_stats.exists() and tx_stats.read_text().strip() and [
                    d["destination"] for d in destinations(last_stats(tx_stats))
                    if d["receiver_reports"] and d["since_report_s"] < 7]
                if both == hosts[:2]:
                    break
                assert time.monotonic() < deadline, last_stats(tx_stats)
                time.sleep(0.2)
            answered = last_stats(tx_stats)
            added_at = room2.mark()
            tx.stdin.write(f"+{hosts[2]}\n".encode())
            tx.stdin.flush()
            time.sleep(1.5)
            removed_at = room1.mark()
            tx.stdin.write(f"-{hosts[1]}\n".encode())
            tx.stdin.flush()
            status, err = finish(tx)
            assert status == 0, err
            final = last_stats(tx_stats)
        for rx in rxs:
            rx.terminate()
            rx.communicate(timeout=10)
    finally:
        for proc in (tx, *rxs):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert "now also sending to " + hosts[2] in err and "stopped sending to " + hosts[1] in err
    assert sum(d["receiver_reports"] for d in destinations(answered)) == answered[
        "receiver_reports"]
    assert [d["destination"] for d in destinations(final)] == [hosts[0], hosts[2]]
    stats = [last_stats(tmp_path / f"rx{i}.json") for i in range(3)]
    assert len({s["ssrc"] for s in stats}) == 1  # one stream
    heard = [audible(rec.audio) for rec in (room0, room1, room2)]
    gaps = silent_blocks(heard[0])
    print(f"\nroom0: {len(heard[0]) / RATE:.2f} s heard, {gaps} silent 10 ms blocks, "
          f"concealed {stats[0]['concealed_pct']} %; room1 {len(heard[1]) / RATE:.2f} s, "
          f"room2 {len(heard[2]) / RATE:.2f} s")
    for audio in heard:
        assert dominant_frequency(audio, RATE) == pytest.approx(1000.0, abs=0.5)
        assert level_db(audio[RATE // 10: -RATE // 10]) == pytest.approx(-15.0, abs=1.0)
    assert 9.5 < len(heard[0]) / RATE < 10.5
    assert gaps == 0
    assert stats[0]["concealed_pct"] == 0.0 and stats[0]["late"] == 0
    # room2 was silent until added, room1 is (once its buffer has played) since removed
    assert level_db(room2.audio[:added_at]) < -70.0
    assert len(heard[2]) > 3 * RATE
    assert level_db(room1.audio[removed_at + RATE // 2:]) < -70.0
