"""What every command needs: its settings (config file, then command line) and its audio
format."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from deskcast import config
from deskcast.media import AudioFormat, SampleFormat


def load_settings(args: argparse.Namespace, sections: Sequence[str]) -> config.Settings:
    if args.config:
        path = Path(args.config).expanduser()
        values = config.load_file(path, required=True)
    else:
        path = config.default_config_path()
        values = config.load_file(path, required=False)
    return config.merge(sections, values, vars(args), file_origin=str(path))


def audio_format(s: config.Settings) -> AudioFormat:
    return AudioFormat(s.rate, s.channels, SampleFormat.parse(s.sample_format))

