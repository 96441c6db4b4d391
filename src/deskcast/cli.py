"""The ``deskcast`` command line: a thin layer over the packages, testable as ``main(argv)``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from deskcast import __version__, config
from deskcast.errors import ConfigError, DeskcastError, EndpointError
from deskcast.media import AudioFormat, SampleFormat

if TYPE_CHECKING:
    from deskcast.transport.srtp import SrtpKey

logger = logging.getLogger("deskcast")

PROG = "deskcast"
DESCRIPTION = """Send this desktop's audio anywhere: the speakers, a file, another computer or a
browser. Sources and sinks are short URIs: pulse[:NAME], alsa:DEVICE, file:PATH, tone[:FREQ],
noise, sweep, silence, demo, desktop, - (stdin/stdout), null (sink)."""


class _OneLineFormatter(logging.Formatter):
    """``deskcast: error: …`` — one line per message; tracebacks only when asked for."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbosity: int, stream: TextIO | None = None) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger("deskcast")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiohttp logs every malformed request from the outside world with a traceback: that is
    # bad input to drop quietly, shown only with --debug.
    web = logging.getLogger("aiohttp")
    web.handlers[:] = [handler]
    web.setLevel(logging.DEBUG if verbosity >= 2 else logging.CRITICAL)
    web.propagate = False


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
                       "and send it as RTP over UDP to HOST[:PORT] (default port 1350, trx's).")
    p.add_argument("destination", metavar="HOST[:PORT]",
                   help="receiver's name or address (IPv4, IPv6, multicast)")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = 2 if args.debug else args.verbose
    setup_logging(verbosity)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except DeskcastError as err:
        if verbosity >= 2:
            logger.exception("%s", err)
        else:
            logger.error("%s", err)
        return err.exit_status
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def _settings(args: argparse.Namespace, sections: Sequence[str]) -> config.Settings:
    if args.config:
        path = Path(args.config).expanduser()
        values = config.load_file(path, required=True)
    else:
        path = config.default_config_path()
        values = config.load_file(path, required=False)
    return config.merge(sections, values, vars(args), file_origin=str(path))


def _audio_format(s: config.Settings) -> AudioFormat:
    return AudioFormat(s.rate, s.channels, SampleFormat.parse(s.sample_format))


# --- devices ---------------------------------------------------------------------------------

def cmd_devices(args: argparse.Namespace) -> int:
    from deskcast import soundserver
    from deskcast.alsa import device_names

    s = _settings(args, ["hub"])
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


# --- play ------------------------------------------------------------------------------------

def cmd_play(args: argparse.Namespace) -> int:
    from deskcast.capture import make_source
    from deskcast.capture.pulse import PulseSource
    from deskcast.playback import make_sink
    from deskcast.playback.pulse import PulseSink

    s = _settings(args, ["play", "run", "audio", "hub"])
    fmt = _audio_format(s)
    block_frames = fmt.frames_for_ms(s.block_ms)
    source_uri = args.source_uri or s.source
    sink_uri = args.sink_uri or s.sink
    source = make_source(source_uri, fmt, block_frames, hub_name=s.sink_name,
                         buffer_ms=s.buffer_ms)
    sink = make_sink(sink_uri, fmt, block_frames, hub_name=s.sink_name, buffer_ms=s.buffer_ms)
    show_meter = not args.quiet and sys.stderr.isatty()

    with source:
        if isinstance(source, PulseSource) and isinstance(sink, PulseSink):
            target = sink.resolve()
            if source.monitor_of == target:
                raise EndpointError(
                    f"{source.name} is the monitor of {target}: playing it to {target} would "
                    "feed it back into itself; run `deskcast hub setup` first or name another "
                    "sink (see `deskcast devices`)"
                )
        _run_pump(source, sink, s, fmt, show_meter)
    return 0


def _run_pump(source: Any, sink: Any, s: config.Settings, fmt: AudioFormat, show: bool, *,
              status: Callable[[Any], str] | None = None, stats_json: str | None = None) -> Any:
    """Pump an opened source into ``sink`` until done; meter or status line on a terminal."""
    from deskcast.meter import Meter
    from deskcast.pump import Pump, PumpStats

    if sink.clocked:
        source.pacer = None  # the device's clock paces the loop
    max_frames = None if s.duration is None else round(s.duration * fmt.rate)
    with sink:
        logger.info("playing %s -> %s (%s, %d-frame blocks)", source.name, sink.name, fmt,
                    source.block_frames)
        pump = Pump(source, sink, max_frames=max_frames, rtprio=s.rtprio)
        meter = Meter(sys.stderr) if show else None
        json_out = _open_stats(stats_json)
        last_json = [0.0]

        def tick(stats: PumpStats) -> None:
            # Levels and status are computed here, only when shown: per block they cost the
            # audio thread as much as decoding.
            if meter is not None and stats.last_block is not None:
                peak, rms = stats.levels()
                extra = status(stats) if status is not None else ""
                meter.update(fmt.seconds(stats.frames), peak, rms, extra=extra)
            if json_out is not None and time.monotonic() - last_json[0] >= 1.0:
                last_json[0] = time.monotonic()
                peak, rms = stats.levels()
                record = {"elapsed_s": round(fmt.seconds(stats.frames), 3),
                          "peak_db": [round(v, 1) for v in peak],
                          "rms_db": [round(v, 1) for v in rms]}
                if status is not None:
                    record.update(_status_fields(sink, source))
                json_out.write(json.dumps(record) + "\n")
                json_out.flush()

        try:
            with _stop_on_signals(pump.stop_event.set):
                try:
                    stats = pump.run(tick)
                finally:
                    if meter is not None:
                        meter.finish()
        finally:
            if json_out is not None and json_out is not sys.stdout:
                json_out.close()
    logger.info("finished after %.2f s of audio (%s)", fmt.seconds(stats.frames), stats.ended)
    return stats


def _open_stats(path: str | None) -> TextIO | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "a")
    except OSError as err:
        raise ConfigError(f"cannot write --stats-json {path}: {err.strerror}") from None


def _status_fields(sink: Any, source: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for end in (sink, source):
        fields = getattr(end, "status_fields", None)
        if fields is not None:
            out.update(fields())
    return out


def cmd_send(args: argparse.Namespace) -> int:
    from deskcast.capture import make_source
    from deskcast.encode.opus import OpusEncoder
    from deskcast.endpoints import Direction, Endpoint
    from deskcast.transport.fec import FecEncoder, parse_scheme
    from deskcast.transport.sender import RtpSender

    s = _settings(args, ["send", "run", "audio", "hub"])
    fmt = _audio_format(s)
    encoder = OpusEncoder(fmt, frame_ms=s.frame_ms, bitrate_kbps=s.bitrate,
                          complexity=s.complexity, application=s.application, cbr=s.cbr)
    frames = encoder.frame_frames
    if s.origins.get("block_ms") == "command line":
        logger.warning("send reads its source in whole Opus frames: --block-ms is ignored "
                       "(use --frame-ms, now %g ms)", s.frame_ms)
    fec = None
    if s.fec:
        if s.trx:
            raise ConfigError("--fec cannot be used with --trx: trx-rx would play the repair "
                              "packets as audio")
        fec = FecEncoder(*parse_scheme(s.fec))
    key = _load_key(s.key)
    sender = RtpSender(Endpoint("rtp", args.destination, {}, Direction.SINK), fmt, frames,
                       encoder=encoder, trx=s.trx, ttl=s.ttl, dscp=s.dscp, fec=fec, key=key)
    if args.sdp:
        _write_sdp(args.sdp, sender, s, key)
    source = make_source(s.source, fmt, frames, hub_name=s.sink_name, buffer_ms=s.buffer_ms)
    show = not args.quiet and sys.stderr.isatty()

    def status(_: Any) -> str:
        st = sender.stats
        secs = max(1e-3, time.monotonic() - st.started)
        text = f"{st.packets} pkts  {st.octets * 8 / secs / 1000:5.1f} kbit/s"
        if st.last_report is not None and time.monotonic() - st.last_report < 10:
            rtt = "" if st.rtt_ms is None else f"  rtt {st.rtt_ms:.1f} ms"
            text += f"  receiver: loss {st.receiver_loss_pct:.1f}%{rtt}"
        elif not s.trx and secs > 8:
            text += "  no reports from the receiver"
        return text

    with source:
        _run_pump(source, sender, s, fmt, show, status=status, stats_json=args.stats_json)
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from deskcast.endpoints import Direction, Endpoint
    from deskcast.playback import make_sink
    from deskcast.transport.jitter import JitterBuffer
    from deskcast.transport.receiver import RtpReceiver

    s = _settings(args, ["receive", "run", "audio", "hub"])
    fmt = _audio_format(s)
    if not s.jitter_min_ms <= s.jitter_ms <= s.jitter_max_ms:
        raise ConfigError("need --jitter-min-ms <= --jitter-ms <= --jitter-max-ms")
    jitter = JitterBuffer(fmt.rate, target_ms=s.jitter_ms, min_ms=s.jitter_min_ms,
                          max_ms=s.jitter_max_ms, adaptive=s.adaptive)
    block = fmt.frames_for_ms(s.block_ms)
    key = _load_key(s.key)
    listen = _listen_from_sdp(args.sdp, key) if args.sdp else args.listen
    receiver = RtpReceiver(Endpoint("rtp", listen, {}, Direction.SOURCE), fmt, block,
                           jitter=jitter, takeover_ms=s.takeover_ms, fec=s.inband_fec,
                           drift=s.drift, key=key, allow=[s.allow] if s.allow else [])
    receiver.rtprio = s.rtprio
    receiver.output_latency_ms = s.buffer_ms if s.sink.startswith(("pulse", "alsa")) else 0.0
    sink = make_sink(s.sink, fmt, block, hub_name=s.sink_name, buffer_ms=s.buffer_ms)
    show = not args.quiet and sys.stderr.isatty()

    def status(_: Any) -> str:
        f = receiver.status_fields()
        delay = f["latency_ms"] if f["delay_ms"] is None else f["delay_ms"]
        return (f"{f['packets']} pkts  loss {f['concealed_pct']:.1f}%  late {f['late']}  "
                f"ran dry {f['underruns']}x  sink stalled {f['device_stalls']}x  "
                f"jitter {f['jitter_ms']:.1f} ms  buffer {f['buffer_ms']:.0f} ms  "
                f"delay {delay:.0f} ms  drift {f['drift_ppm']:+.0f} ppm")

    with receiver:
        _run_pump(receiver, sink, s, fmt, show, status=status, stats_json=args.stats_json)
    return 0


def _write_sdp(path: str, sender: Any, s: config.Settings, key: SrtpKey | None = None
               ) -> None:
    from deskcast.transport.sdp import SessionDescription, write_sdp
    from deskcast.transport.sender import resolve

    if s.trx:
        raise ConfigError("--sdp cannot describe a --trx stream (its 8 kHz timestamps are not "
                          "standard Opus RTP): drop one of them")
    _, addr = resolve(sender.host, sender.port)
    desc = SessionDescription(address=str(addr[0]), port=sender.port,
                              payload_type=sender.payload_type, channels=s.channels,
                              ttl=s.ttl, ptime_ms=s.frame_ms,
                              maxaveragebitrate=int(s.bitrate * 1000),
                              crypto_key=None if key is None else key.inline)
    try:
        if key is None:
            Path(path).write_text(write_sdp(desc))
        else:
            # The SDP then carries the key (a=crypto ... inline:KEY): private, like the key file.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(write_sdp(desc))
    except OSError as err:
        raise ConfigError(f"cannot write --sdp {path}: {err.strerror}") from None
    logger.info("wrote %s%s", path, "" if key is None else " (mode 0600: it holds the key)")


def _listen_from_sdp(path: str, key: SrtpKey | None = None) -> str:
    import ipaddress

    from deskcast.transport.sdp import parse_sdp

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read --sdp {path}: {err.strerror}") from None
    desc = parse_sdp(text)
    if desc.crypto_key is not None and key is None:
        raise ConfigError(f"--sdp {path} describes an SRTP stream: give --key FILE with its "
                          "key (a file holding the a=crypto line's inline: text, mode 0600)")
    if key is not None and desc.crypto_key not in (None, key.inline):
        raise ConfigError(f"--sdp {path} carries another SRTP key than --key: use the same "
                          "key on both ends")
    if ipaddress.ip_address(desc.address).is_multicast:
        return f"[{desc.address}]:{desc.port}"
    return f":{desc.port}"


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import functools

    from deskcast.capture import make_source
    from deskcast.endpoints import parse_hostport
    from deskcast.http import token as token_file
    from deskcast.http.app import serve
    from deskcast.http.nowplaying.mpris import poll_mpris
    from deskcast.http.nowplaying.tracker import parse_field_map, poll_tracker
    from deskcast.http.relay import Relay
    from deskcast.http.server import SERVE_BLOCK_MS, Server

    s = _settings(args, ["serve", "run", "audio", "hub"])
    fmt = _audio_format(s)
    host, port = parse_hostport(s.listen, 8000)
    try:
        field_map = parse_field_map(s.tracker_title_field)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if s.tracker_url and not s.tracker_url.startswith(("http://", "https://")):
        raise ConfigError(f"--tracker-url {s.tracker_url!r} must start with http:// or https://")
    if s.token:
        token = token_file.check(s.token)
    else:
        token, path = token_file.load_or_create()
        logger.info("metadata token (for POST /api/metadata and `deskcast meta`) is in %s",
                    path)
    ssl_context = None
    if s.tls_cert or s.tls_key:
        from deskcast.http.tls import server_context

        if not (s.tls_cert and s.tls_key):
            given, missing = ("--tls-cert", "--tls-key") if s.tls_cert else \
                ("--tls-key", "--tls-cert")
            raise ConfigError(f"{given} needs {missing} too (HTTPS takes a certificate and "
                              "its key)")
        ssl_context = server_context(s.tls_cert, s.tls_key)
    listen_token = s.listen_token or ""
    if s.listen_token is not None and (not listen_token.strip() or len(listen_token) > 256 or
                                       any(c.isspace() or not c.isprintable()
                                           for c in listen_token)):
        raise ConfigError("--listen-token must be 1 to 256 printable characters without "
                          "spaces")
    relays: list[Relay] = []
    if s.icecast:
        from deskcast.http.relay.icecast import (
            IcecastPush,
            IcecastRelay,
            IcecastTarget,
            format_for_mount,
        )

        icecast_fmt, ctype = format_for_mount(IcecastTarget.parse(s.icecast).mount)
        bitrate = s.mp3_bitrate if icecast_fmt == "mp3" else s.opus_bitrate
        relays.append(IcecastRelay(
            IcecastPush(s.icecast, content_type=ctype, name=s.stream_name,
                        bitrate_kbps=bitrate, sample_rate=fmt.rate, channels=fmt.channels),
            icecast_fmt))
    if s.hls:
        from deskcast.http.relay.hls import HlsWriter

        hls = HlsWriter(Path(s.hls), fmt.rate, s.hls_segment_s)
        hls.prepare()  # a folder we cannot write to is an error now, not in the log later
        relays.append(hls)
    block_ms = s.block_ms if s.origins.get("block_ms") != "default" else SERVE_BLOCK_MS
    source = make_source(s.source, fmt, fmt.frames_for_ms(block_ms), hub_name=s.sink_name,
                         buffer_ms=s.buffer_ms)
    with source:
        server = Server(source, bitrate_kbps=s.mp3_bitrate, opus_bitrate_kbps=s.opus_bitrate,
                        aac_bitrate_kbps=s.aac_bitrate,
                        rtprio=s.rtprio, burst_s=s.burst_s, opus_burst_s=s.opus_burst_s,
                        max_lag_s=s.max_lag_s,
                        max_listeners=s.max_listeners, max_per_address=s.max_per_address,
                        always_on=s.always_on, idle_stop_s=s.idle_stop_s, token=token,
                        icy_metaint=s.icy_metaint, name=s.stream_name,
                        listen_token=listen_token)
        if s.hls and "aac" not in server.streams:
            raise ConfigError(f"--hls needs AAC, which cannot carry {fmt}: use --rate 48000")

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            if s.duration is not None:
                loop.call_later(s.duration, stop.set)
            tasks: list[Callable[[asyncio.Event], Awaitable[None]]] = []
            if s.tracker_url:
                tasks.append(functools.partial(poll_tracker, server.nowplaying, s.tracker_url,
                                               field_map, s.tracker_interval_s))
            if s.mpris:
                tasks.append(functools.partial(poll_mpris, server.nowplaying))
            await serve(server, host, port, stop, tasks, relays=relays,
                        ssl_context=ssl_context, header_timeout_s=s.header_timeout_s)

        asyncio.run(main())
    if server.error is not None and isinstance(server.error, DeskcastError):
        raise server.error
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    import ssl
    import urllib.error
    import urllib.request

    from deskcast.http import token as token_file
    from deskcast.http.client import local_serve
    from deskcast.http.nowplaying import split_artist_title

    s = _settings(args, ["serve"])
    url = args.server
    context = None
    if not url:
        # Our own serve: its port, and HTTPS trusting exactly its certificate when it has one.
        local = local_serve(s.listen, s.tls_cert, s.listen_token)
        url, context = local.base_url, local.ssl_context
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--server {url!r} must be a URL like http://HOST:8000")
    token = args.token or s.token or token_file.read_token()
    if not token:
        raise ConfigError(f"no token: start `deskcast serve` once (it writes "
                          f"{token_file.token_path()}) or pass --token")
    artist, title = split_artist_title(args.text)
    body = json.dumps({"artist": artist, "title": title}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/api/metadata", data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        reason = err.read(300).decode("utf-8", "replace").strip() or err.reason
        raise DeskcastError(f"{url} refused the title (HTTP {err.code}): {reason}") from None
    except (urllib.error.URLError, OSError) as err:
        why = getattr(err, "reason", err)
        if isinstance(why, ssl.SSLError):
            trusted = (f"the certificate in serve.tls_cert ({s.tls_cert})" if context
                       else "a certificate this system trusts")
            raise DeskcastError(f"{url} answers with HTTPS, but not the certificate expected: "
                                f"{why} — meta trusts {trusted}") from None
        raise DeskcastError(f"cannot reach {url}: {why} — is `deskcast serve` running? "
                            "(--server URL)") from None
    print(f"now playing: {answer['now_playing']['text'] or '(nothing)'}")
    return 0


class _stop_on_signals:  # noqa: N801 - used like a function
    """SIGINT/SIGTERM call ``stop`` (a clean finish); a second SIGINT interrupts for real."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.hits = 0
        self.saved: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hits += 1
        if self.hits > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop()

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


# --- hub -------------------------------------------------------------------------------------

def cmd_hub(args: argparse.Namespace) -> int:
    from deskcast.hub import pick_backend

    s = _settings(args, ["hub"])
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


# --- route / daemon --------------------------------------------------------------------------

def cmd_route(args: argparse.Namespace) -> int:
    from deskcast.route import client, protocol

    s = _settings(args, ["route"])
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


def _announced(receive: Callable[[argparse.Namespace], int]
               ) -> Callable[[argparse.Namespace], int]:
    """``receive`` with ``--announce``: the receiver is announced via mDNS while it runs."""

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "announce", None) is None:
            return receive(args)
        from deskcast.endpoints import parse_hostport
        from deskcast.route.discovery import Announcer

        s = _settings(args, ["route"])
        port = s.port if getattr(args, "sdp", None) else parse_hostport(args.listen, s.port)[1]
        with Announcer(port, args.announce):
            return receive(args)

    return run


def cmd_daemon(args: argparse.Namespace) -> int:
    from deskcast.route import daemon

    s = _settings(args, ["route", "hub", "serve"])
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


# --- keygen / SRTP keys ---------------------------------------------------------------------

def _load_key(path: str | None) -> SrtpKey | None:
    """The SRTP key of --key FILE, or None for plain RTP."""
    if not path:
        return None
    from deskcast.transport.srtp import load_key

    return load_key(path)


def cmd_keygen(args: argparse.Namespace) -> int:
    from deskcast.transport.srtp import SUITE, SrtpKey, write_key_file

    if args.file:
        path = Path(args.file).expanduser()
    else:
        path = config.default_config_path().parent / "srtp.key"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create {path.parent}: {err.strerror}") from None
    key = SrtpKey.generate()
    path = write_key_file(path, key, force=args.force)
    print(f"wrote {path} (mode 0600); copy it to the other end over a safe channel (scp)\n"
          f"  deskcast send --key {path} HOST[:PORT]\n"
          f"  deskcast receive --key {path}\n"
          f"ffmpeg with the same key:\n"
          f"  send:    ffmpeg ... -c:a libopus -f rtp -srtp_out_suite {SUITE} "
          f"-srtp_out_params {key.inline} srtp://HOST:1350\n"
          f"  receive: deskcast send --key {path} --sdp stream.sdp HOST; then\n"
          f"           ffmpeg -protocol_whitelist file,udp,rtp,srtp -i stream.sdp ...")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "devices": cmd_devices,
    "play": cmd_play,
    "send": cmd_send,
    "tx": cmd_send,
    "receive": cmd_receive,
    "serve": cmd_serve,
    "meta": cmd_meta,
    "rx": cmd_receive,
    "hub": cmd_hub,
    "keygen": cmd_keygen,
    "route": cmd_route,
    "daemon": cmd_daemon,
}
COMMANDS["receive"] = COMMANDS["rx"] = _announced(COMMANDS["receive"])  # route: --announce
