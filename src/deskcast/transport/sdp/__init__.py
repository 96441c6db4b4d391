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

:mod:`~deskcast.transport.sdp.description` holds the description and writes it,
:mod:`~deskcast.transport.sdp.parse` reads one.
"""

from deskcast.transport.sdp.description import (
    CRYPTO_SUITE,
    DEFAULT_MULTICAST_TTL,
    OPUS_CLOCK,
    SRTP_TRANSPORTS,
    TRANSPORTS,
    SessionDescription,
    write_sdp,
)
from deskcast.transport.sdp.parse import parse_sdp

__all__ = ["CRYPTO_SUITE", "DEFAULT_MULTICAST_TTL", "OPUS_CLOCK", "SRTP_TRANSPORTS", "TRANSPORTS",
           "SessionDescription", "parse_sdp", "write_sdp"]
