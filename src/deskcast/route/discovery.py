"""Finding receivers without knowing their addresses: mDNS/DNS-SD (zeroconf), ``_deskcast._udp``.

``deskcast receive --announce[=NAME]`` registers ``NAME._deskcast._udp.local.`` (NAME: the host
name by default) with the receiver's addresses and port; the route daemon browses for them all
the time, lists them in ``deskcast route`` and resolves ``deskcast route NAME`` to them before
asking the system resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from deskcast.errors import EndpointError

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

logger = logging.getLogger(__name__)

SERVICE = "_deskcast._udp.local."
RESOLVE_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class Found:
    name: str
    """The instance name, e.g. 'kitchen'."""
    addresses: tuple[str, ...]
    port: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "addresses": list(self.addresses), "port": self.port}


def instance_name(full: str) -> str:
    """'kitchen._deskcast._udp.local.' -> 'kitchen'."""
    return full[: -len(SERVICE) - 1] if full.endswith("." + SERVICE) else full


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses to announce (loopback only when there is nothing else)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("169.254."):
                found.append(ip.ip)
    outside = [a for a in found if not a.startswith("127.")]
    return outside or found or ["127.0.0.1"]


class Announcer:
    """Announce a receiver on ``port`` while the ``with`` body runs (registration, which
    probes the network for ~2 s, happens in the background: the receiver starts at once)."""

    def __init__(self, port: int, name: str = "", addresses: list[str] | None = None) -> None:
        self.port = port
        self.name = name or socket.gethostname().split(".")[0]
        self.addresses = addresses
        self._zc: Any = None
        self._info: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Announcer:
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        addresses = self.addresses or local_addresses()
        self._info = ServiceInfo(
            SERVICE, f"{self.name}.{SERVICE}",
            addresses=[socket.inet_aton(a) for a in addresses], port=self.port,
            properties={"v": "1"}, server=f"{socket.gethostname().split('.')[0]}.local.")
        self._zc = Zeroconf(ip_version=IPVersion.V4Only)
        self._thread = threading.Thread(target=self._register, name="deskcast-announce",
                                        daemon=True)
        self._thread.start()
        return self

    def _register(self) -> None:
        from zeroconf import NonUniqueNameException

        try:
            self._zc.register_service(self._info)
        except NonUniqueNameException:
            logger.warning("another receiver on the network is already called %r: choose "
                           "another name with --announce NAME", self.name)
            return
        except Exception as err:  # a network without multicast: receive goes on regardless
            logger.warning("cannot announce this receiver via mDNS: %s", err)
            return
        logger.info("announced as %r (%s) on port %d", self.name, SERVICE, self.port)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._thread.join(3.0)
        if self._zc is not None:
            with contextlib.suppress(Exception):
                self._zc.unregister_service(self._info)
            self._zc.close()
            self._zc = None


class Browser:
    """Keeps the receivers on the network up to date, on the daemon's event loop
    (``zeroconf.asyncio``: the browser's callbacks and the lookups run on that loop)."""

    def __init__(self) -> None:
        self.found: dict[str, Found] = {}
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        try:
            self._azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
            self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE,
                                                handlers=[self._changed])
        except Exception as err:  # no multicast here: names then come from the resolver only
            logger.warning("cannot look for receivers via mDNS: %s", err)
            await self.close()

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str,
                 state_change: ServiceStateChange) -> None:
        from zeroconf import ServiceStateChange

        short = instance_name(name)
        key = short.lower()
        pending = self._resolving.pop(key, None)
        if pending is not None:
            pending.cancel()  # what it would find is out of date now
        if state_change is ServiceStateChange.Removed:
            self.found.pop(key, None)
            return
        task = asyncio.get_running_loop().create_task(
            self._resolve(zeroconf, service_type, name, short))
        self._resolving[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(key) is task:
            del self._resolving[key]

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str,
                       short: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS) or not info.port:
            return
        found = Found(short, tuple(info.parsed_addresses()), int(info.port))
        self.found[short.lower()] = found
        logger.info("found receiver %s at %s:%d", short, ",".join(found.addresses), found.port)

    def lookup(self, name: str) -> Found | None:
        return self.found.get(name.lower())

    def receivers(self) -> list[Found]:
        return sorted(self.found.values(), key=lambda f: f.name.lower())

    async def close(self) -> None:
        for task in list(self._resolving.values()):
            task.cancel()
        self._resolving.clear()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            with contextlib.suppress(Exception):
                await self._azc.async_close()
            self._azc = None


async def resolve_host(host: str, port: int,
                       browser: Browser | None = None) -> tuple[str, int]:
    """A receiver found by mDNS under that name (its address and port), else the name itself
    once the system resolver knows it; EndpointError in one line otherwise."""
    found = browser.lookup(host) if browser is not None else None
    if found is not None and found.addresses:
        return found.addresses[0], found.port
    try:
        await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as err:
        known = ", ".join(f.name for f in browser.receivers()) if browser is not None else ""
        raise EndpointError(f"unknown host {host!r} ({err.strerror}): check the name or give "
                            "an address" + (f"; receivers found on the network: {known}"
                                            if known else "")) from None
    return host, port
