from __future__ import annotations

import pytest

from deskcast.endpoints import Direction, Endpoint, parse, parse_hostport
from deskcast.errors import EndpointError

SRC, SINK = Direction.SOURCE, Direction.SINK


@pytest.mark.parametrize(
    "text, scheme, target, options",
    [
        ("pulse", "pulse", "", {}),
        ("pulse:", "pulse", "", {}),
        ("pulse:hub.monitor", "pulse", "hub.monitor", {}),
        ("alsa:hubcap", "alsa", "hubcap", {}),
        ("alsa:hw:Loopback,1,0", "alsa", "hw:Loopback,1,0", {}),
        ("alsa:pulse:hub.monitor", "alsa", "pulse:hub.monitor", {}),
        ("file:/music/a b.flac?loop", "file", "/music/a b.flac", {"loop": ""}),
        ("song.mp3", "file", "song.mp3", {}),
        ("./x", "file", "./x", {}),
        ("tone", "tone", "", {}),
        ("tone:1000?level=-6", "tone", "1000", {"level": "-6"}),
        ("noise:7", "noise", "7", {}),
        ("sweep:100-8000?seconds=2", "sweep", "100-8000", {"seconds": "2"}),
        ("silence", "silence", "", {}),
        ("demo", "demo", "", {}),
        ("desktop", "desktop", "", {}),
        ("-", "stdin", "", {}),
    ],
)
def test_sources(text: str, scheme: str, target: str, options: dict[str, str]) -> None:
    ep = parse(text, SRC)
    assert (ep.scheme, ep.target, dict(ep.options)) == (scheme, target, options)


@pytest.mark.parametrize(
    "text, scheme, target",
    [("null", "null", ""), ("-", "stdout", ""), ("out.wav", "file", "out.wav"),
     ("pulse:out", "pulse", "out"), ("alsa:default", "alsa", "default")],
)
def test_sinks(text: str, scheme: str, target: str) -> None:
    ep = parse(text, SINK)
    assert (ep.scheme, ep.target) == (scheme, target)


@pytest.mark.parametrize(
    "text, direction, message",
    [
        ("", SRC, "empty source"),
        ("bogus:thing", SRC, "unknown source 'bogus:thing'"),
        ("speakers", SINK, "unknown sink 'speakers'"),
        ("null", SRC, "cannot be a source"),
        ("tone:440", SINK, "cannot be a sink"),
        ("alsa", SRC, "needs a name after 'alsa:'"),
        ("file:", SRC, "nothing after the colon"),
        ("file:a.wav?lop", SRC, "unknown option 'lop'; accepted: loop"),
        ("pulse?x=1", SINK, "takes no options"),
        ("pulse?x=1", SRC, "unknown option 'x'; accepted: clock_ppm"),
    ],
)
def test_malformed(text: str, direction: Direction, message: str) -> None:
    with pytest.raises(EndpointError, match=message) as info:
        parse(text, direction)
    assert "\n" not in str(info.value)


def test_round_trip_and_helpers() -> None:
    ep = parse("file:x.flac?loop&pace=0", SRC)
    assert str(ep) == "file:x.flac?loop&pace=0"
    assert ep.flag("loop") and not ep.flag("missing")
    assert str(parse("-", SINK)) == "-"
    with pytest.raises(EndpointError, match="not a number"):
        Endpoint("tone", "", {"level": "loud"}).number("level", 0.0)


@pytest.mark.parametrize("text, host, port", [
    ("example.org", "example.org", 1350),
    ("example.org:5004", "example.org", 5004),
    (" 10.0.0.2:80 ", "10.0.0.2", 80),
    (":8000", "", 8000),
    ("[::1]:5004", "::1", 5004),
    ("[fe80::1%eth0]", "fe80::1%eth0", 1350),
    ("fe80::1", "fe80::1", 1350),  # several colons, no brackets: all host, no port
    ("", "", 1350),
])
def test_network_addresses(text: str, host: str, port: int) -> None:
    assert parse_hostport(text, 1350) == (host, port)


@pytest.mark.parametrize("text", ["h:0", "h:65536", "h:http", "[::1]:x"])
def test_a_bad_port_is_named(text: str) -> None:
    with pytest.raises(EndpointError, match=r"bad port .* give a number 1-65535"):
        parse_hostport(text, 1350)
