"""SDP (deskcast.transport.sdp): known text, round trips, what other tools write, every error,
and fuzzing (parse_sdp raises nothing but EndpointError)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskcast.errors import EndpointError
from deskcast.transport.sdp import SessionDescription, parse_sdp, write_sdp

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def crlf(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


def sdp(*media_lines: str, session: tuple[str, ...] = ("c=IN IP4 192.0.2.7",)) -> str:
    """A small SDP: the usual session lines, ``session`` extras, then ``media_lines``."""
    return crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=test", *session, "t=0 0", *media_lines)


OPUS_MEDIA = ("m=audio 5004 RTP/AVP 96", "a=rtpmap:96 opus/48000/2")


def normalized(desc: SessionDescription) -> SessionDescription:
    """What ``parse_sdp(write_sdp(desc))`` gives back: the TTL is only carried for IPv4
    multicast (where it is always written, 1 by default); names lose outer spaces."""
    try:
        ip = ipaddress.ip_address(desc.address)
    except ValueError:
        ip = None
    v4_multicast = isinstance(ip, ipaddress.IPv4Address) and ip.is_multicast
    ttl = (1 if desc.ttl is None else desc.ttl) if v4_multicast else None
    return replace(desc, ttl=ttl, session_name=desc.session_name.strip(),
                   encoding=desc.encoding.lower())


# --- writing --------------------------------------------------------------------------------

def test_known_good_text() -> None:
    desc = SessionDescription("192.0.2.7", 5004, ptime_ms=20.0, maxaveragebitrate=128000,
                              origin_address="192.0.2.1", session_id=3912345678)
    assert write_sdp(desc) == (
        "v=0\r\n"
        "o=- 3912345678 0 IN IP4 192.0.2.1\r\n"
        "s=deskcast\r\n"
        "c=IN IP4 192.0.2.7\r\n"
        "t=0 0\r\n"
        "m=audio 5004 RTP/AVP 96\r\n"
        "a=rtpmap:96 opus/48000/2\r\n"
        "a=fmtp:96 stereo=1;sprop-stereo=1;maxaveragebitrate=128000\r\n"
        "a=ptime:20\r\n"
        "a=recvonly\r\n"
    )


def test_defaults_are_minimal_and_crlf() -> None:
    text = write_sdp(SessionDescription("127.0.0.1", 1350))
    assert text.endswith("\r\n")
    assert text.count("\n") == text.count("\r\n")
    lines = text.split("\r\n")[:-1]
    assert [line[:2] for line in lines] == ["v=", "o=", "s=", "c=", "t=", "m=", "a=", "a=",
                                            "a="]
    assert "a=fmtp:96 stereo=1;sprop-stereo=1" in lines
    assert not any(line.startswith("a=ptime") for line in lines)


def test_mono_still_says_opus_48000_2() -> None:
    """RFC 7587 7: the rtpmap is always opus/48000/2; fmtp says the stream is mono."""
    text = write_sdp(SessionDescription("127.0.0.1", 5004, channels=1, payload_type=111))
    assert "m=audio 5004 RTP/AVP 111\r\n" in text
    assert "a=rtpmap:111 opus/48000/2\r\n" in text
    assert "a=fmtp:111 stereo=0;sprop-stereo=0\r\n" in text


@pytest.mark.parametrize(
    "address, ttl, c_line",
    [("239.1.2.3", 16, "c=IN IP4 239.1.2.3/16"),
     ("239.1.2.3", None, "c=IN IP4 239.1.2.3/1"),   # RFC 4566: IPv4 multicast MUST have one
     ("192.0.2.9", 16, "c=IN IP4 192.0.2.9"),       # ... and unicast MUST NOT
     ("2001:db8::9", 5, "c=IN IP6 2001:db8::9"),
     ("ff15::1234", 5, "c=IN IP6 ff15::1234"),      # IPv6 has no TTL in c=
     ("receiver.example", None, "c=IN IP4 receiver.example")],
)
def test_connection_line(address: str, ttl: int | None, c_line: str) -> None:
    assert c_line + "\r\n" in write_sdp(SessionDescription(address, 5004, ttl=ttl))


def test_ipv6_origin_and_fractional_ptime() -> None:
    text = write_sdp(SessionDescription("::1", 5004, origin_address="::1", ptime_ms=2.5))
    assert "o=- 0 0 IN IP6 ::1\r\n" in text
    assert "a=ptime:2.5\r\n" in text


def test_empty_session_name_is_a_space() -> None:
    assert "\r\ns= \r\n" in write_sdp(SessionDescription("127.0.0.1", 5004, session_name=""))


def test_write_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(EndpointError, match="only describes Opus"):
        write_sdp(SessionDescription("127.0.0.1", 5004, encoding="PCMU"))
    with pytest.raises(EndpointError, match="48000"):
        write_sdp(SessionDescription("127.0.0.1", 5004, clock_rate=8000))


@pytest.mark.parametrize(
    "changes, message",
    [({"port": 0}, "bad port"), ({"port": 65536}, "bad port"),
     ({"payload_type": 128}, "payload type"), ({"payload_type": -1}, "payload type"),
     ({"channels": 3}, "1 or 2 channels"), ({"ttl": 256}, "TTL"), ({"ttl": -1}, "TTL"),
     ({"session_name": "two\r\nlines"}, "session name"),
     ({"session_name": "a\u2028b"}, "session name"),
     ({"ptime_ms": 0.0}, "packet time"), ({"ptime_ms": float("nan")}, "packet time"),
     ({"ptime_ms": 121.0}, "packet time"),
     ({"maxaveragebitrate": 5999}, "maxaveragebitrate"),
     ({"maxaveragebitrate": 510001}, "maxaveragebitrate"),
     ({"address": ""}, "bad address"), ({"address": "a b"}, "bad address"),
     ({"address": "[::1]"}, "bad address"),
     ({"address": "fe80::1%eth0\r\nm=video"}, "bad address"),   # no SDP injection
     ({"origin_address": "x\ny"}, "bad origin address"),
     ({"encoding": "op us"}, "encoding"), ({"clock_rate": 0}, "clock rate"),
     ({"session_id": -1}, "session id")],
)
def test_invalid_descriptions(changes: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"address": "127.0.0.1", "port": 5004, **changes}
    with pytest.raises(EndpointError, match=message):
        SessionDescription(**args)  # type: ignore[arg-type]


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "desc",
    [SessionDescription("127.0.0.1", 5004),
     SessionDescription("192.0.2.7", 1350, payload_type=0, channels=1, ptime_ms=60.0),
     SessionDescription("239.255.0.1", 5004, ttl=32, maxaveragebitrate=64000,
                        session_name="Living room", session_id=42),
     SessionDescription("ff02::1", 5006, origin_address="2001:db8::1", ptime_ms=2.5),
     SessionDescription("host.example", 65535, payload_type=127, session_name="")],
    ids=["default", "trx-mono", "v4-multicast", "v6-multicast", "hostname"],
)
def test_round_trip(desc: SessionDescription) -> None:
    assert parse_sdp(write_sdp(desc)) == desc


_v4 = st.ip_addresses(v=4).map(str)
_v6 = st.ip_addresses(v=6).map(str)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
_addresses = st.one_of(_v4, _v6, _hostnames, st.sampled_from(
    ["239.255.12.34", "224.0.0.251", "ff02::1", "ff15::abcd", "::1", "127.0.0.1"]))
descriptions = st.builds(
    SessionDescription,
    address=_addresses,
    port=st.integers(1, 65535),
    payload_type=st.integers(0, 127),
    encoding=st.sampled_from(["opus", "OPUS", "Opus"]),
    channels=st.sampled_from([1, 2]),
    ttl=st.none() | st.integers(0, 255),
    session_name=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                         max_size=40).filter(str.isprintable),
    ptime_ms=st.none() | st.floats(0.0, 120.0, exclude_min=True),
    maxaveragebitrate=st.none() | st.integers(6000, 510000),
    origin_address=_addresses,
    session_id=st.integers(0, 2**64 - 1),
)


@FAST
@given(descriptions)
def test_round_trip_anything(desc: SessionDescription) -> None:
    text = write_sdp(desc)
    assert text.count("\n") == text.count("\r\n")
    assert all(line[:2] in {"v=", "o=", "s=", "c=", "t=", "m=", "a="}
               for line in text.split("\r\n")[:-1])
    assert parse_sdp(text) == normalized(desc)


def test_lf_only_is_fine() -> None:
    desc = SessionDescription("192.0.2.7", 5004, ptime_ms=20.0)
    assert parse_sdp(write_sdp(desc).replace("\r\n", "\n")) == desc


# --- what other tools write -----------------------------------------------------------------

def test_ffmpeg_sdp_file() -> None:
    """What `ffmpeg ... -c:a libopus -f rtp -payload_type 96 -sdp_file` writes (ffmpeg 5.1)."""
    text = crlf("v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=No Name", "c=IN IP4 127.0.0.1", "t=0 0",
                "a=tool:libavformat LIBAVFORMAT_VERSION", "m=audio 40000 RTP/AVP 96",
                "b=AS:128", "a=rtpmap:96 opus/48000/2", "a=fmtp:96 sprop-stereo=1")
    assert parse_sdp(text) == SessionDescription(
        "127.0.0.1", 40000, session_name="No Name", channels=2)


def test_webrtc_style_sdp_with_many_payload_types() -> None:
    text = sdp("m=audio 9 RTP/AVPF 111 63 9 0 8 13 110 126",
               "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0", "a=mid:0", "a=sendrecv",
               "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc",
               "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:63 red/48000/2",
               "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=ptime:20",
               session=("a=group:BUNDLE 0", "a=extmap-allow-mixed"))
    desc = parse_sdp(text)
    assert (desc.address, desc.port, desc.payload_type, desc.channels) == ("0.0.0.0", 9, 111, 1)
    assert desc.ptime_ms == 20.0


def test_trx_style_payload_type_0() -> None:
    """trx sends Opus with payload type 0; an rtpmap saying so makes it Opus, not PCMU."""
    text = sdp("m=audio 1350 RTP/AVP 0", "a=rtpmap:0 opus/48000/2",
               "a=fmtp:0 sprop-stereo=1")
    desc = parse_sdp(text)
    assert (desc.payload_type, desc.port, desc.encoding, desc.channels) == (0, 1350, "opus", 2)


def test_media_level_connection_wins_and_lenient_lines() -> None:
    text = ("\ufeffv=0\n"
            "o=- 4611731400430051336 2 IN IP4 192.0.2.1\n"
            "s=  Kitchen  \n"
            "c=IN IP4 192.0.2.99\n"
            "\n"
            "t=0 0\n"
            "x-vendor: something\n"
            "a=unknown-session-attribute:1\n"
            "m=video 6000 RTP/AVP 97\n"
            "c=IN IP4 192.0.2.50\n"
            "a=rtpmap:97 H264/90000\n"
            "m=audio 5004/2 rtp/avp 100\n"
            "c=IN IP4 239.0.0.1/64/3\n"
            "a=rtpmap:100 OPUS/48000/2   \n"
            "a=fmtp:100 maxplaybackrate=48000; stereo=1; maxaveragebitrate=96000\n"
            "a=framerate:30\n")
    desc = parse_sdp(text)
    assert desc == SessionDescription(
        "239.0.0.1", 5004, payload_type=100, channels=2, ttl=64, session_name="Kitchen",
        maxaveragebitrate=96000, origin_address="192.0.2.1", session_id=4611731400430051336)


def test_session_level_connection_and_ptime() -> None:
    text = sdp(*OPUS_MEDIA, session=("c=IN IP6 ff15::1/3", "a=ptime:40"))
    desc = parse_sdp(text)
    assert (desc.address, desc.ttl, desc.ptime_ms) == ("ff15::1", None, 40.0)


def test_second_audio_stream_when_the_first_is_not_usable() -> None:
    text = sdp("m=audio 5000 RTP/AVP 0", "m=audio 5002 RTP/SAVP 96", "a=rtpmap:96 opus/48000/2",
               "m=audio 5004 RTP/AVP 96", "a=rtpmap:96 opus/48000/2")
    assert parse_sdp(text).port == 5004


@pytest.mark.parametrize(
    "fmtp, channels",
    [(None, 1), ("sprop-stereo=1", 2), ("stereo=1", 2), ("stereo=1;sprop-stereo=0", 1),
     ("sprop-stereo=1; stereo=0", 2), ("useinbandfec=1", 1)],
)
def test_channels_from_fmtp(fmtp: str | None, channels: int) -> None:
    extra = () if fmtp is None else (f"a=fmtp:96 {fmtp}",)
    assert parse_sdp(sdp(*OPUS_MEDIA, *extra)).channels == channels


@pytest.mark.parametrize(
    "attribute, ptime, bitrate",
    [("a=ptime:abc", None, None), ("a=ptime:0", None, None), ("a=ptime:500", None, None),
     ("a=fmtp:96 maxaveragebitrate=1000", None, None),
     ("a=fmtp:96 maxaveragebitrate=lots", None, None),
     ("a=fmtp:97 maxaveragebitrate=64000", None, None),   # another payload type's
     ("a=ptime:10", 10.0, None)],
)
def test_malformed_optional_values_are_ignored(attribute: str, ptime: float | None,
                                                bitrate: int | None) -> None:
    desc = parse_sdp(sdp(*OPUS_MEDIA, attribute))
    assert (desc.ptime_ms, desc.maxaveragebitrate) == (ptime, bitrate)


def test_malformed_origin_is_ignored() -> None:
    text = crlf("v=0", "o=garbage", "s=x", "c=IN IP4 192.0.2.7", "t=0 0", *OPUS_MEDIA)
    desc = parse_sdp(text)
    assert (desc.origin_address, desc.session_id) == ("127.0.0.1", 0)


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, message",
    [("", "no audio stream"),
     ("RIFF\x00\x00WAVEfmt garbage", "no audio stream"),
     (sdp("m=video 5004 RTP/AVP 96", "a=rtpmap:96 VP8/90000"), "no audio stream.*video"),
     (sdp("m=audio 5004 RTP/AVP 0"), r"PCMU/8000 \(payload type 0\), not Opus"),
     (sdp("m=audio 5004 RTP/AVP 8 0"), "PCMA/8000.*PCMU/8000.*not Opus"),
     (sdp("m=audio 5004 RTP/AVP 96", "a=rtpmap:96 L16/48000/2"), "L16/48000/2.*not Opus"),
     (sdp("m=audio 5004 RTP/AVP 96"), "payload type 96 without an a=rtpmap line"),
     (sdp("m=audio 5004 RTP/AVP 96", "a=rtpmap:96 opus/16000/2"), "48000 Hz clock"),
     (sdp("m=audio 5004 RTP/AVP 96", "a=rtpmap:96 opus"), "48000 Hz clock"),
     (sdp("m=audio 5004 RTP/SAVP 96", "a=rtpmap:96 opus/48000/2"), "unsupported transport"),
     (sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2"),
      "unsupported transport 'UDP/TLS/RTP/SAVPF'"),
     (sdp("m=audio 5004 TCP/RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), "unsupported transport"),
     (sdp("m=audio 5004 udp 96"), "unsupported transport 'udp'"),
     (sdp("m=audio 0 RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), "switched off"),
     (sdp("m=audio 70000 RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), "bad port '70000'"),
     (sdp("m=audio five RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), "bad port 'five'"),
     (sdp("m=audio -1 RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), "bad port"),
     (sdp("m=audio 5004 RTP/AVP"), "malformed media line"),
     (sdp("m=audio 5004 RTP/AVP 200"), "bad RTP payload type '200'"),
     (sdp("m=audio 5004 RTP/AVP x", "a=rtpmap:96 opus/48000/2"), "bad RTP payload type"),
     (sdp(*OPUS_MEDIA, session=()), "no connection line"),
     (sdp(*OPUS_MEDIA, session=("c=IN IP4",)), "unsupported connection line"),
     (sdp(*OPUS_MEDIA, session=("c=ATM NSAP 47.0091",)), "unsupported connection line"),
     (sdp(*OPUS_MEDIA, session=("c=IN IP4 no_such:host!",)), "bad address"),
     (sdp(*OPUS_MEDIA, session=("c=IN IP4 239.1.1.1/300",)), "bad TTL"),
     (sdp(*OPUS_MEDIA, session=("c=IN IP4 239.1.1.1/x",)), "bad TTL")],
    ids=lambda v: None if isinstance(v, str) and "\n" in v else str(v)[:30],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message) as info:
        parse_sdp(text)
    assert "\n" not in str(info.value) and "\r" not in str(info.value)
    assert len(str(info.value)) < 300


def test_error_messages_stay_short_and_on_one_line() -> None:
    long = "x" * 5000
    with pytest.raises(EndpointError) as info:
        parse_sdp(sdp(f"m=audio 5004 RTP/{long} 96"))
    assert len(str(info.value)) < 400
    with pytest.raises(EndpointError) as info:
        parse_sdp(sdp("m=audio 5004 RTP/AVP 96", f"a=rtpmap:96 {long}/8000\x0bm=x"))
    assert len(str(info.value)) < 400


# --- fuzzing --------------------------------------------------------------------------------

def _parse_or_endpoint_error(text: str) -> SessionDescription | None:
    try:
        desc = parse_sdp(text)
    except EndpointError as err:
        assert str(err) and "\n" not in str(err)
        return None
    # Whatever parses can be written back, and reads back the same.
    assert parse_sdp(write_sdp(desc)) == normalized(desc)
    return desc


@FAST
@given(st.text(max_size=400))
def test_fuzz_any_text(text: str) -> None:
    _parse_or_endpoint_error(text)


_fragments = st.sampled_from([
    "v=0", "o=- 0 0 IN IP4 127.0.0.1", "o=- 1 2 IN IP6 ::1", "o=", "s=", "s=name", "t=0 0",
    "c=IN IP4 127.0.0.1", "c=IN IP4 239.1.1.1/7", "c=IN IP6 ff02::1", "c=IN IP4", "c=",
    "c=IN IP4 239.1.1.1/999", "m=audio 5004 RTP/AVP 96", "m=audio 5004 RTP/AVP 0 96",
    "m=audio 0 RTP/AVP 96", "m=audio 5004 RTP/SAVP 96", "m=video 5006 RTP/AVP 97", "m=audio",
    "m=audio 99999 RTP/AVP 96", "m=audio 5004/2 RTP/AVPF 96 97", "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:0 opus/48000/2", "a=rtpmap:96 opus/8000", "a=rtpmap:96", "a=rtpmap:", "a=rtpmap",
    "a=rtpmap:97 PCMU/8000", "a=fmtp:96 stereo=1;sprop-stereo=1", "a=fmtp:96 ;;==;",
    "a=fmtp:96 maxaveragebitrate=99999999999999", "a=ptime:20", "a=ptime:1e5", "a=ptime:",
    "a=recvonly", "b=AS:128", "", " ", "m=audio 5004 RTP/AVP 300", "a=fmtp:96 sprop-stereo",
])
_mutated_line = st.builds(lambda line, junk, cut: line[:cut] + junk,
                          _fragments, st.text(max_size=12), st.integers(0, 40))


@FAST
@given(st.lists(st.one_of(_fragments, _mutated_line), max_size=20),
       st.sampled_from(["\r\n", "\n", "\r"]))
def test_fuzz_sdp_like_lines(lines: list[str], newline: str) -> None:
    _parse_or_endpoint_error(newline.join(lines))


@FAST
@given(descriptions, st.data())
def test_fuzz_mutated_real_sdp(desc: SessionDescription, data: st.DataObject) -> None:
    lines = write_sdp(desc).split("\r\n")
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "junk", "cut"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "junk":
            lines[i] += data.draw(st.text(max_size=8))
        else:
            lines[i] = lines[i][: data.draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        if not lines:
            break
    _parse_or_endpoint_error("\r\n".join(lines))
