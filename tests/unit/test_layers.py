"""No import runs up the layers (issue 17): read from the source with ``ast``, every import in
``src/deskcast``, the ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "deskcast"

GROUND = {"errors", "media", "endpoints", "config", "backoff", "pacing", "reconnect",
          "realtime", "meter", "state", "soundserver", "alsa", "opus_packet", "pulse"}
"""Modules everything may use; they use only each other."""


def imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every ``deskcast`` import in the package."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found += [(module, n) for n in names if n.split(".")[0] == "deskcast"]
    return found


def floor(module: str) -> str:
    """``deskcast.capture.pulse`` -> ``capture``; ``deskcast`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_import_walk_sees_the_imports() -> None:
    seen = imports()
    assert ("deskcast.reconnect", "deskcast.backoff") in seen
    assert ("deskcast.cli.play", "deskcast.capture") in seen  # inside a function


@pytest.mark.parametrize("a, b", [("capture", "playback"), ("playback", "capture"),
                                  ("http", "transport")])
def test_no_imports_across(a: str, b: str) -> None:
    assert [(m, n) for m, n in imports() if floor(m) == a and floor(n) == b] == []


def test_nothing_below_cli_imports_cli() -> None:
    assert [(m, n) for m, n in imports() if floor(n) == "cli"
            and floor(m) not in ("cli", "__main__", "spare")] == []


def test_the_ground_floor_imports_only_the_ground_floor() -> None:
    assert [(m, n) for m, n in imports() if floor(m) in GROUND
            and floor(n) not in GROUND | {"", floor(m)}] == []
