"""``route`` (the client and its report), ``daemon`` (the route daemon in the foreground) and
``receive --announce``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from deskcast.cli.common import load_settings

logger = logging.getLogger(__name__)


def cmd_route(args: argparse.Namespace) -> int:
    from deskcast.route import client, protocol

    s = load_settings(args, ["route"])
    if args.targets:
        protocol.parse_targets(args.targets, s.port)  # bad words fail here, daemon or not
        message: dict[str, Any] = {"cmd": "route", "targets": args.targets}
    else:
        message = {"cmd": "status"}
    answer = client.call(message, config_path=args.config)
    status = answer["status"]
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(_describe_route(status))
    return 0


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _describe_route(st: dict[str, Any]) -> str:
    now = time.time()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["since"]))
    lines = [f"route: {' '.join(st['route'])}  since {since} ({_ago(now - st['since'])})"
             f"  [{st['backend']} hub {st['hub']}, daemon pid {st['pid']}]"]
    for leg in st["legs"]:
        text = f"  {leg['target']:<22} {leg['state']}"
        if leg["state"] == "running":
            if leg["kind"] == "local":
                text += (f"  {leg.get('via', '')} {leg.get('from', '')} -> {leg.get('to', '')}"
                         if leg.get("via") else "")
            elif leg["kind"] == "web":
                listeners = leg.get("listeners")
                text += f"  {leg.get('url', '')}  listeners: " + (
                    "?" if listeners is None else str(listeners))
            elif leg["kind"] == "host":
                text += f"  {leg.get('packets', 0)} pkts  {leg.get('kbit_s', 0.0):.1f} kbit/s"
                answer = leg.get("answer", "")
                if answer == "answering":
                    rtt = leg.get("rtt_ms")
                    text += (f"  answering: loss {leg.get('receiver_loss_pct', 0.0):.1f}%  "
                             f"jitter {leg.get('receiver_jitter_ms', 0.0):.1f} ms"
                             + ("" if rtt is None else f"  rtt {rtt:.1f} ms"))
                elif answer == "not answering":
                    text += "  " + leg.get("answer_text", "not answering")
                elif answer == "unconfirmed":
                    text += "  unconfirmed (trx-rx never reports back)"
                else:
                    text += "  waiting for the receiver to report"
        if leg.get("address") and leg["address"] != leg["target"].removeprefix("trx:"):
            text += f"  (at {leg['address']})"
        if leg.get("restarts"):
            text += f"  (restarted {leg['restarts']}x"
            text += f"; last: {leg['last_error']})" if leg.get("last_error") else ")"
        lines.append(text)
    receivers = st.get("receivers") or []
    lines.append("receivers on the network: " + (", ".join(
        f"{r['name']} ({(r['addresses'] or ['?'])[0]}:{r['port']})" for r in receivers)
        or "none announced (`deskcast receive --announce` on the other computer)"))
    return "\n".join(lines)


def announced(receive: Callable[[argparse.Namespace], int]
               ) -> Callable[[argparse.Namespace], int]:
    """``receive`` with ``--announce``: the receiver is announced via mDNS while it runs."""

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "announce", None) is None:
            return receive(args)
        from deskcast.endpoints import parse_hostport
        from deskcast.route.discovery import Announcer

        s = load_settings(args, ["route"])
        port = s.port if getattr(args, "sdp", None) else parse_hostport(args.listen, s.port)[1]
        with Announcer(port, args.announce):
            return receive(args)

    return run


def cmd_daemon(args: argparse.Namespace) -> int:
    from deskcast.route import daemon

    s = load_settings(args, ["route", "hub", "serve"])
    for handler in logging.getLogger("deskcast").handlers:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s deskcast[%(process)d]: %(levelname)s: %(message)s"))
    cfg = daemon.RouteConfig(
        sink_name=s.sink_name, backend=s.backend, default_port=s.port, speakers=s.speakers,
        alsa_speakers=s.alsa_speakers, local_latency_ms=s.local_latency_ms,
        web_listen=s.web_listen, answer_timeout_s=s.answer_timeout_s,
        restart_max_s=s.restart_max_s, config_path=args.config,
        serve_tls_cert=s.tls_cert, serve_listen_token=s.listen_token)
    daemon.run(cfg)
    return 0
