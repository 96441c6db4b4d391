"""``serve``'s wiring: settings checked, the source, the :class:`~deskcast.http.server.Server`
with its relays (Icecast, HLS) and now-playing pollers, run as an aiohttp application until a
signal (or --duration)."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from deskcast.cli.common import audio_format, load_settings
from deskcast.errors import ConfigError, DeskcastError

logger = logging.getLogger(__name__)


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

    s = load_settings(args, ["serve", "run", "audio", "hub"])
    fmt = audio_format(s)
    host, port = parse_hostport(s.listen, 8000)
    try:
        field_map = parse_field_map(s.tracker_title_field)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if s.token:
        token = token_file.check(s.token)
    else:
        token, path = token_file.load_or_create()
        logger.info("metadata token (for POST /api/metadata and `deskcast meta`) is in %s",
                    path)
    ssl_context = None
    if s.tls_cert and s.tls_key:
        from deskcast.http.tls import server_context

        ssl_context = server_context(s.tls_cert, s.tls_key)
    listen_token = s.listen_token or ""
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
