"""``devices`` and ``hub``: what the sound system offers, and the hub set up, shown or removed."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deskcast.cli.common import load_settings
from deskcast.errors import DeskcastError

logger = logging.getLogger(__name__)


def cmd_devices(args: argparse.Namespace) -> int:
    from deskcast import soundserver
    from deskcast.alsa import device_names

    s = load_settings(args, ["hub"])
    report: dict[str, Any] = {"pulse": None, "alsa": {}}
    try:
        with soundserver.connect() as pulse:
            report["pulse"] = {
                "server": soundserver.describe(pulse),
                "sources": [asdict(d) for d in soundserver.sources(pulse, s.sink_name)],
                "sinks": [asdict(d) for d in soundserver.sinks(pulse, s.sink_name)],
            }
    except DeskcastError as err:
        report["pulse_error"] = str(err)
    report["alsa"] = {"capture": device_names(capture=True),
                      "playback": device_names(capture=False)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    out = []
    if report["pulse"]:
        pa = report["pulse"]
        out.append(f"{pa['server']}  (* default, [hub] the deskcast hub)")
        for kind in ("sources", "sinks"):
            out.append(f"  {kind}:")
            for d in pa[kind]:
                mark = "*" if d["is_default"] else " "
                hub = " [hub]" if d["is_hub"] else ""
                out.append(f"  {mark} {'pulse:' + d['name']:<44} {d['description']}{hub}")
    else:
        out.append(f"PulseAudio/PipeWire: {report['pulse_error']}")
    out.append("ALSA:")
    for kind in ("capture", "playback"):
        names = report["alsa"][kind]
        out.append(f"  {kind}: " + (", ".join(f"alsa:{n}" for n in names) or "none"))
    out.append("Also: file:PATH, tone[:FREQ], noise[:SEED], sweep[:F1-F2], silence, demo, "
               "desktop, - (stdin/stdout), null")
    print("\n".join(out))
    return 0


def cmd_hub(args: argparse.Namespace) -> int:
    from deskcast.hub import pick_backend

    s = load_settings(args, ["hub"])
    backend = pick_backend(s.backend)
    result: Any
    if backend == "pulse":
        from deskcast.hub import pulse as pulse_hub

        action = {"setup": pulse_hub.setup, "status": pulse_hub.status,
                  "remove": pulse_hub.remove}[args.action]
        result = action(s.sink_name)
    else:
        from deskcast.hub import alsa as alsa_hub

        path = Path(s.asoundrc).expanduser()
        if args.action == "setup":
            result = alsa_hub.setup(path, force=args.force)
        elif args.action == "status":
            result = alsa_hub.status(path)
        else:
            result = alsa_hub.remove(path)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    print(_describe_hub(result, args.action))
    return 0


def _describe_hub(st: Any, action: str) -> str:
    lines: list[str] = []
    if st.backend == "pulse":
        if st.exists:
            state = "the default sink" if st.is_default else "NOT the default sink"
            lines.append(f"hub: pulse:{st.name} on {st.server}, {state}")
            lines.append(f"  capture it with: deskcast play pulse:{st.monitor} SINK")
            lines.append("  playing into it: " + (", ".join(st.streams) or "nothing right now"))
            if st.previous_default:
                lines.append(f"  speakers (previous default): pulse:{st.previous_default}")
        else:
            lines.append(f"hub: none on {st.server}" + (" (removed)" if action == "remove" else
                                                         " — create it with `deskcast hub setup`"))
    elif st.exists:
        lines.append(f"hub: ALSA loopback, configured in {st.config}")
        lines.append(f"  capture it with: deskcast play alsa:{st.name} SINK")
        lines.append("  snd-aloop: " + ("loaded" if st.module_loaded else "NOT loaded"))
        if st.backup:
            lines.append(f"  your original file is saved as {st.backup}")
    else:
        lines.append(f"hub: not configured in {st.config}" + (" (removed)" if action ==
                     "remove" else " — create it with `deskcast hub setup --backend alsa`"))
    lines.extend(f"  note: {n}" for n in st.notes)
    return "\n".join(lines)
