"""ICY (SHOUTcast) metadata: ``StreamTitle='…';`` blocks interleaved every ``metaint`` bytes.

A client that sends ``Icy-MetaData: 1`` gets an ``icy-metaint: N`` response header; then after
every N bytes of audio comes one length byte L and L * 16 bytes of metadata (NUL-padded), L = 0
when nothing changed. The title is sent in the first block and whenever it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_METAINT = 16000
"""Audio bytes between metadata blocks (16000: 1 s at 128 kbit/s, what Icecast uses)."""
MAX_BLOCK = 255 * 16
"""The longest metadata block (its length byte counts 16-byte units)."""


def metadata_block(title: str) -> bytes:
    """A length byte and ``StreamTitle='title';`` padded to 16 bytes (cut to fit 4080 bytes).

    A quote in the title cannot be escaped in ICY, so it is replaced by a typographic one.
    """
    text = title.replace("'", "\u2019").replace("\x00", "")
    prefix, suffix = b"StreamTitle='", b"';"
    body = text.encode("utf-8")
    room = MAX_BLOCK - len(prefix) - len(suffix)
    if len(body) > room:
        body = body[:room].decode("utf-8", "ignore").encode("utf-8")
    payload = prefix + body + suffix
    units = -(-len(payload) // 16)
    return bytes([units]) + payload.ljust(units * 16, b"\x00")


IcyCache = dict[tuple[int, int, str | None, str], tuple[bytes, int, str | None]]
"""(metaint, bytes to the next block, title last sent, title now) -> (bytes out, and those two
after)."""


@dataclass
class IcyInserter:
    """Interleaves metadata blocks into one listener's byte stream."""

    metaint: int = DEFAULT_METAINT
    _left: int = field(init=False)
    _sent_title: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.metaint <= 0:
            raise ValueError("metaint must be > 0 bytes")
        self._left = self.metaint

    def feed(self, data: bytes, title: str) -> bytes:
        """``data`` with a metadata block after every ``metaint`` bytes of audio."""
        out = bytearray()
        i = 0
        while len(data) - i >= self._left:
            out += data[i:i + self._left]
            i += self._left
            self._left = self.metaint
            if title != self._sent_title:
                out += metadata_block(title)
                self._sent_title = title
            else:
                out += b"\x00"
        out += data[i:]
        self._left -= len(data) - i
        return bytes(out)

    def feed_shared(self, data: bytes, title: str, cache: IcyCache) -> bytes:
        """:meth:`feed`, shared between the inserters at the same point of the same ``data``
        through ``cache`` (one per ``data``): the bytes are built once for them all."""
        key = (self.metaint, self._left, self._sent_title, title)
        hit = cache.get(key)
        if hit is None:
            out = self.feed(data, title)
            cache[key] = hit = (out, self._left, self._sent_title)
            return out
        out, self._left, self._sent_title = hit
        return out


@dataclass
class IcyBlock:
    title: str | None
    """The StreamTitle, or None for an empty block."""
    offset: int
    """Audio bytes before this block."""


def split_icy(data: bytes, metaint: int) -> tuple[bytes, list[IcyBlock]]:
    """Undo :class:`IcyInserter`: (audio bytes, metadata blocks). ValueError if malformed."""
    audio = bytearray()
    blocks: list[IcyBlock] = []
    i = 0
    while i < len(data):
        take = data[i:i + metaint]
        audio += take
        i += len(take)
        if len(take) < metaint or i >= len(data):
            break
        length = data[i] * 16
        raw = data[i + 1:i + 1 + length]
        if len(raw) < length:
            break
        i += 1 + length
        title = None
        if length:
            text = raw.rstrip(b"\x00").decode("utf-8")
            if not (text.startswith("StreamTitle='") and text.endswith("';")):
                raise ValueError(f"not an ICY StreamTitle block: {text[:40]!r}")
            title = text[len("StreamTitle='"):-2]
        blocks.append(IcyBlock(title, len(audio)))
    return bytes(audio), blocks
