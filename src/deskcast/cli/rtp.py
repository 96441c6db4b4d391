"""``send`` and ``receive`` (Opus over RTP, both run by :func:`~deskcast.cli.play.run_pump`),
their --sdp files and SRTP keys (``keygen``, --key)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskcast import config
from deskcast.cli.common import audio_format, load_settings
from deskcast.cli.play import run_pump
from deskcast.errors import ConfigError

if TYPE_CHECKING:
    from deskcast.transport.srtp import SrtpKey

logger = logging.getLogger(__name__)

ROOMS_LATENCY_MS = 80.0
"""The timeline's latency when several rooms play it (``send --latency-ms``'s default with
more than one destination on the command line): what a 20 ms frame, the network and a
receiver's default 40 ms sound-server buffer need, with a margin for a LAN's jitter."""


def cmd_send(args: argparse.Namespace) -> int:
    from deskcast.capture import make_source
    from deskcast.encode.opus import OpusEncoder
    from deskcast.endpoints import Direction, Endpoint
    from deskcast.transport.destinations import follow_commands, read_lines
    from deskcast.transport.fec import FecEncoder, parse_scheme
    from deskcast.transport.sender import RtpSender

    s = load_settings(args, ["send", "run", "audio", "hub"])
    fmt = audio_format(s)
    encoder = OpusEncoder(fmt, frame_ms=s.frame_ms, bitrate_kbps=s.bitrate,
                          complexity=s.complexity, application=s.application, cbr=s.cbr)
    frames = encoder.frame_frames
    if s.origins.get("block_ms") == "command line":
        logger.warning("send reads its source in whole Opus frames: --block-ms is ignored "
                       "(use --frame-ms, now %g ms)", s.frame_ms)
    fec = None
    if s.fec:
        fec = FecEncoder(*parse_scheme(s.fec))
    key = load_key(s.key)
    first, *more = args.destination
    latency_ms = s.latency_ms
    if latency_ms is None:
        # One destination plays as early as it can; several play on one timeline. (A route's
        # send keeps none until the route gives it a latency: not yet.)
        latency_ms = ROOMS_LATENCY_MS if more else 0.0
    if latency_ms and s.trx:
        logger.warning("trx-rx keeps no timeline: --latency-ms is ignored with --trx")
    sender = RtpSender(Endpoint("rtp", first, {}, Direction.SINK), fmt, frames,
                       encoder=encoder, trx=s.trx, ttl=s.ttl, dscp=s.dscp, fec=fec, key=key,
                       also=more, latency_s=latency_ms / 1000)
    if args.sdp:
        _write_sdp(args.sdp, sender, s, key)
        if more or args.destinations_from_stdin:
            logger.warning("--sdp %s names %s only (an SDP file holds one address); the same "
                           "stream goes to the other destinations", args.sdp, first)
    source = make_source(s.source, fmt, frames, hub_name=s.sink_name, buffer_ms=s.buffer_ms)
    show = not args.quiet and sys.stderr.isatty()

    def status(_: Any) -> str:
        st = sender.stats
        secs = max(1e-3, time.monotonic() - st.started)
        text = f"{st.packets} pkts  {st.octets * 8 / secs / 1000:5.1f} kbit/s"
        dests = sender.destinations.current
        if len(dests) > 1:
            answering = sum(d.feedback.last_report is not None
                            and time.monotonic() - d.feedback.last_report < 10 for d in dests)
            text += f"  {answering} of {len(dests)} receivers answering"
        if st.last_report is not None and time.monotonic() - st.last_report < 10:
            rtt = "" if st.rtt_ms is None else f"  rtt {st.rtt_ms:.1f} ms"
            worst = "worst " if len(dests) > 1 else ""
            text += f"  {worst}receiver: loss {st.receiver_loss_pct:.1f}%{rtt}"
        elif not s.trx and secs > 8:
            text += "  no reports from the receiver"
        return text

    if args.destinations_from_stdin:
        threading.Thread(target=follow_commands, name="deskcast-destinations", daemon=True,
                         args=(read_lines(sys.stdin.fileno()), sender.add_destination,
                               sender.remove_destination)).start()
    with source:
        run_pump(source, sender, s, fmt, show, status=status, stats_json=args.stats_json)
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from deskcast.endpoints import Direction, Endpoint
    from deskcast.playback import make_sink
    from deskcast.transport.jitter import JitterBuffer
    from deskcast.transport.receiver import RtpReceiver

    s = load_settings(args, ["receive", "run", "audio", "hub"])
    fmt = audio_format(s)
    jitter = JitterBuffer(fmt.rate, target_ms=s.jitter_ms, min_ms=s.jitter_min_ms,
                          max_ms=s.jitter_max_ms, adaptive=s.adaptive)
    block = fmt.frames_for_ms(s.block_ms)
    key = load_key(s.key)
    listen = _listen_from_sdp(args.sdp, key) if args.sdp else args.listen
    receiver = RtpReceiver(Endpoint("rtp", listen, {}, Direction.SOURCE), fmt, block,
                           jitter=jitter, takeover_ms=s.takeover_ms, fec=s.inband_fec,
                           drift=s.drift, key=key, allow=[s.allow] if s.allow else [],
                           timeline=s.timeline, output_offset_ms=s.output_offset_ms)
    receiver.rtprio = s.rtprio
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
        run_pump(receiver, sink, s, fmt, show, status=status, stats_json=args.stats_json)
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


def load_key(path: str | None) -> SrtpKey | None:
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
