"""The per-user route daemon: owns the hub and the legs, answers on the control socket.

Design:

* **The hub never moves.** Applications always play into the hub sink (the default sink);
  a switch only changes what *reads* the hub's monitor. Nothing an application holds is touched,
  so switching can never make it see an error, and the hub keeps playing at the same clock.
* **local = a loopback, not moving the streams back.** Both were measured on the test rig's
  PulseAudio (see README, "route"): moving a stream takes ~1 ms and adds no delay, but the
  streams would then no longer pass through the hub, so every other leg (host, web) would go
  silent, new streams (which start on the default sink, the hub) would need moving one by one
  as they appear, and a stream the user pinned to a sink could not be told apart from one we
  moved. A ``module-loopback`` from ``hub.monitor`` to the speakers with ``latency_msec`` 30
  (``[route] local_latency_ms``) runs inside the sound server (no Python in the audio path,
  nothing to restart), is loaded in a few ms and has sound at the speakers within ~0.1 s
  of the switch, at a constant extra delay of ~30 ms — which video players compensate for
  through the latency the server reports.
* **Streams the user pinned are left alone.** The daemon moves streams onto the hub only when it
  creates the hub (the same as ``deskcast hub setup``); afterwards it never moves a stream: one
  the user moves to another sink stays there and is heard on that sink directly.
* A leg that dies is restarted with exponential backoff (:class:`Backoff`) and the status
  shows its restarts and last error. SIGTERM stops every leg (children get SIGTERM, the
  loopback is unloaded) and leaves the hub and the saved route as they are, so the next start
  restores the route.

Beside it: the legs (:mod:`deskcast.route.legs`), one leg's restart loop
(:mod:`deskcast.route.supervise`), the hub's upkeep on PulseAudio (:mod:`deskcast.route.pulsehub`)
and finding receivers by name (:mod:`deskcast.route.discovery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deskcast import state
from deskcast.errors import DeskcastError, DeviceError
from deskcast.route import protocol
from deskcast.route.discovery import Browser, resolve_host
from deskcast.route.legs import (
    Leg,
    LoopbackLeg,
    ProcessLeg,
    SendGroup,
    SendLeg,
    SparePool,
    WebLeg,
)
from deskcast.route.protocol import Target
from deskcast.route.pulsehub import (
    ensure_pulse_hub,
    hub_exists,
    pulse_speakers,
    remove_stale_loopbacks,
)
from deskcast.route.supervise import Supervised, restart_backoff

logger = logging.getLogger(__name__)

STATE = "route"
START_WAIT_S = 3.0
"""A switch answers once its new legs have started (or failed to), at most after this."""
HUB_WATCH_S = 1.0
"""How often the daemon checks that the hub still exists while legs run."""


@dataclass
class RouteConfig:
    """What the daemon needs from the settings (sections route, serve, hub)."""

    sink_name: str = "deskcast"
    backend: str = "auto"
    default_port: int = 1350
    speakers: str = ""
    alsa_speakers: str = "hw:0"
    local_latency_ms: float = 30.0
    web_listen: str = ":8000"
    answer_timeout_s: float = 4.0
    restart_max_s: float = 30.0
    config_path: str | None = None
    """Passed on to the children (``--config``) when the daemon was given one."""
    serve_tls_cert: str | None = None
    serve_listen_token: str | None = None
    """The web leg's serve reads these from the same settings; its status check needs them."""


class Daemon:
    def __init__(self, cfg: RouteConfig, backend: str, *, socket_path: Path | None = None,
                 leg_factory: Callable[[Target], Leg] | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.socket_path = socket_path or protocol.socket_path()
        self.work_dir = self.socket_path.parent / "legs"
        self.legs: dict[Target, Supervised] = {}
        self.targets: list[Target] = []
        self.since = time.time()
        self.started = time.time()
        self.monitor = ""
        self._leg_factory = leg_factory or self._make_leg
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._lock_file: int | None = None
        self.pool: SparePool | None = None
        self.browser: Browser | None = None
        self.send_groups: dict[bool, SendGroup] = {}
        """The ``send`` child of the route's hosts, and of its trx hosts: made on first use."""

    # --- lifetime ----------------------------------------------------------------------------

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        protocol.make_private_dir(self.socket_path.parent)
        self._take_lock()
        try:
            await self._serve(ready)
        finally:
            if self._lock_file is not None:
                os.close(self._lock_file)

    def _take_lock(self) -> None:
        path = self.socket_path.with_suffix(".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DeskcastError(f"a deskcast daemon is already running (socket "
                                f"{self.socket_path}); `deskcast route` talks to it") from None
        self._lock_file = fd

    async def _serve(self, ready: Callable[[], None] | None) -> None:
        if self.backend == "pulse":
            self.monitor = await asyncio.to_thread(ensure_pulse_hub, self.cfg.sink_name)
            await asyncio.to_thread(remove_stale_loopbacks)
        else:
            from deskcast.capture import ALSA_HUB_DEVICE

            self.monitor = ALSA_HUB_DEVICE
        protocol.make_private_dir(self.work_dir)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop.set)
        server: asyncio.Server | None = None
        if self._leg_factory == self._make_leg:  # real legs: keep a warm child ready
            self.pool = SparePool()
            self.pool.refill()
            self.browser = Browser()
            await self.browser.start()
        try:
            # Restore before listening: the first answer (to the `route` that started us) is
            # then about the restored legs, not about legs still starting.
            await self._restore()
            self.socket_path.unlink(missing_ok=True)
            old_umask = os.umask(0o177)  # born 0600: no window in which others can connect
            try:
                server = await asyncio.start_unix_server(self._client,
                                                         path=str(self.socket_path))
            finally:
                os.umask(old_umask)
            os.chmod(self.socket_path, 0o600)
            logger.info("route daemon ready on %s (%s hub %s)", self.socket_path, self.backend,
                        self.monitor)
            if ready is not None:
                ready()
            watch = asyncio.create_task(self._watch_hub()) if self.backend == "pulse" else None
            await self._stop.wait()
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        finally:
            if server is not None:
                server.close()
                self.socket_path.unlink(missing_ok=True)
            await self._stop_legs(list(self.legs))
            if self.pool is not None:
                await self.pool.close()
            if self.browser is not None:
                await self.browser.close()
            logger.info("route daemon stopped")

    async def _restore(self) -> None:
        saved = state.load(STATE)
        words = saved.get("targets")
        if not isinstance(words, list) or not words:
            return
        try:
            targets = protocol.parse_targets([str(w) for w in words], self.cfg.default_port)
        except DeskcastError as err:
            logger.warning("ignoring the saved route %s: %s", words, err)
            return
        logger.info("restoring the route: %s", " ".join(t.word for t in targets))
        try:
            await self._apply(targets, persist=False)
        except DeskcastError as err:
            logger.warning("cannot restore the route %s: %s", " ".join(words), err)
            return
        since = saved.get("since")
        if isinstance(since, int | float):
            self.since = float(since)

    def stop(self) -> None:
        self._stop.set()

    # --- switching ---------------------------------------------------------------------------

    async def set_route(self, words: list[str]) -> None:
        targets = protocol.parse_targets(words, self.cfg.default_port)
        for t in targets:
            if t.kind == "host":
                await resolve_host(t.host, t.port, self.browser)
        async with self._lock:
            await self._apply(targets, persist=True)

    async def _apply(self, targets: list[Target], *, persist: bool) -> None:
        if targets == self.targets and all(t in self.legs for t in targets if t.kind != "none"):
            return  # idempotent: the same route again changes nothing (nor its "since")
        wanted = [t for t in targets if t.kind != "none"]
        # Build the new legs first: if one cannot be made (no speakers to play to…), the
        # error is the answer and the route stays as it was.
        made = {t: self._leg_factory(t) for t in wanted if t not in self.legs}
        # Old legs stop while the new ones start: a serve or a sender takes ~0.1 s to finish,
        # and the new destination should not wait for that.
        leaving = [self.legs.pop(t) for t in list(self.legs) if t not in wanted]
        stopping = asyncio.gather(*(sup.stop() for sup in leaving))
        for t in wanted:
            if t not in self.legs:
                sup = Supervised(t, made[t],
                                 restart_backoff(self.cfg.restart_max_s),
                                 prepare=self._hub_check if self.pool is not None
                                 and self.backend == "pulse" else None)
                sup.task = asyncio.create_task(sup.run(), name=f"leg {t.word}")
                self.legs[t] = sup
        self.targets = targets
        self.since = time.time()
        started = [s.attempted.wait() for s in self.legs.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*started), START_WAIT_S)
        await stopping
        if persist:
            state.save(STATE, {"targets": [t.word for t in targets], "since": self.since})
        logger.info("route: %s", " ".join(t.word for t in targets))

    async def _hub_check(self) -> None:
        """Before a leg (re)starts: if the sound server lost the hub (it was restarted), make
        it again — as at the daemon's start. An existing hub is left exactly as it is."""
        if not await asyncio.to_thread(hub_exists, self.cfg.sink_name):
            from deskcast.hub import pulse as pulse_hub

            if not state.load(pulse_hub.STATE):  # `deskcast hub remove`: the user's wish
                raise DeviceError(f"the hub {self.cfg.sink_name} was removed (`deskcast hub "
                                  "remove`): run `deskcast hub setup` to route again")
            logger.warning("the hub %s is gone (sound server restarted?): creating it again",
                           self.cfg.sink_name)
            self.monitor = await asyncio.to_thread(ensure_pulse_hub, self.cfg.sink_name)

    async def _watch_hub(self) -> None:
        """Legs reconnect by themselves when the sound server restarts, but only to a hub
        that exists again: while any leg runs, make the hub again once the server is back."""
        while True:
            await asyncio.sleep(HUB_WATCH_S)
            if not self.legs:
                continue
            try:
                await self._hub_check()
            except DeskcastError as err:  # removed on purpose, or the server is still away
                logger.debug("hub watch: %s", err)
            except Exception as err:
                logger.debug("hub watch: the sound server did not answer: %s", err)

    async def _stop_legs(self, targets: list[Target]) -> None:
        sups = [self.legs.pop(t) for t in targets if t in self.legs]
        if sups:
            await asyncio.gather(*(s.stop() for s in sups))

    def _make_leg(self, t: Target) -> Leg:
        common = ["--config", self.cfg.config_path] if self.cfg.config_path else []
        source = (f"pulse:{self.monitor}" if self.backend == "pulse"
                  else f"alsa:{self.monitor}")
        if t.kind == "local":
            if self.backend == "pulse":
                speakers = pulse_speakers(self.cfg.speakers, self.cfg.sink_name)
                return LoopbackLeg(t.word, self.monitor, speakers, self.cfg.local_latency_ms)
            return ProcessLeg(t.word, "local", [*common, "play", source,
                                                f"alsa:{self.cfg.alsa_speakers}", "-q"],
                              pool=self.pool)
        if t.kind == "web":
            from deskcast.endpoints import parse_hostport
            from deskcast.http.client import local_serve

            host, port = parse_hostport(self.cfg.web_listen, 8000)
            local = local_serve(self.cfg.web_listen, self.cfg.serve_tls_cert,
                                self.cfg.serve_listen_token)
            scheme = local.base_url.split(":", 1)[0]
            page = (f"{scheme}://{socket.gethostname()}:{port}/" if not host
                    else f"{local.base_url}/")
            return WebLeg(t.word, [*common, "serve", "--listen", self.cfg.web_listen,
                                   "-s", source], local, page, pool=self.pool)
        browser = self.browser
        return SendLeg(t.word, t.host, t.port, trx=t.trx, group=self._send_group(t.trx, common,
                                                                                source),
                       answer_timeout_s=self.cfg.answer_timeout_s,
                       resolve=lambda host, port: resolve_host(host, port, browser))

    def _send_group(self, trx: bool, common: list[str], source: str) -> SendGroup:
        """The one ``send`` child that every host of the route joins (trx hosts: another)."""
        group = self.send_groups.get(trx)
        if group is None:
            stats = self.work_dir / ("send-trx.json" if trx else "send.json")

            def args_for(first: str) -> list[str]:
                return [*common, "send", first, "--destinations-from-stdin", "-s", source,
                        "-q", "--stats-json", str(stats), *(["--trx"] if trx else [])]

            group = SendGroup("send --trx" if trx else "send", args_for, stats, self.pool)
            self.send_groups[trx] = group
        return group

    # --- status and the socket ---------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        legs = [await sup.describe() for sup in self.legs.values()]
        return {"route": [t.word for t in self.targets] or ["none"],
                "since": round(self.since, 3), "backend": self.backend,
                "hub": self.monitor, "pid": os.getpid(), "daemon_since": round(self.started, 3),
                "legs": legs, "receivers": [f.as_dict() for f in self.browser.receivers()]
                if self.browser is not None else []}

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        cmd = message.get("cmd")
        try:
            if cmd == "status":
                pass
            elif cmd == "route":
                words = message.get("targets")
                if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                    raise protocol.ProtocolError("route needs a list of targets")
                await self.set_route(words)
            elif cmd == "stop":
                self.stop()
                return {"ok": True}
            else:
                raise protocol.ProtocolError(f"unknown command {cmd!r}")
        except DeskcastError as err:
            return {"ok": False, "error": str(err)}
        return {"ok": True, "status": await self.status()}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            try:
                answer = await self.handle(protocol.decode(line))
            except protocol.ProtocolError as err:
                answer = {"ok": False, "error": str(err)}
            writer.write(protocol.encode(answer))
            await writer.drain()
        except (TimeoutError, OSError, ValueError) as err:
            logger.info("control client dropped: %s", err)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()



def run(cfg: RouteConfig) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from deskcast.hub import pick_backend

    backend = pick_backend(cfg.backend, hub_needed=True)
    daemon = Daemon(cfg, backend)
    asyncio.run(daemon.run())


__all__ = ["Daemon", "ProcessLeg", "RouteConfig", "run"]
