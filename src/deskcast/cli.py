"""The ``deskcast`` command line: a thin layer over the packages, testable as ``main(argv)``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from deskcast import __version__, config
from deskcast.errors import ConfigError, DeskcastError, EndpointError
from deskcast.media import AudioFormat, SampleFormat

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
                   "GStreamer (e.g. `ffplay -protocol_whitelist file,udp,rtp FILE`)")
    config.add_arguments(p, ["send", "run", "audio"])

    p = sub.add_parser("receive", aliases=["rx"], parents=[common],
                       help="receive audio from `deskcast send` or trx-tx and play it",
                       description="Listen for RTP/Opus on [ADDR][:PORT] (default: every "
                       "address, port 1350; a multicast ADDR is joined) and play it to SINK.")
    p.add_argument("listen", nargs="?", default="", metavar="[ADDR][:PORT]",
                   help="where to listen (default :1350)")
    p.add_argument("--sdp", metavar="FILE",
                   help="take port (and multicast group) from this SDP file, e.g. one "
                   "written by `deskcast send --sdp` or `ffmpeg -sdp_file`")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line")
    p.add_argument("--stats-json", metavar="FILE",
                   help="append a JSON line of statistics every second ('-' for stdout)")
    config.add_arguments(p, ["receive", "run", "audio"])

    p = sub.add_parser("serve", parents=[common], help="stream to browsers and players (HTTP)",
                       description="Stream SOURCE over HTTP: a web page at /, MP3 at "
                       "/stream.mp3 (bit reservoir off: any frame is a join point), status at "
                       "/api/status. One encoder serves every listener.")
    config.add_arguments(p, ["serve", "run", "audio"])

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
        pump = Pump(source, sink, max_frames=max_frames, rtprio=s.rtprio, meter=True)
        meter = Meter(sys.stderr) if show else None
        json_out = _open_stats(stats_json)
        last_json = [0.0]

        def tick(stats: PumpStats) -> None:
            extra = status(stats) if status is not None else ""
            if meter is not None and stats.peak_db:
                meter.update(fmt.seconds(stats.frames), stats.peak_db, stats.rms_db,
                             extra=extra)
            if json_out is not None and time.monotonic() - last_json[0] >= 1.0:
                last_json[0] = time.monotonic()
                record = {"elapsed_s": round(fmt.seconds(stats.frames), 3),
                          "peak_db": [round(v, 1) for v in stats.peak_db],
                          "rms_db": [round(v, 1) for v in stats.rms_db]}
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
    fec = None
    if s.fec:
        if s.trx:
            raise ConfigError("--fec cannot be used with --trx: trx-rx would play the repair "
                              "packets as audio")
        fec = FecEncoder(*parse_scheme(s.fec))
    sender = RtpSender(Endpoint("rtp", args.destination, {}, Direction.SINK), fmt, frames,
                       encoder=encoder, trx=s.trx, ttl=s.ttl, dscp=s.dscp, fec=fec)
    if args.sdp:
        _write_sdp(args.sdp, sender, s)
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
    listen = _listen_from_sdp(args.sdp) if args.sdp else args.listen
    receiver = RtpReceiver(Endpoint("rtp", listen, {}, Direction.SOURCE), fmt, block,
                           jitter=jitter, takeover_ms=s.takeover_ms, fec=s.inband_fec,
                           drift=s.drift)
    receiver.output_latency_ms = s.buffer_ms if s.sink.startswith(("pulse", "alsa")) else 0.0
    sink = make_sink(s.sink, fmt, block, hub_name=s.sink_name, buffer_ms=s.buffer_ms)
    show = not args.quiet and sys.stderr.isatty()

    def status(_: Any) -> str:
        f = receiver.status_fields()
        return (f"{f['packets']} pkts  loss {f['concealed_pct']:.1f}%  late {f['late']}  "
                f"jitter {f['jitter_ms']:.1f} ms  buffer {f['buffer_ms']:.0f} ms  "
                f"delay ~{f['latency_ms']:.0f} ms  drift {f['drift_ppm']:+.0f} ppm")

    with receiver:
        _run_pump(receiver, sink, s, fmt, show, status=status, stats_json=args.stats_json)
    return 0


def _write_sdp(path: str, sender: Any, s: config.Settings) -> None:
    from deskcast.transport.sdp import SessionDescription, write_sdp
    from deskcast.transport.sender import resolve

    if s.trx:
        raise ConfigError("--sdp cannot describe a --trx stream (its 8 kHz timestamps are not "
                          "standard Opus RTP): drop one of them")
    _, addr = resolve(sender.host, sender.port)
    desc = SessionDescription(address=str(addr[0]), port=sender.port,
                              payload_type=sender.payload_type, channels=s.channels,
                              ttl=s.ttl, ptime_ms=s.frame_ms,
                              maxaveragebitrate=int(s.bitrate * 1000))
    try:
        Path(path).write_text(write_sdp(desc))
    except OSError as err:
        raise ConfigError(f"cannot write --sdp {path}: {err.strerror}") from None
    logger.info("wrote %s", path)


def _listen_from_sdp(path: str) -> str:
    import ipaddress

    from deskcast.transport.sdp import parse_sdp

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read --sdp {path}: {err.strerror}") from None
    desc = parse_sdp(text)
    if ipaddress.ip_address(desc.address).is_multicast:
        return f"[{desc.address}]:{desc.port}"
    return f":{desc.port}"


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from deskcast.capture import make_source
    from deskcast.http.server import Server, serve
    from deskcast.transport.sender import parse_hostport

    s = _settings(args, ["serve", "run", "audio", "hub"])
    fmt = _audio_format(s)
    host, port = parse_hostport(s.listen, 8000)
    source = make_source(s.source, fmt, fmt.frames_for_ms(s.block_ms), hub_name=s.sink_name,
                         buffer_ms=s.buffer_ms)
    with source:
        server = Server(source, bitrate_kbps=s.mp3_bitrate, rtprio=s.rtprio,
                        burst_s=s.burst_s, max_lag_s=s.max_lag_s,
                        max_listeners=s.max_listeners, max_per_address=s.max_per_address)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            if s.duration is not None:
                loop.call_later(s.duration, stop.set)
            await serve(server, host, port, stop)

        asyncio.run(main())
    if server.error is not None and isinstance(server.error, DeskcastError):
        raise server.error
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "devices": cmd_devices,
    "play": cmd_play,
    "send": cmd_send,
    "tx": cmd_send,
    "receive": cmd_receive,
    "serve": cmd_serve,
    "rx": cmd_receive,
    "hub": cmd_hub,
}
