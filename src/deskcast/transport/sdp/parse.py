"""Reading an SDP (:func:`parse_sdp`): split into the session and its media parts, then the
first usable Opus audio stream described."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deskcast.errors import EndpointError
from deskcast.transport.sdp.description import (
    CRYPTO_SUITE,
    INLINE_KEY,
    MAX_MAXAVERAGEBITRATE,
    MAX_PTIME_MS,
    MIN_MAXAVERAGEBITRATE,
    OPUS_CLOCK,
    SRTP_TRANSPORTS,
    TRANSPORTS,
    SessionDescription,
    as_ip,
    check_address,
    quote,
    shorten,
)

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
_LINE = re.compile(r"([a-z])=(.*)")


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
        check_address(parts[5], "origin address")
    except EndpointError:
        return
    session.origin_address = parts[5]


def _describe(session: _Session, media: _Section) -> SessionDescription:
    m_line = quote("m=" + media.m_line)
    parts = media.m_line.split()
    if len(parts) < 4:
        raise EndpointError(f"malformed media line {m_line}: expected "
                            "'m=audio PORT RTP/AVP PAYLOAD-TYPE'")
    port_text = parts[1].split("/", 1)[0]  # PORT/COUNT: the first is the RTP port
    port = int(port_text) if _DIGITS.fullmatch(port_text) else -1
    if port == 0:
        raise EndpointError(f"the SDP's audio stream is switched off (port 0 in {m_line})")
    if not 0 < port < 65536:
        raise EndpointError(f"bad port {quote(parts[1])} in {m_line}: must be a number 1-65535")
    transport = parts[2]
    # ffmpeg writes its SRTP streams as RTP/AVP plus a=crypto: the crypto line decides.
    crypto_key = _crypto_key(media)
    if transport.upper() not in TRANSPORTS and (
            crypto_key is None or transport.upper() not in SRTP_TRANSPORTS):
        raise EndpointError(
            f"unsupported transport {quote(transport)} in {m_line}: deskcast speaks plain RTP "
            f"over UDP (RTP/AVP) and SRTP with a key (RTP/SAVP, a=crypto {CRYPTO_SUITE} "
            "inline:KEY), not DTLS (WebRTC) or TCP")
    pt = _pick_opus(media, parts[3:], m_line)
    encoding, _, rest = (media.attributes_for("rtpmap", pt) or "").partition("/")
    clock_text = rest.partition("/")[0].strip()
    if clock_text != str(OPUS_CLOCK):
        raise EndpointError(f"Opus over RTP always uses a {OPUS_CLOCK} Hz clock (RFC 7587), "
                            f"but payload type {pt} says {quote(encoding + '/' + rest)}")
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
                parts[2].startswith("inline:") and INLINE_KEY.fullmatch(parts[2][7:]):
            return parts[2][7:]
    return None


def _pick_opus(media: _Section, formats: list[str], m_line: str) -> int:
    """The first payload type in the m= line whose rtpmap says opus (also 0, trx's)."""
    described: list[str] = []
    for fmt in formats:
        if not _DIGITS.fullmatch(fmt) or int(fmt) > 127:
            raise EndpointError(f"bad RTP payload type {quote(fmt)} in {m_line}: must be 0-127")
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
    raise EndpointError(f"the SDP's audio stream is {shorten(', '.join(described))}, not Opus: "
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
        raise EndpointError(f"unsupported connection line {quote('c=' + value)}: expected "
                            "'c=IN IP4 ADDRESS' or 'c=IN IP6 ADDRESS'")
    address, *suffixes = parts[2].split("/")
    check_address(address, "address in the c= line")
    ip = as_ip(address)
    ttl = None
    if parts[1].upper() == "IP4" and ip is not None and ip.is_multicast and suffixes:
        if not _DIGITS.fullmatch(suffixes[0]) or int(suffixes[0]) > 255:
            raise EndpointError(f"bad TTL in {quote('c=' + value)}: must be a number 0-255")
        ttl = int(suffixes[0])
    return address, ttl


def _ptime(value: str | None) -> float | None:
    if value is None or not _DECIMAL.fullmatch(value):
        return None
    ms = float(value)
    return ms if 0 < ms <= MAX_PTIME_MS else None
