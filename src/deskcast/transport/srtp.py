"""SRTP/SRTCP with a pre-shared key (RFC 3711, profile ``AES_CM_128_HMAC_SHA1_80``) through
libsrtp (the ``pylibsrtp`` binding): no crypto of our own.

The key file holds the 30-byte master key + salt in base64, the same 40 characters ffmpeg takes
as ``-srtp_out_params``/``-srtp_in_params`` and SDP carries as
``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY``. Lines starting with ``#`` are comments.
It must be private to its owner (mode 0600).

Every RTP packet (audio and FEC repair) is encrypted and gets a 10-byte authentication tag;
every RTCP packet (sender and receiver reports) is encrypted and gets a 4-byte index and the
10-byte tag. Each SSRC has its own context and replay window (libsrtp's "any inbound" and
"any outbound" templates). Replay protection lasts as long as the receiving process: a stream
recorded today can be replayed to a receiver started tomorrow, so give a new key
(``deskcast keygen``) to whoever should stop being able to send.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pylibsrtp

from deskcast.errors import ConfigError

logger = logging.getLogger(__name__)

SUITE = "AES_CM_128_HMAC_SHA1_80"
"""The crypto suite's name in SDP and in ffmpeg's ``-srtp_out_suite``."""
KEY_BYTES = 30
"""Master key (16 bytes, AES-128) + master salt (14 bytes)."""
RTP_OVERHEAD = 10
"""Bytes SRTP adds to every RTP packet: the 80-bit HMAC-SHA1 tag."""
RTCP_OVERHEAD = 14
"""Bytes SRTCP adds to every RTCP packet: the E flag + 31-bit index, and the tag."""
MAX_PACKET = 1500 - pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN
"""The longest packet the binding protects (its buffer is 1500 bytes, trailer included)."""
MAX_STREAMS = 16
"""Inbound SSRCs whose contexts are kept (a restarted sender gets a new SSRC); the oldest
goes when another one authenticates."""

_REPLAY_ERRORS = frozenset(pylibsrtp.ERRORS[i] for i in (9, 10))
"""srtp_err_status_replay_fail and srtp_err_status_replay_old (libsrtp's srtp.h)."""


class SrtpError(Exception):
    """An incoming packet that is not played: ``reason`` is ``"auth"`` or ``"replay"``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SrtpKey:
    """30 bytes of master key + salt; ``str()`` never shows them."""

    material: bytes
    origin: str = field(default="generated", compare=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ConfigError(f"{self.origin}: an SRTP key is {KEY_BYTES} bytes, not "
                              f"{len(self.material)}")

    def __repr__(self) -> str:
        return f"SrtpKey(origin={self.origin!r})"

    @property
    def inline(self) -> str:
        """The base64 text of the key file, ffmpeg's ``-srtp_*_params`` and SDP's inline:."""
        return base64.b64encode(self.material).decode("ascii")

    @classmethod
    def generate(cls) -> SrtpKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def parse(cls, text: str, origin: str = "key") -> SrtpKey:
        """The key in a key file's text: one base64 line, blank and ``#`` lines ignored."""
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if len(lines) != 1:
            raise ConfigError(f"{origin}: expected one line of base64 (the {KEY_BYTES}-byte "
                              f"SRTP key), found {len(lines)}: make a new one with "
                              "`deskcast keygen`")
        value = lines[0].removeprefix("inline:")
        try:
            material = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{origin}: the key is not valid base64: make a new one with "
                              "`deskcast keygen`") from None
        if len(material) != KEY_BYTES:
            raise ConfigError(f"{origin}: the key is {len(material)} bytes, SRTP "
                              f"{SUITE} needs {KEY_BYTES} (40 base64 characters): make a new "
                              "one with `deskcast keygen`")
        return cls(material, origin)


def load_key(path: str | Path) -> SrtpKey:
    """Read a key file, refusing one that others could read."""
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist: make one with "
                          f"`deskcast keygen {path}`") from None
    except OSError as err:
        raise ConfigError(f"cannot read key file {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(f"key file {path} can be read by others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}): run `chmod 600 {path}`")
        raw = os.read(fd, 4096)
    except OSError as err:
        raise ConfigError(f"cannot read key file {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"key file {path}: not a text file of base64: make a new one with "
                          "`deskcast keygen`") from None
    return SrtpKey.parse(text, f"key file {path}")


def write_key_file(path: str | Path, key: SrtpKey, *, force: bool = False) -> Path:
    """Write ``key`` to a new file with mode 0600 (an existing one only with ``force``)."""
    path = Path(path).expanduser()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists: give another name, or --force to "
                          "replace it (both ends then need the new key)") from None
    except OSError as err:
        raise ConfigError(f"cannot write key file {path}: {err.strerror}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file (--force) keeps its old mode otherwise
        f.write(f"# deskcast SRTP key ({SUITE}): keep it secret, copy it to the other end\n"
                f"{key.inline}\n")
    return path


def _policy(key: SrtpKey, ssrc_type: int) -> pylibsrtp.Policy:
    return pylibsrtp.Policy(key=key.material, ssrc_type=ssrc_type,
                            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)


class SrtpSender:
    """Protects what one end sends (RTP of any SSRC, and RTCP). One thread only."""

    def __init__(self, key: SrtpKey) -> None:
        self._session = pylibsrtp.Session(_policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))

    def protect(self, packet: bytes) -> bytes:
        """Raises ValueError for a packet longer than :data:`MAX_PACKET` or one libsrtp
        refuses (a sequence number sent twice)."""
        if len(packet) > MAX_PACKET:
            raise ValueError(f"a packet of {len(packet)} bytes is too long for SRTP "
                             f"(at most {MAX_PACKET})")
        try:
            return self._session.protect(packet)
        except pylibsrtp.Error as err:
            raise ValueError(f"SRTP refused the packet: {err}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        if len(packet) > MAX_PACKET:
            raise ValueError(f"an RTCP packet of {len(packet)} bytes is too long for SRTCP")
        try:
            return self._session.protect_rtcp(packet)
        except pylibsrtp.Error as err:
            raise ValueError(f"SRTCP refused the packet: {err}") from None


class SrtpReceiver:
    """Checks and decrypts what one end receives. One thread only."""

    def __init__(self, key: SrtpKey) -> None:
        self._session = pylibsrtp.Session(_policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self._ssrcs: collections.OrderedDict[int, None] = collections.OrderedDict()

    def unprotect(self, packet: bytes) -> bytes:
        """The plain RTP packet; :class:`SrtpError` for anything not authentic or replayed."""
        return self._process(packet, rtcp=False)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._process(packet, rtcp=True)

    def _process(self, packet: bytes, *, rtcp: bool) -> bytes:
        # Shorter than a header plus the tag, or longer than the binding's buffer: never ours.
        if not 12 + RTP_OVERHEAD <= len(packet) <= 1500:
            raise SrtpError("auth", f"{len(packet)} bytes cannot be an SRTP packet")
        try:
            plain = (self._session.unprotect_rtcp(packet) if rtcp
                     else self._session.unprotect(packet))
        except pylibsrtp.Error as err:
            reason = "replay" if str(err) in _REPLAY_ERRORS else "auth"
            raise SrtpError(reason, str(err)) from None
        except ValueError as err:
            raise SrtpError("auth", str(err)) from None
        self._remember(int.from_bytes(packet[4:8] if rtcp else packet[8:12], "big"))
        return plain

    def _remember(self, ssrc: int) -> None:
        """Keep the contexts of the last :data:`MAX_STREAMS` SSRCs (each authenticated)."""
        if ssrc in self._ssrcs:
            self._ssrcs.move_to_end(ssrc)
            return
        self._ssrcs[ssrc] = None
        while len(self._ssrcs) > MAX_STREAMS:
            old, _ = self._ssrcs.popitem(last=False)
            try:
                self._session.remove_stream(old)
            except pylibsrtp.Error:
                logger.debug("no SRTP context to remove for ssrc %08x", old)
