"""The ``deskcast`` argument parser: every command, option and help text."""

from __future__ import annotations

import argparse
from typing import Any

from deskcast import __version__, config

PROG = "deskcast"
DESCRIPTION = """Send this desktop's audio anywhere: the speakers, a file, another computer or a
browser. Sources and sinks are short URIs: pulse[:NAME], alsa:DEVICE, file:PATH, tone[:FREQ],
noise, sweep, silence, demo, desktop, - (stdin/stdout), null (sink)."""


def _common_options(for_subcommand: bool) -> argparse.ArgumentParser:
    """-v/--debug/--config, accepted before and after the command name.

    The subcommand copies default to SUPPRESS so they do not overwrite what was given before
    the command name.
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if for_subcommand else {}
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count",
                        **(unset or {"default": 0}),
                        help="say more (-vv: debug output and tracebacks)")
    common.add_argument("--debug", action="store_true", **unset,
                        help="debug output, and a traceback with every error")
    common.add_argument("--config", metavar="PATH", **unset,
                        help="settings file (default: $XDG_CONFIG_HOME/deskcast/config.toml)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(for_subcommand=True)
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     parents=[_common_options(for_subcommand=False)])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("devices", parents=[common], help="list sources and sinks",
                       description="List the sound server's and ALSA's sources and sinks, "
                       "marking the defaults and the hub.")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("play", parents=[common], help="play any source to any sink",
                       description="Play SOURCE to SINK in this process (like alsaloop), with a "
                       "level meter on a terminal. Ctrl-C or SIGTERM stops it cleanly: files "
                       "are always left complete and valid.")
    p.add_argument("source_uri", nargs="?", metavar="SOURCE",
                   help="where audio comes from (default: desktop)")
    p.add_argument("sink_uri", nargs="?", metavar="SINK",
                   help="where audio goes (default: pulse, the speakers)")
    p.add_argument("--quiet", "-q", action="store_true", help="no level meter")
    config.add_arguments(p, ["play", "run", "audio"])

    p = sub.add_parser("send", aliases=["tx"], parents=[common],
                       help="send audio to another computer (Opus over RTP)",
                       description="Capture SOURCE (the desktop by default), encode it as Opus "
                       "and send it as RTP over UDP to HOST[:PORT] (default port 1350, trx's). "
                       "With several hosts, the same stream (one encoder, one SSRC, one "
                       "timeline) goes to each of them.")
    p.add_argument("destination", metavar="HOST[:PORT]", nargs="+",
                   help="receiver's name or address (IPv4, IPv6, multicast); several at once")
    p.add_argument("--destinations-from-stdin", action="store_true",
                   help="while sending, read lines +HOST[:PORT] (send there too) and "
                   "-HOST[:PORT] (stop sending there) on standard input; the other "
                   "destinations' audio goes on untouched")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line")
    p.add_argument("--stats-json", metavar="FILE",
                   help="append a JSON line of statistics every second ('-' for stdout)")
    p.add_argument("--sdp", metavar="FILE",
                   help="write an SDP file describing the stream, for ffplay/ffmpeg/VLC/"
                   "GStreamer (e.g. `ffplay -protocol_whitelist file,udp,rtp FILE`); with "
                   "--key it is SRTP (a=crypto with the key, mode 0600; add srtp to ffmpeg's "
                   "-protocol_whitelist)")
    config.add_arguments(p, ["send", "run", "audio"])

    p = sub.add_parser("receive", aliases=["rx"], parents=[common],
                       help="receive audio from `deskcast send` or trx-tx and play it",
                       description="Listen for RTP/Opus on [ADDR][:PORT] (default: every "
                       "address, port 1350; a multicast ADDR is joined) and play it to SINK. "
                       "One sender is played at a time: the first one heard; another (a new "
                       "SSRC, e.g. a restarted sender) takes over only once the current one has "
                       "been silent for --takeover-ms. --allow drops datagrams from other "
                       "networks before reading them; with --key only packets authenticated "
                       "with that key count as heard, so nobody without it can take over.")
    p.add_argument("listen", nargs="?", default="", metavar="[ADDR][:PORT]",
                   help="where to listen (default :1350)")
    p.add_argument("--sdp", metavar="FILE",
                   help="take port (and multicast group) from this SDP file, e.g. one "
                   "written by `deskcast send --sdp` or `ffmpeg -sdp_file`")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line")
    p.add_argument("--stats-json", metavar="FILE",
                   help="append a JSON line of statistics every second ('-' for stdout)")
    config.add_arguments(p, ["receive", "run", "audio"])

    p = sub.add_parser("keygen", parents=[common], help="make an SRTP key file for --key",
                       description="Write a new random SRTP key (AES_CM_128_HMAC_SHA1_80) to "
                       "FILE with mode 0600, for `send --key FILE` and `receive --key FILE`; "
                       "copy it to the other end over a safe channel (scp). Prints the ffmpeg "
                       "options that use the same key.")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="where to write it (default: $XDG_CONFIG_HOME/deskcast/srtp.key)")
    p.add_argument("--force", action="store_true", help="replace an existing FILE")

    p = sub.add_parser("serve", parents=[common], help="stream to browsers and players (HTTP)",
                       description="Stream SOURCE over HTTP: a web page at /, MP3 at "
                       "/stream.mp3 (bit reservoir off: any frame is a join point, ICY titles "
                       "on request), Ogg/Opus at /stream.opus, status at /api/status, events "
                       "at /api/events, Prometheus metrics at /metrics, now playing set by "
                       "POST /api/metadata (bearer token) or a polled --tracker-url. One "
                       "encoder per format serves every listener of that format.")
    config.add_arguments(p, ["serve", "run", "audio"])

    p = sub.add_parser("meta", parents=[common], help="tell a running serve what is playing",
                       description="Set the title `deskcast serve` shows on its page, in "
                       "/api/status and as ICY title: POST /api/metadata with the server's "
                       "token (--token, the serve.token setting, or the token file serve "
                       "wrote in $XDG_STATE_HOME/deskcast/serve-token).")
    p.add_argument("text", metavar="TEXT", help='"Artist - Title" (or just a title; "" clears)')
    p.add_argument("--server", metavar="URL",
                   help="the serve to tell (default: http://127.0.0.1:PORT of serve.listen)")
    p.add_argument("--token", metavar="TOKEN", help="bearer token (default: see above)")

    p = sub.add_parser("hub", parents=[common], help="set up the desktop audio hub",
                       description="The hub is where all desktop audio is mixed so that "
                       "deskcast can capture it.")
    p.add_argument("action", choices=("setup", "status", "remove"),
                   help="setup: create the hub and send all audio into it; status: show it; "
                   "remove: undo setup")
    p.add_argument("--force", action="store_true",
                   help="alsa: write the configuration even if snd-aloop is not loaded")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    config.add_arguments(p, ["hub"])

    p = sub.add_parser("route", parents=[common], help="send the desktop's audio somewhere",
                       description="Send the desktop's audio to the speakers (local), other "
                       "computers running `deskcast receive` (HOST[:PORT], several at once; "
                       "trx:HOST for trx-rx), browsers (web) or nowhere (none). Without a "
                       "destination: where it goes now. Starts the daemon if it is not "
                       "running; the route is kept and restored when the daemon starts.")
    p.add_argument("targets", nargs="*", metavar="DEST",
                   help="local, web, none, HOST[:PORT] or trx:HOST[:PORT]")
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    p = sub.add_parser("daemon", parents=[common], help="run the route daemon (foreground)",
                       description="The per-user daemon behind `deskcast route`: owns the "
                       "hub and the running legs, listens on "
                       "$XDG_RUNTIME_DIR/deskcast/control.sock. `route` starts it on demand; "
                       "see contrib/systemd for a user unit.")
    config.add_arguments(p, ["route", "hub"])
    # `receive --announce`: added here so the receive parser itself stays as it is
    sub.choices["receive"].add_argument(
        "--announce", nargs="?", const="", default=None, metavar="NAME",
        help="announce this receiver via mDNS/zeroconf (_deskcast._udp) as NAME (default: "
        "the host name), so that `deskcast route NAME` finds it")
    return parser

