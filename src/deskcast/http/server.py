"""``deskcast serve``: one source, one MP3 encoder, any number of HTTP listeners.

The audio thread reads the source, encodes MP3 with the bit reservoir off (every frame is a join
point) and hands ~100 ms chunks to the event loop, where the :class:`Broadcaster` fans them out.
Each listener first gets ~1 s of recent audio so players start at once, then live audio;
one that falls more than a few seconds behind is cut and never slows anybody else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from aiohttp import web

from deskcast import realtime
from deskcast.capture.base import Source
from deskcast.encode.mp3 import Mp3Encoder
from deskcast.http.broadcaster import Broadcaster, Chunk

logger = logging.getLogger(__name__)

CHUNK_S = 0.1
"""Frames are handed to the event loop in ~100 ms chunks: writes are batched anyway."""
NO_CACHE = "no-cache, no-store, must-revalidate"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deskcast</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}
button{font-size:1.2em;padding:.4em 1.2em}#state{color:#555}</style></head>
<body><h1>deskcast</h1>
<p><button id="play">Play</button> <span id="state">stopped</span></p>
<audio id="audio" preload="none"></audio>
<script>
const audio = document.getElementById("audio"), state = document.getElementById("state");
let wanted = false, lastTime = 0, lastMove = Date.now(), backoff = 1000;
function connect() {
  audio.src = "stream.mp3?t=" + Date.now();
  audio.play().catch(() => {});
  state.textContent = "connecting";
}
document.getElementById("play").onclick = () => {
  wanted = !wanted;
  if (wanted) { connect(); } else { audio.pause(); audio.removeAttribute("src"); audio.load();
    state.textContent = "stopped"; }
  document.getElementById("play").textContent = wanted ? "Stop" : "Play";
};
audio.addEventListener("playing", () => { state.textContent = "playing"; backoff = 1000; });
audio.addEventListener("error", () => { state.textContent = "reconnecting"; });
// A dead server makes the element fire waiting/stalled but no error: watch the clock instead.
setInterval(() => {
  if (!wanted) return;
  if (audio.currentTime !== lastTime) {
    lastTime = audio.currentTime; lastMove = Date.now(); return;
  }
  if (Date.now() - lastMove > 3000) {
    state.textContent = "reconnecting"; lastMove = Date.now() + backoff;
    backoff = Math.min(backoff * 2, 10000); connect();
  }
}, 500);
</script></body></html>
"""


class Server:
    def __init__(self, source: Source, *, bitrate_kbps: int = 128, rtprio: int = 0,
                 burst_s: float = 1.0, max_lag_s: float = 4.0, max_listeners: int = 1000,
                 max_per_address: int = 20) -> None:
        self.source = source
        self.encoder = Mp3Encoder(source.fmt, bitrate_kbps=bitrate_kbps)
        self.rtprio = rtprio
        self.broadcaster = Broadcaster(burst_s=burst_s, max_lag_s=max_lag_s, batch_s=CHUNK_S)
        self.started = time.monotonic()
        self.max_listeners = max_listeners
        self.max_per_address = max_per_address
        self.refused = 0
        self._per_address: dict[str, int] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app = web.Application()
        self.app.router.add_get("/", self.page)
        self.app.router.add_get("/stream.mp3", self.stream)
        self.app.router.add_get("/api/status", self.status)

    # --- audio thread -------------------------------------------------------------------------

    def start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._audio, name="deskcast-audio", daemon=True)
        self._thread.start()

    def _audio(self) -> None:
        realtime.request(self.rtprio)
        pending: list[bytes] = []
        pts = 0.0
        frame_s = self.encoder.frame_duration_s
        try:
            while not self._stop.is_set():
                block = self.source.read()
                if block is None:
                    break
                pending += self.encoder.encode(block)
                if len(pending) * frame_s >= CHUNK_S:
                    chunk = Chunk(b"".join(pending), len(pending) * frame_s, pts)
                    pts += chunk.duration_s
                    pending = []
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self.broadcaster.publish, chunk)
        except BaseException as err:
            self.error = err
            logger.error("audio stopped: %s", err)
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.broadcaster.close)

    def stop_audio(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    # --- HTTP ---------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html",
                            headers={"Cache-Control": NO_CACHE})

    async def status(self, request: web.Request) -> web.Response:
        st = self.broadcaster.stats
        body: dict[str, Any] = {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "source": self.source.name,
            "formats": {"mp3": {"bitrate_kbps": self.encoder.bitrate_kbps,
                                "listeners": self.broadcaster.listeners}},
            "listeners": self.broadcaster.listeners,
            "listeners_total": st.listeners_total,
            "listeners_cut": st.listeners_cut,
            "listeners_refused": self.refused,
            "published_bytes": st.published_bytes,
            "sent_bytes": st.sent_bytes,
        }
        return web.Response(text=json.dumps(body), content_type="application/json",
                            headers={"Cache-Control": NO_CACHE,
                                     "Access-Control-Allow-Origin": "*"})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "audio/mpeg", "Cache-Control": NO_CACHE,
                   "Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff"}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        address = request.remote or "?"
        if self.broadcaster.listeners >= self.max_listeners or \
                self._per_address.get(address, 0) >= self.max_per_address:
            self.refused += 1
            return web.Response(status=503, text="too many listeners, try again later\n",
                                headers={"Retry-After": "10", "Cache-Control": NO_CACHE})
        resp = web.StreamResponse(headers=headers)
        listener = self.broadcaster.subscribe()
        self._per_address[address] = self._per_address.get(address, 0) + 1
        try:
            # Inside the try: a client that already hung up makes even the headers fail.
            await resp.prepare(request)
            while True:
                data = await listener.next_batch()
                if data is None:
                    break
                await resp.write(data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            listener.close()
            left = self._per_address.get(address, 1) - 1
            if left:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)
        return resp


async def serve(server: Server, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(server.app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host or None, port, shutdown_timeout=1.0)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        from deskcast.errors import DeviceError

        raise DeviceError(f"cannot listen on {host or '*'}:{port}: {err.strerror} — is "
                          "another server running? choose another with --listen") from None
    server.start_audio(asyncio.get_running_loop())
    logger.info("serving %s on http://%s:%d/ (stream: /stream.mp3)", server.source.name,
                host or "0.0.0.0", port)
    try:
        await stop.wait()
    finally:
        server.stop_audio()
        server.broadcaster.close()
        await runner.cleanup()
