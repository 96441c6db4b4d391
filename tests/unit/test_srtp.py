"""SRTP with a pre-shared key: key files, protect/unprotect through libsrtp, and the receiver's
datagram input with --key and --allow (no sockets except where the sender is exercised)."""

from __future__ import annotations

import base64
import os
import socket
import stat
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskcast.cli import main
from deskcast.encode.opus import OpusEncoder
from deskcast.endpoints import Direction, Endpoint
from deskcast.errors import ConfigError
from deskcast.media import AudioFormat, PcmBlock
from deskcast.transport.fec import FEC_PT, FecEncoder
from deskcast.transport.jitter import JitterBuffer
from deskcast.transport.receive.allow import address_allowed, parse_allow
from deskcast.transport.receiver import RtpReceiver
from deskcast.transport.rtcp import ReceiverReport, parse_rtcp, serialize_rtcp
from deskcast.transport.rtp import RtpPacket
from deskcast.transport.sdp import SessionDescription, parse_sdp, write_sdp
from deskcast.transport.sender import RtpSender
from deskcast.transport.srtp import (
    KEY_BYTES,
    MAX_STREAMS,
    RTCP_OVERHEAD,
    RTP_OVERHEAD,
    SrtpError,
    SrtpKey,
    SrtpReceiver,
    SrtpSender,
    load_key,
    write_key_file,
)

from .transport.receive.streams import tone_packets

FMT = AudioFormat()

KEY = SrtpKey(bytes(range(KEY_BYTES)))
OTHER_KEY = SrtpKey(bytes(range(1, KEY_BYTES + 1)))


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\xfc" + bytes(40)) -> bytes:
    return bytes(RtpPacket(96, seq, seq * 960, ssrc, payload))


def rejected(rx: SrtpReceiver, data: bytes, rtcp: bool = False) -> str:
    with pytest.raises(SrtpError) as info:
        rx.unprotect_rtcp(data) if rtcp else rx.unprotect(data)
    return info.value.reason


# --- keys and key files ----------------------------------------------------------------------

def test_key_text_round_trip_and_ffmpeg_format() -> None:
    key = SrtpKey.generate()
    assert len(key.inline) == 40 and base64.b64decode(key.inline) == key.material
    assert SrtpKey.parse(f"# a comment\n\n  {key.inline}  \n").material == key.material
    assert SrtpKey.parse(f"inline:{key.inline}").material == key.material
    assert key.inline not in repr(key) and key.inline not in str(key)
    assert SrtpKey.generate().material != key.material


@pytest.mark.parametrize(
    "text, words",
    [("", "found 0"), ("# only a comment\n", "found 0"),
     ("not base64 at all!\n", "not valid base64"),
     (base64.b64encode(bytes(16)).decode(), "16 bytes"),
     (base64.b64encode(bytes(46)).decode(), "46 bytes"),
     ("QUJD\nREVG\n", "found 2")],
)
def test_bad_key_text_is_one_clear_line(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        SrtpKey.parse(text, "key file k")
    message = str(info.value)
    assert words in message and "\n" not in message and message.startswith("key file k")
    assert "deskcast keygen" in message


def test_key_file_is_written_0600_and_not_replaced_without_force(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_key_file(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == KEY
    with pytest.raises(ConfigError, match=r"already exists.*--force"):
        write_key_file(path, OTHER_KEY)
    assert load_key(path) == KEY
    path.chmod(0o644)
    write_key_file(path, OTHER_KEY, force=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == OTHER_KEY


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.key"
    write_key_file(path, KEY)
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_key(path)
    assert f"run `chmod 600 {path}`" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


def test_missing_and_binary_key_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist.*deskcast keygen"):
        load_key(tmp_path / "nope.key")
    binary = tmp_path / "bin.key"
    binary.write_bytes(bytes(range(200, 256)))
    binary.chmod(0o600)
    with pytest.raises(ConfigError, match="not a text file"):
        load_key(binary)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_key(tmp_path)


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "new.key"
    assert main(["keygen", str(path)]) == 0
    out = capsys.readouterr().out
    key = load_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in out
    assert f"-srtp_out_suite AES_CM_128_HMAC_SHA1_80 -srtp_out_params {key.inline}" in out
    assert main(["keygen", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_key(path) == key
    assert main(["keygen", "--force", str(path)]) == 0
    assert load_key(path) != key


def test_keygen_default_path_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("DESKCAST_CONFIG", raising=False)
    assert main(["keygen"]) == 0
    path = tmp_path / "cfg" / "deskcast" / "srtp.key"
    assert str(path) in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --- protect / unprotect ---------------------------------------------------------------------

def test_rtp_round_trip_encrypts_and_adds_a_10_byte_tag() -> None:
    tx, rx = SrtpSender(KEY), SrtpReceiver(KEY)
    for seq in range(100):
        plain = rtp(seq)
        sealed = tx.protect(plain)
        assert len(sealed) == len(plain) + RTP_OVERHEAD
        assert sealed[:12] == plain[:12]            # the header stays readable
        assert sealed[12:len(plain)] != plain[12:]  # the payload does not
        assert rx.unprotect(sealed) == plain


def test_rtcp_round_trip_and_replay() -> None:
    tx, rx = SrtpSender(KEY), SrtpReceiver(KEY)
    plain = serialize_rtcp([ReceiverReport(0x99, ())])
    sealed = tx.protect_rtcp(plain)
    assert len(sealed) == len(plain) + RTCP_OVERHEAD
    assert rx.unprotect_rtcp(sealed) == plain
    assert isinstance(parse_rtcp(rx.unprotect_rtcp(tx.protect_rtcp(plain)))[0], ReceiverReport)
    assert rejected(rx, sealed, rtcp=True) == "replay"


def test_every_flipped_bit_fails_authentication() -> None:
    tx, rx = SrtpSender(KEY), SrtpReceiver(KEY)
    rx.unprotect(tx.protect(rtp(0)))
    sealed = tx.protect(rtp(1))
    reasons = set()
    for pos in range(len(sealed)):
        for bit in (0, 7):
            bad = bytearray(sealed)
            bad[pos] ^= 1 << bit
            with pytest.raises(SrtpError) as info:
                rx.unprotect(bytes(bad))
            reasons.add(info.value.reason)
    # A flipped sequence number can land on an old index (replay): rejected all the same.
    assert reasons <= {"auth", "replay"} and "auth" in reasons
    assert rx.unprotect(sealed) == rtp(1)   # the real one still passes afterwards


def test_replays_are_reported_as_replays() -> None:
    tx, rx = SrtpSender(KEY), SrtpReceiver(KEY)
    sealed = [tx.protect(rtp(seq)) for seq in range(300)]
    rx.unprotect(sealed[0])
    assert rejected(rx, sealed[0]) == "replay"
    for packet in sealed[1:]:
        rx.unprotect(packet)
    assert rejected(rx, sealed[150]) == "replay"    # too old for the window
    assert rejected(rx, sealed[299]) == "replay"    # the newest one, twice


def test_wrong_key_plain_rtp_and_junk_fail_authentication() -> None:
    rx = SrtpReceiver(KEY)
    assert rejected(rx, SrtpSender(OTHER_KEY).protect(rtp(5))) == "auth"
    assert rejected(rx, rtp(6)) == "auth"
    assert rejected(rx, rtp(7) + bytes(RTP_OVERHEAD)) == "auth"
    assert rejected(rx, b"\x80") == "auth"
    assert rejected(rx, bytes(3000)) == "auth"
    assert rejected(rx, serialize_rtcp([ReceiverReport(1, ())]), rtcp=True) == "auth"


def test_each_ssrc_has_its_own_context_and_old_ones_are_let_go() -> None:
    tx, rx = SrtpSender(KEY), SrtpReceiver(KEY)
    last = b""
    for ssrc in range(40):                   # more senders than MAX_STREAMS over time
        for seq in range(3):
            last = tx.protect(rtp(seq, ssrc))
            assert rx.unprotect(last) == rtp(seq, ssrc)
    assert rejected(rx, last) == "replay"
    assert len(rx._ssrcs) == MAX_STREAMS
    with pytest.raises(ValueError, match="refused"):    # the sender never sends a seq twice
        tx.protect(rtp(2, 39))


def test_a_too_long_packet_is_refused_before_libsrtp() -> None:
    with pytest.raises(ValueError, match="too long for SRTP"):
        SrtpSender(KEY).protect(rtp(0, payload=bytes(1500)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600))
def test_random_bytes_never_raise_anything_but_rejection(data: bytes) -> None:
    rx = SrtpReceiver(KEY)
    for rtcp in (False, True):
        with pytest.raises(SrtpError):
            rx.unprotect_rtcp(data) if rtcp else rx.unprotect(data)


# --- the receiver's datagram input -----------------------------------------------------------

def make_receiver(key: SrtpKey | None = KEY, allow: tuple[str, ...] = ()) -> RtpReceiver:
    rx = RtpReceiver(Endpoint("rtp", ":9", {}, Direction.SOURCE), FMT, 480,
                     jitter=JitterBuffer(48000, target_ms=20, adaptive=False), drift=False,
                     key=key, allow=allow)
    rx.pacer = None
    return rx


def test_keyed_receiver_plays_authentic_packets_only() -> None:
    rx = make_receiver()
    tx = SrtpSender(KEY)
    good = [tx.protect(p) for p in tone_packets(20, ssrc=1)]
    forged = [SrtpSender(OTHER_KEY).protect(p) for p in tone_packets(20, ssrc=2)]
    plain = tone_packets(20, ssrc=3)
    for i in range(20):
        rx.handle(forged[i], i * 0.02)
        rx.handle(plain[i], i * 0.02)
        rx.handle(good[i], i * 0.02)
        rx.handle(good[i], i * 0.02 + 0.001)      # a replay of each one
    assert rx.stats.packets == 20
    assert rx.stats.ssrc == 1 and rx.stats.senders == 1
    assert rx.stats.dropped["auth"] == 40
    assert rx.stats.dropped["replay"] == 20
    fields = rx.status_fields()
    assert fields["dropped_by_reason"] == {"auth": 40, "replay": 20}


def test_an_unauthenticated_sender_cannot_take_over_even_when_the_real_one_is_silent() -> None:
    rx = make_receiver()
    tx = SrtpSender(KEY)
    for i, p in enumerate(tone_packets(5, ssrc=1)):
        rx.handle(tx.protect(p), i * 0.02)
    for i, p in enumerate(tone_packets(50, ssrc=2)):   # long after the takeover time
        rx.handle(p, 5.0 + i * 0.02)
        rx.handle(SrtpSender(OTHER_KEY).protect(p), 5.0 + i * 0.02)
    assert rx.stats.ssrc == 1 and rx.stats.senders == 1
    assert rx.stats.dropped["auth"] == 100
    # A sender with the key does take over after the silence (the takeover rule).
    for i, p in enumerate(tone_packets(5, ssrc=3)):
        rx.handle(tx.protect(p), 7.0 + i * 0.02)
    assert rx.stats.ssrc == 3 and rx.stats.senders == 2


def test_unkeyed_receiver_drops_srtp_as_undecodable_not_as_auth() -> None:
    """Without --key nothing changes: SRTP packets are parsed as RTP (their headers are in
    the clear) and play as garbled Opus, never the sender's audio; none is dropped as a
    failed authentication."""
    def played(protect: bool) -> npt.NDArray[np.float64]:
        rx = make_receiver(key=None)
        tx = SrtpSender(KEY)
        for i, p in enumerate(tone_packets(5, ssrc=1)):
            rx.handle(tx.protect(p) if protect else p, i * 0.02)
        assert rx.stats.packets == 5 and not rx.stats.dropped
        return np.concatenate([rx.read().as_float()[:, 0] for _ in range(4)])[:3 * 960]

    clean, garbled = played(False), played(True)
    assert np.abs(clean).max() == pytest.approx(0.25, abs=0.01)   # the tone, when in clear
    similarity = float(np.dot(clean, garbled) / (np.linalg.norm(clean) * np.linalg.norm(garbled)
                                                  + 1e-12))
    assert abs(similarity) < 0.5


def test_fec_repair_packets_travel_through_srtp_and_rebuild_a_loss() -> None:
    """The real sender with --key and --fec 4:2 over loopback; one audio packet lost."""
    enc = OpusEncoder(FMT, frame_ms=20)
    catcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("127.0.0.1", 0))
    catcher.settimeout(1.0)
    port = catcher.getsockname()[1]
    tx = RtpSender(Endpoint("rtp", f"127.0.0.1:{port}", {}, Direction.SINK), FMT, 960,
                   encoder=enc, fec=FecEncoder(4, 2), key=KEY)
    tx.open()
    try:
        t = np.arange(960 * 8) / 48000
        x = np.repeat(0.25 * np.sin(2 * np.pi * 440 * t)[:, None], 2, axis=1)
        for i in range(8):
            tx.write(PcmBlock.from_float(x[i * 960:(i + 1) * 960], FMT, i * 960))
        datagrams = [catcher.recv(2048) for _ in range(8 + 4)]
    finally:
        tx.close()
        catcher.close()
    repairs = [d for d in datagrams if d[1] & 0x7F == FEC_PT]
    assert len(repairs) == 4
    for d in datagrams:    # nothing readable: a plain parse sees garbage payloads
        assert RtpPacket.parse(d).payload[-RTP_OVERHEAD:] != bytes(RTP_OVERHEAD)
    rx = make_receiver()
    audio = [d for d in datagrams if d not in repairs]
    lost = audio[1]
    for i, d in enumerate(datagrams):
        if d is not lost:
            rx.handle(d, i * 0.01)
    assert rx.stats.dropped == {}
    assert rx.stats.packets == 7 and rx.stats.fec_packets == 4
    assert rx.stats.fec_recovered >= 1


# --- --allow ---------------------------------------------------------------------------------

def test_parse_allow() -> None:
    nets = parse_allow(["10.0.0.0/8 192.168.1.7", "fd00::/8,127.0.0.0/8"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8",
                                      "127.0.0.0/8"]
    assert [str(n) for n in parse_allow(["10.1.2.3/8"])] == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"--allow '10\.0\.0\.0/33'"):
        parse_allow(["10.0.0.0/33"])
    with pytest.raises(ConfigError, match="--allow 'somehost'"):
        parse_allow(["somehost"])


def test_address_allowed_handles_mapped_v6_and_junk() -> None:
    nets = parse_allow(["127.0.0.0/8", "fd00::/8"])
    assert address_allowed("127.0.0.1", nets)
    assert address_allowed("::ffff:127.0.0.1", nets)
    assert address_allowed("fd12::1%eth0", nets)
    assert not address_allowed("10.0.0.1", nets)
    assert not address_allowed("::ffff:10.0.0.1", nets)
    assert not address_allowed("::1", nets)
    assert not address_allowed("not an address", nets)
    assert not address_allowed(None, nets)


def test_receiver_drops_datagrams_from_outside_allow_before_parsing() -> None:
    rx = make_receiver(key=None, allow=("10.0.0.0/8",))
    packets = tone_packets(10, ssrc=1)
    for i, p in enumerate(packets):
        rx.handle(p, i * 0.02, ("::ffff:127.0.0.1", 4000, 0, 0))
        rx.handle(b"junk", i * 0.02, ("127.0.0.1", 4000))
    assert rx.stats.packets == 0 and rx.stats.dropped == {"not-allowed": 20}
    assert rx.stats.datagrams == 20
    for i, p in enumerate(packets):
        rx.handle(p, 1 + i * 0.02, ("10.1.2.3", 4000))
    assert rx.stats.packets == 10


def test_allow_setting_takes_a_list_on_the_command_line_and_in_the_config_file(
        tmp_path: Path) -> None:
    from deskcast import config

    conf = tmp_path / "c.toml"
    conf.write_text('[receive]\nallow = ["10.0.0.0/8", "fd00::/8"]\nkey = "/k"\n')
    values = config.load_file(conf, required=True)
    assert values["receive"]["allow"] == "10.0.0.0/8 fd00::/8"
    conf.write_text('[receive]\nallow = [1, 2]\n')
    with pytest.raises(ConfigError, match="list of text"):
        config.load_file(conf, required=True)
    from deskcast.cli import build_parser

    args = build_parser().parse_args(["receive", "--allow", "10.0.0.0/8", "::1", "--key",
                                      "k"])
    merged = config.merge(["receive"], {}, vars(args))
    assert merged.allow == "10.0.0.0/8 ::1" and merged.key == "k"


# --- SDP -------------------------------------------------------------------------------------

def test_sdp_with_a_key_is_srtp_and_reads_back() -> None:
    text = write_sdp(SessionDescription("127.0.0.1", 5004, crypto_key=KEY.inline))
    assert "m=audio 5004 RTP/SAVP 96\r\n" in text
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY.inline}\r\n" in text
    assert parse_sdp(text).crypto_key == KEY.inline
    plain = write_sdp(SessionDescription("127.0.0.1", 5004))
    assert "RTP/AVP" in plain and "crypto" not in plain
    assert parse_sdp(plain).crypto_key is None
    other_suite = text.replace("AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80")
    with pytest.raises(Exception, match="unsupported transport 'RTP/SAVP'"):
        parse_sdp(other_suite)


def test_sdp_file_with_a_key_is_private(tmp_path: Path) -> None:
    from deskcast.cli import _write_sdp
    from deskcast.config import merge

    s = merge(["send", "audio"], {}, {})
    sender = RtpSender(Endpoint("rtp", "127.0.0.1:5004", {}, Direction.SINK), FMT, 960,
                       encoder=OpusEncoder(FMT, frame_ms=20), key=KEY)
    path = tmp_path / "s.sdp"
    path.write_text("old")
    os.chmod(path, 0o644)
    _write_sdp(str(path), sender, s, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_sdp(path.read_text()).crypto_key == KEY.inline


def test_sdp_as_ffmpeg_writes_it_for_srtp() -> None:
    """ffmpeg -f rtp -srtp_out_params K -sdp_file: RTP/AVP plus a=crypto."""
    text = ("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=No Name\nc=IN IP4 127.0.0.1\nt=0 0\n"
            "m=audio 5004 RTP/AVP 96\nb=AS:128\na=rtpmap:96 opus/48000/2\n"
            f"a=fmtp:96 sprop-stereo=1\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY.inline}\n")
    assert parse_sdp(text).crypto_key == KEY.inline


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=1600), max_size=20))
def test_keyed_receiver_counts_random_datagrams_and_keeps_playing(datagrams: list[bytes]
                                                                  ) -> None:
    rx = make_receiver()
    for i, data in enumerate(datagrams):
        rx.handle(data, i * 0.001, ("192.0.2.1", 5000))
    assert rx.stats.datagrams == len(datagrams)
    assert rx.stats.packets == 0 and rx.stats.rtcp == 0
    assert sum(rx.stats.dropped.values()) == len(datagrams)
    assert set(rx.stats.dropped) <= {"auth", "replay"}
    for _ in range(3):
        assert rx.read().frames > 0
