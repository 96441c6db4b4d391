"""SDP (RFC 4566 + RFC 7587) for deskcast's RTP/Opus stream.

:func:`write_sdp` describes a stream so that ffplay/ffmpeg, VLC and GStreamer can play it::

    ffplay -protocol_whitelist file,udp,rtp stream.sdp
    vlc stream.sdp
    gst-launch-1.0 filesrc location=stream.sdp ! sdpdemux ! rtpopusdepay ! opusdec ! autoaudiosink

:func:`parse_sdp` reads one (from ffmpeg's ``-sdp_file``, GStreamer, a SAP announcement, a
hand-written file) and returns what deskcast needs to receive it. It is lenient where being
lenient is harmless (LF or CRLF, blank lines, unknown lines and attributes, session- or
media-level ``c=``, malformed optional values) and raises
:class:`~deskcast.errors.EndpointError`, with one line that says what is wrong, for anything it
cannot use. It never raises anything else.

Both are pure: text in, text out; nothing is resolved, opened or sent.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
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
_INLINE_KEY = re.compile(r"[A-Za-z0-9+/]{38,64}={0,2}")
MIN_MAXAVERAGEBITRATE = 6000
MAX_MAXAVERAGEBITRATE = 510000
MAX_PTIME_MS = 120.0
"""The longest an Opus packet can be (RFC 6716 3.2.5, RFC 7587 ``maxptime``)."""

_STATIC_PAYLOAD_TYPES: dict[int, str] = {
    0: "PCMU/8000", 3: "GSM/8000", 4: "G723/8000", 5: "DVI4/8000", 6: "DVI4/16000",
    7: "LPC/8000", 8: "PCMA/8000", 9: "G722/8000", 10: "L16/44100/2", 11: "L16/44100",
    12: "QCELP/8000", 13: "CN/8000", 14: "MPA/90000", 15: "G728/8000", 16: "DVI4/11025",
    17: "DVI4/22050", 18: "G729/8000",
}
"""RFC 3551's static audio payload types, to name what a non-Opus stream is."""

_DIGITS = re.compile(r"[0-9]{1,10}")
_SESSION_ID = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,400})?")
_ADDRESS_CHARS = re.compile(r"[0-9A-Za-z.:%_-]{1,253}")
"""What an address in an SDP line may be made of (IPv6 zones included); never a space."""
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_QUOTE_MAX = 80
_LINE = re.compile(r"([a-z])=(.*)")


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
        _check_address(self.address, "address")
        _check_address(self.origin_address, "origin address")
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
        if self.crypto_key is not None and not _INLINE_KEY.fullmatch(self.crypto_key):
            raise EndpointError("bad SRTP key for the SDP: expected the base64 text of a "
                                "`deskcast keygen` key file")

    @property
    def is_multicast(self) -> bool:
        ip = _ip(self.address)
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


def parse_sdp(text: str) -> SessionDescription:
    """The first usable Opus audio stream in an SDP.

    Raises :class:`EndpointError` (one line) when there is none: no ``m=audio`` line, only
    other codecs, an unsupported transport (SRTP, DTLS, TCP), a bad port or no ``c=`` line.
    The error is about the first audio stream when none is usable.
    """
    session, medias = _split(text)
    audio = [m for m in medias if m.media == "audio"]
    if not audio:
        what = ", ".join(sorted({m.media for m in medias if m.media})) or "no m= line at all"
        raise EndpointError(f"no audio stream in the SDP (no m=audio line; found {what}): "
                            "is this the right SDP file?")
    first: EndpointError | None = None
    for media in audio:
        try:
            return _describe(session, media)
        except EndpointError as err:
            first = first or err
    assert first is not None
    raise first


# --- parsing ---------------------------------------------------------------------------------

@dataclass
class _Section:
    """The lines of the session part or of one media part (``m=`` up to the next ``m=``)."""

    media: str = ""
    m_line: str = ""
    connection: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def attributes_for(self, name: str, pt: int) -> str | None:
        """The value after ``a=NAME:PT `` (rtpmap, fmtp), or None."""
        for key, value in self.attributes:
            if key == name:
                head, *rest = value.split(None, 1) or [""]
                if _DIGITS.fullmatch(head) and int(head) == pt:
                    return rest[0].strip() if rest else ""
        return None


@dataclass
class _Session(_Section):
    name: str | None = None
    origin_address: str | None = None
    session_id: int | None = None


def _split(text: str) -> tuple[_Session, list[_Section]]:
    session = _Session()
    medias: list[_Section] = []
    current: _Section = session
    for raw in text.lstrip("\ufeff").splitlines():
        match = _LINE.fullmatch(raw.strip())
        if match is None:
            continue  # blank or not an SDP line: nothing deskcast needs
        kind, value = match.groups()
        if kind == "m":
            current = _Section(media=(value.split() or [""])[0].lower(), m_line=value)
            medias.append(current)
        elif kind == "c":
            current.connection = current.connection or value
        elif kind == "a":
            name, _, attr_value = value.partition(":")
            current.attributes.append((name.strip().lower(), attr_value.strip()))
        elif current is session and kind == "s" and session.name is None:
            session.name = "".join(c if c.isprintable() else " " for c in value).strip()
        elif current is session and kind == "o" and session.origin_address is None:
            _read_origin(session, value)
    return session, medias


def _read_origin(session: _Session, value: str) -> None:
    """``o=USER SESS-ID SESS-VERSION IN IP4|IP6 ADDRESS``: kept only when well formed."""
    parts = value.split()
    if len(parts) != 6:
        return
    if _SESSION_ID.fullmatch(parts[1]):
        session.session_id = int(parts[1])
    try:
        _check_address(parts[5], "origin address")
    except EndpointError:
        return
    session.origin_address = parts[5]


def _describe(session: _Session, media: _Section) -> SessionDescription:
    m_line = _quote("m=" + media.m_line)
    parts = media.m_line.split()
    if len(parts) < 4:
        raise EndpointError(f"malformed media line {m_line}: expected "
                            "'m=audio PORT RTP/AVP PAYLOAD-TYPE'")
    port_text = parts[1].split("/", 1)[0]  # PORT/COUNT: the first is the RTP port
    port = int(port_text) if _DIGITS.fullmatch(port_text) else -1
    if port == 0:
        raise EndpointError(f"the SDP's audio stream is switched off (port 0 in {m_line})")
    if not 0 < port < 65536:
        raise EndpointError(f"bad port {_quote(parts[1])} in {m_line}: must be a number 1-65535")
    transport = parts[2]
    # ffmpeg writes its SRTP streams as RTP/AVP plus a=crypto: the crypto line decides.
    crypto_key = _crypto_key(media)
    if transport.upper() not in TRANSPORTS and (
            crypto_key is None or transport.upper() not in SRTP_TRANSPORTS):
        raise EndpointError(
            f"unsupported transport {_quote(transport)} in {m_line}: deskcast speaks plain RTP "
            f"over UDP (RTP/AVP) and SRTP with a key (RTP/SAVP, a=crypto {CRYPTO_SUITE} "
            "inline:KEY), not DTLS (WebRTC) or TCP")
    pt = _pick_opus(media, parts[3:], m_line)
    encoding, _, rest = (media.attributes_for("rtpmap", pt) or "").partition("/")
    clock_text = rest.partition("/")[0].strip()
    if clock_text != str(OPUS_CLOCK):
        raise EndpointError(f"Opus over RTP always uses a {OPUS_CLOCK} Hz clock (RFC 7587), "
                            f"but payload type {pt} says {_quote(encoding + '/' + rest)}")
    params = _fmtp(media.attributes_for("fmtp", pt) or "")
    stereo = params.get("sprop-stereo", params.get("stereo", "0"))
    bitrate_text = params.get("maxaveragebitrate", "")
    bitrate = int(bitrate_text) if _DIGITS.fullmatch(bitrate_text) else None
    if bitrate is not None and not MIN_MAXAVERAGEBITRATE <= bitrate <= MAX_MAXAVERAGEBITRATE:
        bitrate = None
    address, ttl = _connection(media.connection or session.connection, m_line)
    origin = session.origin_address or SessionDescription.origin_address
    return SessionDescription(
        address=address, port=port, payload_type=pt, encoding="opus", clock_rate=OPUS_CLOCK,
        channels=2 if stereo == "1" else 1, ttl=ttl,
        session_name=session.name if session.name is not None else "",
        ptime_ms=_ptime(media.attribute("ptime") or session.attribute("ptime")),
        maxaveragebitrate=bitrate, origin_address=origin,
        session_id=session.session_id or 0, crypto_key=crypto_key)


def _crypto_key(media: _Section) -> str | None:
    """The inline key of the first ``a=crypto:TAG AES_CM_128_HMAC_SHA1_80 inline:KEY`` line
    (a ``|lifetime|MKI`` suffix is not supported: such a line is skipped)."""
    for name, value in media.attributes:
        if name != "crypto":
            continue
        parts = value.split()
        if len(parts) >= 3 and parts[1].upper() == CRYPTO_SUITE and \
                parts[2].startswith("inline:") and _INLINE_KEY.fullmatch(parts[2][7:]):
            return parts[2][7:]
    return None


def _pick_opus(media: _Section, formats: list[str], m_line: str) -> int:
    """The first payload type in the m= line whose rtpmap says opus (also 0, trx's)."""
    described: list[str] = []
    for fmt in formats:
        if not _DIGITS.fullmatch(fmt) or int(fmt) > 127:
            raise EndpointError(f"bad RTP payload type {_quote(fmt)} in {m_line}: must be 0-127")
        pt = int(fmt)
        rtpmap = media.attributes_for("rtpmap", pt)
        if rtpmap is not None:
            if rtpmap.partition("/")[0].strip().lower() == "opus":
                return pt
            described.append(f"{rtpmap} (payload type {pt})")
        elif pt in _STATIC_PAYLOAD_TYPES:
            described.append(f"{_STATIC_PAYLOAD_TYPES[pt]} (payload type {pt})")
        else:
            described.append(f"payload type {pt} without an a=rtpmap line")
    raise EndpointError(f"the SDP's audio stream is {_shorten(', '.join(described))}, not Opus: "
                        "deskcast only sends and receives Opus (a=rtpmap:PT opus/48000/2)")


def _fmtp(value: str) -> dict[str, str]:
    """``key=value;key=value`` (spaces allowed) as a dict with lower-case keys."""
    params: dict[str, str] = {}
    for item in value.split(";"):
        key, _, param = item.partition("=")
        params.setdefault(key.strip().lower(), param.strip())
    return params


def _connection(value: str | None, m_line: str) -> tuple[str, int | None]:
    """``c=IN IP4 ADDRESS[/TTL[/COUNT]]`` or ``c=IN IP6 ADDRESS[/COUNT]``: address and TTL."""
    if value is None:
        raise EndpointError(f"no connection line (c=) for {m_line}: the SDP does not say "
                            "which address the stream is sent to")
    parts = value.split()
    if len(parts) != 3 or parts[0].upper() != "IN" or parts[1].upper() not in ("IP4", "IP6"):
        raise EndpointError(f"unsupported connection line {_quote('c=' + value)}: expected "
                            "'c=IN IP4 ADDRESS' or 'c=IN IP6 ADDRESS'")
    address, *suffixes = parts[2].split("/")
    _check_address(address, "address in the c= line")
    ip = _ip(address)
    ttl = None
    if parts[1].upper() == "IP4" and ip is not None and ip.is_multicast and suffixes:
        if not _DIGITS.fullmatch(suffixes[0]) or int(suffixes[0]) > 255:
            raise EndpointError(f"bad TTL in {_quote('c=' + value)}: must be a number 0-255")
        ttl = int(suffixes[0])
    return address, ttl


def _ptime(value: str | None) -> float | None:
    if value is None or not _DECIMAL.fullmatch(value):
        return None
    ms = float(value)
    return ms if 0 < ms <= MAX_PTIME_MS else None


# --- helpers ---------------------------------------------------------------------------------

def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _check_address(address: str, what: str) -> None:
    if not _ADDRESS_CHARS.fullmatch(address) or (
            _ip(address) is None and not _HOSTNAME.fullmatch(address)):
        raise EndpointError(f"bad {what} {_quote(address)}: give an IPv4 or IPv6 address or "
                            "a host name")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 1] + "…"


def _quote(text: str) -> str:
    """``text`` for an error message: quoted, on one line, not too long."""
    return repr(_shorten(text))


def _family(address: str) -> str:
    return "IP6" if isinstance(_ip(address), ipaddress.IPv6Address) else "IP4"


def _format_ms(ms: float) -> str:
    """``20``, ``2.5``: exact (it reads back as the same float), never with an exponent."""
    text = format(Decimal(repr(ms)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
