"""The three layers of settings — defaults, the config file, the command line — read, checked
and merged into one command's :class:`Settings`."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deskcast.config.options import LOW_LATENCY, SECTIONS, Option, Value
from deskcast.config.rules import check_rules
from deskcast.errors import ConfigError


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DESKCAST_CONFIG"):
        return Path(env["DESKCAST_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deskcast" / "config.toml"


def load_file(path: Path, *, required: bool) -> dict[str, dict[str, Value]]:
    """Read and validate a config file; a missing default file is an empty config."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return validate(data, str(path))


def validate(data: Mapping[str, Any], origin: str) -> dict[str, dict[str, Value]]:
    out: dict[str, dict[str, Value]] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{origin}: unknown section [{section}]; known: {', '.join(SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table of settings")
        options = {o.name: o for o in SECTIONS[section]}
        for key, value in table.items():
            if key not in options:
                raise ConfigError(
                    f"{origin}: unknown setting {section}.{key}; [{section}] takes "
                    f"{', '.join(options)}"
                )
            out.setdefault(section, {})[key] = options[key].check(value, origin)
    return out


def add_arguments(parser: argparse.ArgumentParser, sections: Iterable[str],
                  skip: Iterable[str] = ()) -> None:
    """Add a flag for every option of ``sections``; defaults stay None so layers can merge."""
    skipped = set(skip)
    for section in sections:
        group = parser.add_argument_group(f"[{section}] settings")
        for opt in SECTIONS[section]:
            if opt.name in skipped:
                continue
            flags = [opt.flag] + ([opt.short] if opt.short else [])
            default = "" if opt.default is None else f" (default {opt.default})"
            text = (opt.help + default).replace("%", "%%")  # argparse formats help with %
            if opt.type is bool:
                group.add_argument(*flags, dest=opt.name, default=None,
                                   action=argparse.BooleanOptionalAction, help=text)
            else:
                group.add_argument(*flags, dest=opt.name, default=None, metavar=_metavar(opt),
                                   help=text, nargs="+" if opt.multiple else None)


def _metavar(opt: Option) -> str:
    if opt.metavar:
        return opt.metavar
    if opt.choices:
        return "{" + ",".join(opt.choices) + "}"
    return opt.name.rsplit("_", 1)[-1].upper() if opt.name.endswith("_ms") else opt.name.upper()


class Settings:
    """The merged settings of one command: ``settings.buffer_ms``, ``settings.source`` …"""

    def __init__(self, values: dict[str, Value], origins: dict[str, str]) -> None:
        self._values = values
        self.origins = origins
        """For each setting: 'default', the config file path, or 'command line'."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Value]:
        return dict(self._values)


def merge(sections: Iterable[str], file_values: Mapping[str, Mapping[str, Value]],
          cli: Mapping[str, Any], file_origin: str = "config file") -> Settings:
    """Defaults, then the config file, then the command line; then the rules between them
    (:mod:`~deskcast.config.rules`)."""
    values: dict[str, Value] = {}
    origins: dict[str, str] = {}
    for section in sections:
        from_file = file_values.get(section, {})
        for opt in SECTIONS[section]:
            if cli.get(opt.name) is not None:
                values[opt.name] = opt.check(cli[opt.name], "command line")
                origins[opt.name] = "command line"
            elif opt.name in from_file:
                values[opt.name] = from_file[opt.name]
                origins[opt.name] = file_origin
            else:
                values[opt.name] = opt.default
                origins[opt.name] = "default"
    for section in sections:
        preset = LOW_LATENCY.get(section, {})
        if preset and values.get("low_latency"):
            for name, value in preset.items():
                if origins.get(name) == "default":
                    values[name] = value
                    origins[name] = "--low-latency"
    check_rules(values)
    return Settings(values, origins)
