"""Small JSON state files under ``$XDG_STATE_HOME/deskcast`` (what the hub changed, so that
``hub remove`` can put it back; later: the current route)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "deskcast"


def path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def load(name: str) -> dict[str, Any]:
    """The saved state, or {} if there is none or it is unreadable (logged)."""
    p = path(name)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable state file %s (%s)", p, err)
        return {}
    return data if isinstance(data, dict) else {}


def save(name: str, data: dict[str, Any]) -> None:
    """Write atomically (a crash never leaves half a file)."""
    p = path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)


def clear(name: str) -> None:
    path(name).unlink(missing_ok=True)
