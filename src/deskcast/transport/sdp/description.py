"""The description of one Opus RTP stream (:class:`SessionDescription`, checked when made) and
its SDP text (:func:`write_sdp`); the helpers both directions use."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from deskcast.errors import EndpointError

OPUS_CLOCK = 48000
"""RFC 7587: Opus' RTP clock is always 48 kHz, and its rtpmap always says ``opus/48000/2``."""
DEFAULT_MULTICAST_TTL = 1
"""What goes into ``c=IN IP4 GROUP/TTL`` when no TTL is given: Linux's default multicast TTL,
which is what the sender's packets really get unless ``--ttl`` says otherwise."""
TRANSPORTS = ("RTP/AVP", "RTP/AVPF")
"""Plain RTP over UDP (AVPF only adds feedback messages; its media packets are the same)."""
SRTP_TRANSPORTS = ("RTP/SAVP", "RTP/SAVPF")
"""SRTP over UDP, usable when an ``a=crypto`` line (RFC 4568) gives the key inline."""
CRYPTO_SUITE = "AES_CM_128_HMAC_SHA1_80"
"""The one SRTP crypto suite deskcast speaks (ffmpeg's default)."""
INLINE_KEY = re.compile(r"[A-Za-z0-9+/]{38,64}={0,2}")
MIN_MAXAVERAGEBITRATE = 6000
MAX_MAXAVERAGEBITRATE = 510000
MAX_PTIME_MS = 120.0
"""The longest an Opus packet can be (RFC 6716 3.2.5, RFC 7587 ``maxptime``)."""
_ADDRESS_CHARS = re.compile(r"[0-9A-Za-z.:%_-]{1,253}")
"""What an address in an SDP line may be made of (IPv6 zones included); never a space."""
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_QUOTE_MAX = 80


@dataclass(frozen=True)
class SessionDescription:
    """One Opus audio stream sent with RTP over UDP.

    ``address`` and ``port`` are where the packets go (the ``c=`` and ``m=`` lines): the
    receiver's unicast address, or a multicast group, IPv4 or IPv6 (a host name is accepted
    too, as RFC 4566 allows). ``ttl`` is only written for IPv4 multicast, the one case SDP
    carries it. Invalid values raise :class:`EndpointError`.
    """

    address: str
    port: int
    payload_type: int = 96
    encoding: str = "opus"
    clock_rate: int = OPUS_CLOCK
    channels: int = 2
    ttl: int | None = None
    session_name: str = "deskcast"
    ptime_ms: float | None = None
    maxaveragebitrate: int | None = None
    origin_address: str = "127.0.0.1"
    session_id: int = 0
    crypto_key: str | None = None
    """SRTP master key + salt in base64 (``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY``,
    transport RTP/SAVP); None for plain RTP. The SDP text then holds a secret."""

    def __post_init__(self) -> None:
        check_address(self.address, "address")
        check_address(self.origin_address, "origin address")
        if not 0 < self.port < 65536:
            raise EndpointError(f"bad port {self.port}: give a number 1-65535")
        if not 0 <= self.payload_type <= 127:
            raise EndpointError(f"bad RTP payload type {self.payload_type}: give 0-127 "
                                "(96-127 are the dynamic ones)")
        if not self.encoding or any(c.isspace() or c == "/" for c in self.encoding):
            raise EndpointError(f"bad encoding name {self.encoding!r}")
        if self.clock_rate <= 0:
            raise EndpointError(f"bad RTP clock rate {self.clock_rate}")
        if self.channels not in (1, 2):
            raise EndpointError(f"Opus over RTP carries 1 or 2 channels, not {self.channels}")
        if self.ttl is not None and not 0 <= self.ttl <= 255:
            raise EndpointError(f"bad TTL {self.ttl}: give 0-255")
        if not self.session_name.isprintable():
            raise EndpointError("the session name must be printable text on one line")
        if self.ptime_ms is not None and not (
                math.isfinite(self.ptime_ms) and 0 < self.ptime_ms <= MAX_PTIME_MS):
            raise EndpointError(f"bad packet time {self.ptime_ms} ms: give 0-{MAX_PTIME_MS:g}")
        if self.maxaveragebitrate is not None and not (
                MIN_MAXAVERAGEBITRATE <= self.maxaveragebitrate <= MAX_MAXAVERAGEBITRATE):
            raise EndpointError(f"bad maxaveragebitrate {self.maxaveragebitrate}: give "
                                f"{MIN_MAXAVERAGEBITRATE}-{MAX_MAXAVERAGEBITRATE} bit/s")
        if self.session_id < 0:
            raise EndpointError(f"bad SDP session id {self.session_id}: must not be negative")
        if self.crypto_key is not None and not INLINE_KEY.fullmatch(self.crypto_key):
            raise EndpointError("bad SRTP key for the SDP: expected the base64 text of a "
                                "`deskcast keygen` key file")

    @property
    def is_multicast(self) -> bool:
        ip = as_ip(self.address)
        return ip is not None and ip.is_multicast


def write_sdp(desc: SessionDescription) -> str:
    """The SDP text (CRLF line ends) that lets any RTP player receive ``desc``'s stream."""
    if desc.encoding.lower() != "opus" or desc.clock_rate != OPUS_CLOCK:
        raise EndpointError(f"deskcast only describes Opus at {OPUS_CLOCK} Hz, not "
                            f"{desc.encoding}/{desc.clock_rate}")
    pt = desc.payload_type
    family = _family(desc.address)
    connection = desc.address
    if family == "IP4" and desc.is_multicast:
        # RFC 4566 5.7: an IPv4 multicast address MUST carry its TTL (IPv6 never does).
        ttl = DEFAULT_MULTICAST_TTL if desc.ttl is None else desc.ttl
        connection += f"/{ttl}"
    stereo = "1" if desc.channels == 2 else "0"
    fmtp = [f"stereo={stereo}", f"sprop-stereo={stereo}"]
    if desc.maxaveragebitrate is not None:
        fmtp.append(f"maxaveragebitrate={desc.maxaveragebitrate}")
    lines = [
        "v=0",
        f"o=- {desc.session_id} 0 IN {_family(desc.origin_address)} {desc.origin_address}",
        f"s={desc.session_name.strip() or ' '}",  # RFC 4566 5.3: "s= " when there is no name
        f"c=IN {family} {connection}",
        "t=0 0",
        f"m=audio {desc.port} {'RTP/AVP' if desc.crypto_key is None else 'RTP/SAVP'} {pt}",
        # RFC 7587 7: always opus/48000/2, whatever is really sent; fmtp says mono or stereo.
        f"a=rtpmap:{pt} opus/{OPUS_CLOCK}/2",
        f"a=fmtp:{pt} " + ";".join(fmtp),
    ]
    if desc.ptime_ms is not None:
        lines.append(f"a=ptime:{_format_ms(desc.ptime_ms)}")
    if desc.crypto_key is not None:
        lines.append(f"a=crypto:1 {CRYPTO_SUITE} inline:{desc.crypto_key}")
    # RFC 4566 6: in a description that is handed out (a file, SAP), recvonly tells the tools
    # to receive. Players ignore it; it keeps SIP-style tools from trying to send to us.
    lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n"


def as_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def check_address(address: str, what: str) -> None:
    if not _ADDRESS_CHARS.fullmatch(address) or (
            as_ip(address) is None and not _HOSTNAME.fullmatch(address)):
        raise EndpointError(f"bad {what} {quote(address)}: give an IPv4 or IPv6 address or "
                            "a host name")


def shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 1] + "…"


def quote(text: str) -> str:
    """``text`` for an error message: quoted, on one line, not too long."""
    return repr(shorten(text))


def _family(address: str) -> str:
    return "IP6" if isinstance(as_ip(address), ipaddress.IPv6Address) else "IP4"


def _format_ms(ms: float) -> str:
    """``20``, ``2.5``: exact (it reads back as the same float), never with an exponent."""
    text = format(Decimal(repr(ms)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
