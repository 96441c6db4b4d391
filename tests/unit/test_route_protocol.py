"""The route's words, the control messages, the socket's place and 'answering'."""

from __future__ import annotations

from pathlib import Path

import pytest

from deskcast.errors import EndpointError
from deskcast.route import protocol
from deskcast.route.legs import answer_state
from deskcast.route.protocol import ProtocolError, Target, parse_target, parse_targets


@pytest.mark.parametrize("word, target", [
    ("local", Target("local")),
    ("LOCAL", Target("local")),
    ("web", Target("web")),
    ("none", Target("none")),
    ("box", Target("host", "box", 1350)),
    ("box:5004", Target("host", "box", 5004)),
    ("192.168.1.7", Target("host", "192.168.1.7", 1350)),
    ("[::1]:1400", Target("host", "::1", 1400)),
    ("fe80::1", Target("host", "fe80::1", 1350)),
    ("trx:box", Target("host", "box", 1350, trx=True)),
])
def test_words(word: str, target: Target) -> None:
    assert parse_target(word, 1350) == target


def test_word_round_trip() -> None:
    for word in ("local", "box", "box:1350", "[::1]:1400", "trx:box:1350", "trx:box"):
        assert parse_target(word, 1350).word == word
        assert parse_target(parse_target(word, 1350).word, 1350) == parse_target(word, 1350)


@pytest.mark.parametrize("word", ["", ":1350", "box:0", "box:99999", "box:x", "a b",
                                  "http://box", "trx:"])
def test_bad_words(word: str) -> None:
    with pytest.raises(EndpointError):
        parse_target(word, 1350)


def test_target_lists() -> None:
    assert parse_targets(["box", "kitchen:1400", "box:1350", "local"], 1350) == [
        Target("host", "box", 1350), Target("host", "kitchen", 1400), Target("local")]
    with pytest.raises(EndpointError, match="'none' turns every destination off"):
        parse_targets(["none", "box"], 1350)
    with pytest.raises(EndpointError, match="say where to"):
        parse_targets([], 1350)


def test_messages() -> None:
    msg = {"cmd": "route", "targets": ["box"]}
    line = protocol.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode(line) == msg
    for bad in (b"nope\n", b"[1, 2]\n", b"\xff\xfe\n", b"{" + b" " * protocol.MAX_MESSAGE_BYTES):
        with pytest.raises(ProtocolError):
            protocol.decode(bad)


def test_socket_place(tmp_path: Path) -> None:
    assert protocol.socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path(
        "/run/user/1000/deskcast/control.sock")
    # no runtime dir: the state dir
    path = protocol.socket_path({"HOME": str(tmp_path)})
    assert path.name == "control.sock" and path.parent.name == "deskcast"


def test_private_dir_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "deskcast"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    protocol.make_private_dir(d)
    assert d.stat().st_mode & 0o777 == 0o700


def test_answer_state() -> None:
    fresh = {"receiver_reports": 3, "since_report_s": 1.5, "send_errors": 0}
    assert answer_state(fresh, 10.0, False, 4.0) == "answering"
    stale = {"receiver_reports": 3, "since_report_s": 12.0}
    assert answer_state(stale, 30.0, False, 4.0) == "not answering"
    assert answer_state({}, 1.0, False, 4.0) == "waiting"
    assert answer_state({}, 4.5, False, 4.0) == "not answering"
    assert answer_state({"send_errors": 2}, 0.5, False, 4.0) == "not answering"
    assert answer_state({}, 60.0, True, 4.0) == "unconfirmed"  # trx-rx never reports
