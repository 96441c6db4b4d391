from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from deskcast import config
from deskcast.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_defaults_then_file_then_cli(tmp_path: Path) -> None:
    path = write(tmp_path, '[audio]\nbuffer_ms = 60\nrtprio = 10\n[play]\nsource = "tone:1000"\n')
    values = config.load_file(path, required=True)
    s = config.merge(["audio", "play"], values, {"rtprio": "20", "sink": None})
    assert s.buffer_ms == 60.0 and s.origins["buffer_ms"] == "config file"
    assert s.rtprio == 20 and s.origins["rtprio"] == "command line"
    assert s.source == "tone:1000"
    assert s.sink == "pulse" and s.origins["sink"] == "default"
    assert s.rate == 48000


def test_missing_default_file_is_empty_but_missing_named_file_is_an_error(tmp_path: Path) -> None:
    assert config.load_file(tmp_path / "none.toml", required=False) == {}
    with pytest.raises(ConfigError, match="does not exist"):
        config.load_file(tmp_path / "none.toml", required=True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[audio\n", "not valid TOML"),
        ("[sound]\nx = 1\n", r"unknown section \[sound\]; known: audio, play, run"),
        ("[audio]\nbuffer = 5\n", r"unknown setting audio.buffer; \[audio\] takes rate"),
        ("[audio]\nrate = 'fast'\n", "audio.rate must be a whole number"),
        ("[audio]\nrate = 100\n", "audio.rate must be at least 8000"),
        ("[audio]\nsample_format = 'u8'\n", "must be one of s16le, s32le, f32le"),
        ("[audio]\nrtprio = 1.5\n", "whole number"),
        ("audio = 3\n", r"\[audio\] must be a table"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load_file(write(tmp_path, text), required=True)


def test_bad_cli_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--buffer-ms must be a number"):
        config.merge(["audio"], {}, {"buffer_ms": "lots"})


def test_config_path_follows_xdg(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert config.default_config_path(env) == tmp_path / "deskcast" / "config.toml"
    assert config.default_config_path({"DESKCAST_CONFIG": "/x.toml"}) == Path("/x.toml")


def test_every_option_is_explained_and_its_flag_shows_its_default() -> None:
    for section, options in config.SECTIONS.items():
        parser = argparse.ArgumentParser()
        config.add_arguments(parser, [section])
        shown = {action.dest: str(action.help) for action in parser._actions}
        for opt in options:
            assert len(opt.help) > 15, opt.name
            if opt.default is not None:
                assert f"(default {opt.default})" in shown[opt.name].replace("%%", "%"), \
                    opt.name
            if opt.name.endswith("_ms"):
                assert opt.type is float


def test_low_latency_preset_changes_only_defaults(tmp_path: Path) -> None:
    s = config.merge(["receive", "run", "audio", "hub"], {"audio": {"block_ms": 2.5}},
                     {"low_latency": True, "buffer_ms": 30})
    assert (s.jitter_ms, s.jitter_min_ms, s.buffer_ms, s.block_ms) == (5.0, 2.0, 30.0, 2.5)
    assert s.origins["jitter_ms"] == "--low-latency"
    assert s.origins["buffer_ms"] == "command line"
    tx = config.merge(["send", "run", "audio", "hub"], {}, {"low_latency": True})
    assert (tx.frame_ms, tx.buffer_ms) == (5.0, 10.0)
    plain = config.merge(["send", "run", "audio", "hub"], {}, {})
    assert (plain.frame_ms, plain.buffer_ms) == (20.0, 40.0)


@pytest.mark.parametrize(("sections", "file", "cli", "message"), [
    (["send"], {}, {"fec": "1/4", "trx": True}, "--fec cannot be used with --trx"),
    (["receive"], {}, {"jitter_ms": 300}, "need --jitter-min-ms <= --jitter-ms <= "
     "--jitter-max-ms"),
    (["receive"], {"receive": {"jitter_min_ms": 50.0}}, {}, "need --jitter-min-ms <="),
    (["serve"], {}, {"tracker_url": "ftp://x/now.json"},
     "--tracker-url 'ftp://x/now.json' must start with http:// or https://"),
    (["serve"], {"serve": {"tls_key": "k.pem"}}, {}, "--tls-key needs --tls-cert too"),
    (["serve"], {}, {"tls_cert": "c.pem"}, "--tls-cert needs --tls-key too"),
    (["serve"], {}, {"listen_token": "two words"}, "--listen-token must be 1 to 256 "
     "printable characters without spaces"),
    (["serve"], {}, {"listen_token": "x" * 257}, "--listen-token must be 1 to 256"),
])
def test_settings_that_cannot_work_together_are_one_line_whatever_set_them(
        sections: list[str], file: dict[str, dict[str, config.Value]], cli: dict[str, object],
        message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.merge(sections, file, cli)


def test_settings_that_work_together_pass_the_rules() -> None:
    s = config.merge(["send", "receive", "serve"], {"serve": {"tls_key": "k.pem"}},
                     {"fec": "1/4", "jitter_ms": 100, "tls_cert": "c.pem",
                      "listen_token": "s3cret", "tracker_url": "https://x/now.json",
                      "low_latency": True})
    assert (s.fec, s.trx, s.jitter_ms, s.listen_token) == ("1/4", False, 100.0, "s3cret")
