"""``--allow``: the networks a receiver reads datagrams from (anything else is dropped before
it is parsed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from deskcast.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """``--allow`` values (``10.0.0.0/8``, ``fd00::/8``, a single address) as networks."""
    nets: list[Network] = []
    for text in cidrs:
        for item in text.replace(",", " ").split():
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"--allow {item!r}: give networks as ADDRESS/PREFIX "
                                  "(e.g. 192.168.1.0/24, fd00::/8) or single addresses"
                                  ) from None
    return tuple(nets)


def address_allowed(host: object, nets: Sequence[Network]) -> bool:
    """Whether ``host`` (a recvfrom address string; IPv4-mapped IPv6 counts as IPv4) is in
    one of ``nets``. Anything that is not an address is not allowed."""
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in nets)


class AllowList:
    """The ``--allow`` networks (none: everyone is allowed), with each host's answer kept."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self.nets = parse_allow(cidrs)
        self._known: dict[object, bool] = {}

    def permits(self, addr: object) -> bool:
        """Whether a datagram from ``addr`` ((host, port, ...) from recvfrom) may be read."""
        if not self.nets:
            return True
        host = addr[0] if isinstance(addr, tuple) and addr else None
        allowed = self._known.get(host)
        if allowed is None:
            allowed = address_allowed(host, self.nets)
            if len(self._known) >= 1024:  # spoofed floods must not grow it without bound
                self._known.clear()
            self._known[host] = allowed
        return allowed
