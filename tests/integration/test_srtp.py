"""SRTP (`--key`) and `--allow` with real deskcast and ffmpeg processes over loopback: what
plays is checked in the decoded audio, what is refused in the receiver's counters."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deskcast.transport.sdp import parse_sdp
from deskcast.transport.srtp import SrtpKey, write_key_file
from rig.signals import dominant_frequency, level_db, read_wav

from .conftest import (
    Cli,
    audible,
    finish,
    free_port_pair,
    one_error_line,
    received_seconds,
    wait_for_line,
)
from .test_sdp_ffmpeg import start_ffmpeg, udp_port_bound, wait_ffmpeg

RATE = 48000
SUITE = "AES_CM_128_HMAC_SHA1_80"


def make_key(path: Path) -> SrtpKey:
    key = SrtpKey.generate()
    write_key_file(path, key)
    return key


def receive(cli: Cli, port: int, out: Path, seconds: float, *extra: str
            ) -> subprocess.Popen[bytes]:
    proc = cli.start("-v", "receive", f":{port}", "-o", f"file:{out}", "-t", str(seconds),
                     "--stats-json", str(out.with_suffix(".json")), "--no-drift", *extra)
    wait_for_line(proc, "listening for RTP")
    return proc


def stats(out: Path) -> dict[str, object]:
    record: dict[str, object] = json.loads(
        out.with_suffix(".json").read_text().strip().splitlines()[-1])
    return record


def dropped(record: dict[str, object], reason: str) -> int:
    by_reason = record["dropped_by_reason"]
    assert isinstance(by_reason, dict)
    return int(by_reason.get(reason, 0))


def assert_tone(out: Path, seconds: float, freq: float = 1000.0, level: float = -15.0) -> None:
    x, _ = read_wav(out)
    heard = audible(x)
    assert received_seconds(heard, seconds), len(heard) / RATE
    assert dominant_frequency(heard, RATE) == pytest.approx(freq, abs=1.0)
    assert level_db(heard[RATE // 10: -RATE // 10]) == pytest.approx(level, abs=1.0)


def assert_silent(out: Path) -> None:
    x, _ = read_wav(out)
    assert len(x) > RATE            # it ran and wrote (silent) audio the whole time
    assert len(audible(x)) == 0


def test_send_key_to_receive_key_plays_the_tone(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    make_key(key_file)
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 4, "--key", str(key_file))
    tx_stats = tmp_path / "tx.json"
    tx = cli.run("send", f"127.0.0.1:{port}", "--key", str(key_file), "-s", "tone:1000",
                 "-t", "3", "--stats-json", str(tx_stats))
    assert tx.returncode == 0, tx.stderr
    status, err = finish(rx)
    assert status == 0, err
    assert_tone(out, 3)
    record = stats(out)
    assert record["dropped"] == 0 and record["decode_errors"] == 0
    assert isinstance(record["packets"], int) and record["packets"] >= 100
    # SRTCP both ways: the receiver's reports came back authenticated.
    sent = json.loads(tx_stats.read_text().strip().splitlines()[-1])
    assert sent["receiver_reports"] >= 1 and sent["receiver_loss_pct"] == 0.0


@pytest.mark.parametrize("sender", ["no key", "wrong key"])
def test_a_sender_without_the_key_is_not_played(cli: Cli, tmp_path: Path, sender: str) -> None:
    key_file = tmp_path / "k.key"
    make_key(key_file)
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 3, "--key", str(key_file))
    extra: list[str] = []
    if sender == "wrong key":
        make_key(tmp_path / "other.key")
        extra = ["--key", str(tmp_path / "other.key")]
    tx = cli.run("send", f"127.0.0.1:{port}", "-s", "tone:1000", "-t", "2", *extra)
    assert tx.returncode == 0, tx.stderr
    status, err = finish(rx)
    assert status == 0, err
    assert "Traceback" not in err
    assert_silent(out)
    record = stats(out)
    assert record["packets"] == 0 and record["senders"] == 0
    # ~100 audio packets in 2 s; the last --stats-json line can be up to 1 s old.
    assert dropped(record, "auth") >= 45


class ReplayRelay:
    """A UDP relay to the receiver that records every datagram it forwards, and can send the
    recording again: a replay attack with perfectly valid SRTP packets."""

    def __init__(self, target_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.target = ("127.0.0.1", target_port)
        self.recorded: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if addr[1] == self.target[1]:
                continue                # the receiver's reports: not part of the capture
            self.recorded.append(data)
            self.sock.sendto(data, self.target)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def replay(self, interval_s: float = 0.02) -> int:
        for data in self.recorded:
            self.sock.sendto(data, self.target)
            time.sleep(interval_s)
        return len(self.recorded)


def test_a_replayed_capture_is_rejected(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    make_key(key_file)
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 9, "--key", str(key_file))
    relay = ReplayRelay(port)
    try:
        tx = cli.run("send", f"127.0.0.1:{relay.port}", "--key", str(key_file), "-s",
                     "tone:1000", "-t", "2")
        assert tx.returncode == 0, tx.stderr
        time.sleep(0.5)
        relay.stop()
        replayed = relay.replay()       # the whole valid capture, again, at the real pace
    finally:
        relay.stop()
        relay.sock.close()
    assert replayed >= 90
    status, err = finish(rx)
    assert status == 0, err
    assert_tone(out, 2)                 # 2 s of tone, not 4: nothing of the replay played
    record = stats(out)
    assert dropped(record, "replay") == replayed
    assert dropped(record, "auth") == 0
    assert isinstance(record["packets"], int) and replayed - 5 <= record["packets"] <= replayed


def test_ffmpeg_srtp_to_deskcast(cli: Cli, tmp_path: Path) -> None:
    """ffmpeg's srtp:// muxer with AES_CM_128_HMAC_SHA1_80 -> `deskcast receive --key`; and
    the SDP ffmpeg writes for it (RTP/SAVP, a=crypto) carries the same key."""
    key_file = tmp_path / "k.key"
    key = make_key(key_file)
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 5, "--key", str(key_file))
    sdp_file = tmp_path / "ffmpeg.sdp"
    ffmpeg = start_ffmpeg(
        "-re", "-f", "lavfi", "-i", f"sine=frequency=800:sample_rate={RATE}:samples_per_frame=960",
        "-ac", "2", "-t", "3", "-c:a", "libopus", "-b:a", "128k", "-frame_duration", "20",
        "-f", "rtp", "-sdp_file", str(sdp_file),        # its own payload type (97)
        "-srtp_out_suite", SUITE, "-srtp_out_params", key.inline, f"srtp://127.0.0.1:{port}")
    try:
        wait_ffmpeg(ffmpeg, timeout=10.0)
        status, err = finish(rx, timeout=10.0)
    finally:
        for proc in (ffmpeg, rx):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert status == 0, err
    # lavfi's sine: -18 dBFS peak, -21 RMS; -ac 2 puts it on both channels at -3 dB.
    # Length: ffmpeg's -t 3 comes out as ~3.15 s here with or without SRTP (encoder
    # lookahead and padding); what matters is that the tone is there, at its level.
    assert_tone(out, 3, freq=800.0, level=-24.1)
    record = stats(out)
    assert record["dropped"] == 0 and record["decode_errors"] == 0
    assert isinstance(record["packets"], int) and record["packets"] >= 100
    assert isinstance(record["datagrams"], int) and record["datagrams"] > record["packets"]

    desc = parse_sdp(sdp_file.read_text())
    assert (desc.port, desc.crypto_key) == (port, key.inline)
    assert 96 <= desc.payload_type <= 126
    # `receive --sdp` of that SDP wants the key it names.
    line = one_error_line(cli.run("receive", "--sdp", str(sdp_file), "-o", "null", "-t", "1"))
    assert "give --key FILE" in line
    make_key(tmp_path / "other.key")
    line = one_error_line(cli.run("receive", "--sdp", str(sdp_file), "--key",
                                  str(tmp_path / "other.key"), "-o", "null", "-t", "1"))
    assert "another SRTP key" in line


def test_deskcast_srtp_to_ffmpeg(cli: Cli, tmp_path: Path) -> None:
    """`deskcast send --key --sdp F` writes RTP/SAVP with a=crypto; ffmpeg reading F decrypts
    and decodes the tone."""
    key_file = tmp_path / "k.key"
    key = make_key(key_file)
    port = free_port_pair()
    sdp_file = tmp_path / "deskcast.sdp"
    made = cli.run("send", f"127.0.0.1:{port}", "--key", str(key_file), "--sdp", str(sdp_file),
                   "-s", "silence", "-t", "0.02")
    assert made.returncode == 0, made.stderr
    assert sdp_file.stat().st_mode & 0o077 == 0
    text = sdp_file.read_bytes().decode()
    assert f"a=crypto:1 {SUITE} inline:{key.inline}\r\n" in text
    assert f"m=audio {port} RTP/SAVP 96\r\n" in text
    out = tmp_path / "out.wav"
    ffmpeg = start_ffmpeg("-protocol_whitelist", "file,udp,rtp,srtp", "-i", str(sdp_file),
                          "-t", "3", "-ar", str(RATE), "-ac", "2", "-y", str(out))
    try:
        deadline = time.monotonic() + 5.0
        while not udp_port_bound(port):
            assert ffmpeg.poll() is None, ffmpeg.communicate()[1].decode(errors="replace")
            assert time.monotonic() < deadline, "ffmpeg did not open the RTP port"
            time.sleep(0.02)
        tx = cli.run("send", f"127.0.0.1:{port}", "--key", str(key_file), "-s", "tone:1000",
                     "-t", "4", timeout=15)
        assert tx.returncode == 0, tx.stderr.decode(errors="replace")
        wait_ffmpeg(ffmpeg, timeout=5.0)
    finally:
        if ffmpeg.poll() is None:
            ffmpeg.kill()
            ffmpeg.communicate()
    assert_tone(out, 3)


def test_deskcast_srtp_to_ffmpeg_with_the_wrong_key_gives_nothing(cli: Cli, tmp_path: Path
                                                                  ) -> None:
    """The same, but the SDP holds another key: ffmpeg rejects every packet (HMAC mismatch)
    and decodes no audio at all."""
    make_key(tmp_path / "k.key")
    make_key(tmp_path / "other.key")
    port = free_port_pair()
    sdp_file = tmp_path / "deskcast.sdp"
    made = cli.run("send", f"127.0.0.1:{port}", "--key", str(tmp_path / "other.key"),
                   "--sdp", str(sdp_file), "-s", "silence", "-t", "0.02")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out.wav"
    ffmpeg = start_ffmpeg("-v", "warning", "-protocol_whitelist", "file,udp,rtp,srtp",
                          "-i", str(sdp_file), "-t", "2", "-y", str(out))
    try:
        deadline = time.monotonic() + 5.0
        while not udp_port_bound(port):
            assert time.monotonic() < deadline, "ffmpeg did not open the RTP port"
            time.sleep(0.02)
        tx = cli.run("send", f"127.0.0.1:{port}", "--key", str(tmp_path / "k.key"), "-s",
                     "tone:1000", "-t", "2", timeout=15)
        assert tx.returncode == 0
    finally:
        ffmpeg.kill()
        _, err = ffmpeg.communicate()
    assert "HMAC mismatch" in err.decode(errors="replace")
    if out.exists() and out.stat().st_size > 100:
        x, _ = read_wav(out)
        assert len(audible(x)) == 0


@pytest.mark.parametrize("allow, plays", [("10.0.0.0/8", False), ("127.0.0.0/8", True)])
def test_allow(cli: Cli, tmp_path: Path, allow: str, plays: bool) -> None:
    port = free_port_pair()
    out = tmp_path / "rx.wav"
    rx = receive(cli, port, out, 3.5, "--allow", "fd00::/8", allow)
    tx = cli.run("send", f"127.0.0.1:{port}", "-s", "tone:1000", "-t", "2.5")
    assert tx.returncode == 0, tx.stderr
    status, err = finish(rx)
    assert status == 0, err
    record = stats(out)
    if plays:
        assert_tone(out, 2.5)
        assert dropped(record, "not-allowed") == 0
    else:
        assert_silent(out)
        assert record["packets"] == 0
        # 125 audio packets in 2.5 s; the last --stats-json line can be up to 1 s old.
        assert dropped(record, "not-allowed") >= 70


def test_key_file_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    make_key(key_file)
    key_file.chmod(0o644)
    line = one_error_line(cli.run("receive", "--key", str(key_file), "-o", "null", "-t", "1"))
    assert f"chmod 600 {key_file}" in line
    line = one_error_line(cli.run("send", "127.0.0.1:9", "--key", str(key_file), "-s",
                                  "silence", "-t", "0.1"))
    assert f"chmod 600 {key_file}" in line
    key_file.chmod(0o600)
    line = one_error_line(cli.run("send", "127.0.0.1:9", "--key", str(key_file), "--trx",
                                  "-s", "silence", "-t", "0.1"))
    assert "--trx" in line
    line = one_error_line(cli.run("receive", "--key", str(tmp_path / "missing.key"), "-o",
                                  "null", "-t", "1"))
    assert "deskcast keygen" in line
    line = one_error_line(cli.run("receive", "--allow", "10.0.0.0/33", "-o", "null", "-t",
                                  "1"))
    assert "--allow '10.0.0.0/33'" in line
