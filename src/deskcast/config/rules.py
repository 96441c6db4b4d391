"""Rules between settings, checked with the settings themselves: whatever sets them (command
line, config file, ``--low-latency``), a combination that cannot work is one line before any
command starts, in the words of the command line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from deskcast.config.options import Value
from deskcast.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    """The settings it reads; it applies to a command that has them all."""
    broken: Callable[[Mapping[str, Value]], str | None]
    """What is wrong with these values, or None."""


def _fec_and_trx(v: Mapping[str, Value]) -> str | None:
    if v["fec"] and v["trx"]:
        return "--fec cannot be used with --trx: trx-rx would play the repair packets as audio"
    return None


def _jitter_order(v: Mapping[str, Value]) -> str | None:
    low, target, high = (float(v[n] or 0) for n in ("jitter_min_ms", "jitter_ms",
                                                     "jitter_max_ms"))
    return None if low <= target <= high else \
        "need --jitter-min-ms <= --jitter-ms <= --jitter-max-ms"


def _tracker_url(v: Mapping[str, Value]) -> str | None:
    url = v["tracker_url"]
    if url and not str(url).startswith(("http://", "https://")):
        return f"--tracker-url {url!r} must start with http:// or https://"
    return None


def _tls_pair(v: Mapping[str, Value]) -> str | None:
    cert, key = v["tls_cert"], v["tls_key"]
    if bool(cert) == bool(key):
        return None
    given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
    return f"{given} needs {missing} too (HTTPS takes a certificate and its key)"


def _listen_token(v: Mapping[str, Value]) -> str | None:
    token = v["listen_token"]
    if token is None:
        return None
    text = str(token)
    if text.strip() and len(text) <= 256 and not any(c.isspace() or not c.isprintable()
                                                      for c in text):
        return None
    return "--listen-token must be 1 to 256 printable characters without spaces"


RULES = (
    Rule(("fec", "trx"), _fec_and_trx),
    Rule(("jitter_min_ms", "jitter_ms", "jitter_max_ms"), _jitter_order),
    Rule(("tracker_url",), _tracker_url),
    Rule(("tls_cert", "tls_key"), _tls_pair),
    Rule(("listen_token",), _listen_token),
)


def check_rules(values: Mapping[str, Value]) -> None:
    """Raise ConfigError for the first rule these settings break."""
    for rule in RULES:
        if all(name in values for name in rule.names):
            problem = rule.broken(values)
            if problem:
                raise ConfigError(problem)
