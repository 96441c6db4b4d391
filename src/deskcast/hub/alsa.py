"""The plain-ALSA hub: the snd-aloop loopback card, set up in ``~/.asoundrc``.

Everything that plays to ALSA's ``default`` goes through a ``dmix`` on ``hw:Loopback,0,0``; the
same audio comes out of ``hw:Loopback,1,0``, read through a ``dsnoop`` (several programs can
capture at once: the route's legs, a recorder, trx-tx) behind the ``hubcap`` plug, at a fixed
format (the loopback takes its format from whoever opens it first, so both sides pin it).

The fragment sits between two marker lines, so ``setup`` can be run again and ``remove`` takes
exactly it out again. The user's file is backed up once before it is first changed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from deskcast.errors import DeviceError

logger = logging.getLogger(__name__)

BEGIN = "# >>> deskcast hub >>> (written by `deskcast hub setup`; `deskcast hub remove` undoes it)"
END = "# <<< deskcast hub <<<"
BACKUP_SUFFIX = ".deskcast-backup"
CAPTURE_PCM = "hubcap"
PLAYBACK_PCM = "deskcast_hub"
SNOOP_PCM = "deskcast_hubsnoop"
IPC_KEY = 4096735
"""dmix's shared-memory key: any constant not used by another dmix on the machine."""
SNOOP_IPC_KEY = IPC_KEY + 1
SNOOP_PERIOD_FRAMES = 240
"""dsnoop wakes its readers once per period of the card: 5 ms, so a reader's block is handed
over within 5 ms of being complete (the card side of dmix keeps the guide's 1024)."""
SNOOP_BUFFER_FRAMES = 16384
"""Larger than any reader's own buffer (deskcast's capture keeps 200 ms, 9600 frames): a reader
asking for more than the dsnoop holds was handed silence in the test VM."""

FRAGMENT = f"""{BEGIN}
# All desktop audio goes to the loopback card through dmix (several programs can play at once)...
pcm.!default {{
    type plug
    slave.pcm "{PLAYBACK_PCM}"
    hint {{ show on description "deskcast hub: the desktop mix" }}
}}
pcm.{PLAYBACK_PCM} {{
    type dmix
    ipc_key {IPC_KEY}
    ipc_perm 0600
    slave {{
        pcm "hw:Loopback,0,0"
        rate 48000
        format S16_LE
        channels 2
        period_size 1024
        buffer_size 8192
    }}
}}
# ...and comes out here, at the same fixed format, for deskcast (alsa:{CAPTURE_PCM}); dsnoop lets
# several programs capture it at once (e.g. the route's local and network legs).
pcm.{CAPTURE_PCM} {{
    type plug
    slave {{
        pcm "{SNOOP_PCM}"
        rate 48000
        format S16_LE
        channels 2
    }}
    hint {{ show on description "deskcast hub capture: everything the desktop plays" }}
}}
pcm.{SNOOP_PCM} {{
    type dsnoop
    ipc_key {SNOOP_IPC_KEY}
    ipc_perm 0600
    slave {{
        pcm "hw:Loopback,1,0"
        rate 48000
        format S16_LE
        channels 2
        period_size {SNOOP_PERIOD_FRAMES}
        buffer_size {SNOOP_BUFFER_FRAMES}
    }}
}}
{END}
"""


@dataclass
class AlsaHubStatus:
    backend: str
    exists: bool
    name: str
    config: str
    module_loaded: bool
    backup: str | None = None
    notes: list[str] = field(default_factory=list)


def loopback_loaded(proc_asound: Path = Path("/proc/asound")) -> bool:
    """Is the snd-aloop card present?"""
    try:
        return "Loopback" in (proc_asound / "cards").read_text()
    except OSError:
        return False


LOAD_HINT = (
    "the snd-aloop kernel module is not loaded: run `sudo modprobe snd-aloop` (and add "
    "snd-aloop to /etc/modules-load.d/deskcast.conf to keep it), then run this again; "
    "--force writes the ALSA configuration anyway"
)


def _split(text: str) -> tuple[str, bool]:
    """The file without our fragment, and whether the fragment was there."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    inside = found = False
    for line in lines:
        if line.startswith(BEGIN[:22]):
            inside = found = True
            continue
        if inside:
            if line.startswith(END):
                inside = False
            continue
        out.append(line)
    if inside:
        raise DeviceError("the deskcast block in the ALSA config has no end marker: fix it by hand")
    return "".join(out), found


def setup(config: Path, *, force: bool = False,
          proc_asound: Path = Path("/proc/asound")) -> AlsaHubStatus:
    loaded = loopback_loaded(proc_asound)
    if not loaded and not force:
        raise DeviceError(LOAD_HINT)
    config = config.expanduser()
    try:
        existing = config.read_text()
        existed = True
    except FileNotFoundError:
        existing, existed = "", False
    except OSError as err:
        raise DeviceError(f"cannot read {config}: {err.strerror}") from None
    rest, found = _split(existing)
    backup = config.with_name(config.name + BACKUP_SUFFIX)
    if existed and not found and not backup.exists():
        backup.write_text(existing)
        logger.info("backed up %s to %s", config, backup)
    sep = "" if not rest or rest.endswith("\n\n") else ("\n" if rest.endswith("\n") else "\n\n")
    new = rest + sep + FRAGMENT
    if new != existing:
        tmp = config.with_name(config.name + ".deskcast-tmp")
        tmp.write_text(new)
        os.replace(tmp, config)
    return status(config, proc_asound=proc_asound)


def status(config: Path, *, proc_asound: Path = Path("/proc/asound")) -> AlsaHubStatus:
    config = config.expanduser()
    try:
        _, found = _split(config.read_text())
    except FileNotFoundError:
        found = False
    backup = config.with_name(config.name + BACKUP_SUFFIX)
    st = AlsaHubStatus("alsa", found, CAPTURE_PCM, str(config), loopback_loaded(proc_asound),
                       str(backup) if backup.exists() else None)
    if found and not st.module_loaded:
        st.notes.append(LOAD_HINT.split(":", maxsplit=1)[0] + ": the hub will not work until it is")
    return st


def remove(config: Path, *, proc_asound: Path = Path("/proc/asound")) -> AlsaHubStatus:
    config = config.expanduser()
    try:
        text = config.read_text()
    except FileNotFoundError:
        return status(config, proc_asound=proc_asound)
    rest, found = _split(text)
    if found:
        backup = config.with_name(config.name + BACKUP_SUFFIX)
        original = backup.read_text() if backup.exists() else None
        if original is not None and original.rstrip() == rest.rstrip():
            rest = original  # byte for byte what the user had
        if rest.strip():
            config.write_text(rest)
        else:
            config.unlink()
    return status(config, proc_asound=proc_asound)
