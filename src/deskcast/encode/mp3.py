"""MP3 encoding through libmp3lame, cut into whole, self-contained frames for HTTP streaming.

libmp3lame is the system's, called through ctypes (Debian: libmp3lame0, which ffmpeg depends on);
without it, the copy in PyAV's wheel through PyAV, at several times the CPU.

The encoder runs CBR with the bit reservoir off: a Layer III frame may normally borrow bytes from
the frames before it (``main_data_begin`` in its side information points back into them), which
makes a frame undecodable without its predecessors. With the reservoir off ``main_data_begin`` is
always 0, so every frame decodes on its own and a new listener can join at any frame boundary.

:class:`Mp3Encoder` returns exact MP3 frames (4-byte header included), never an ID3 tag, a
Xing/LAME info frame or a partial frame; :func:`split_frames` is the parser that guarantees it and
is also usable on any MPEG audio byte stream.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass

import av
import numpy as np

from deskcast.encode.sync import split_synced
from deskcast.errors import ConfigError
from deskcast.media import AudioFormat, FloatArray, PcmBlock, SampleFormat, convert

logger = logging.getLogger(__name__)

MP3_RATES = (48000, 44100, 32000)
"""MPEG-1 sample rates (the only ones this encoder produces: 1152-sample frames)."""

_VERSIONS = {0b11: "1", 0b10: "2", 0b00: "2.5"}
"""Header version bits -> MPEG version (0b01 is reserved)."""
_LAYERS = {0b11: 1, 0b10: 2, 0b01: 3}
"""Header layer bits -> layer (0b00 is reserved)."""
_RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
_BITRATES: dict[tuple[bool, int], tuple[int, ...]] = {
    # (MPEG-1?, layer) -> kbit/s for bitrate index 1..14 (0 is "free format", 15 is invalid)
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
MP3_BITRATES = _BITRATES[True, 3]
"""The CBR bitrates (kbit/s) an MPEG-1 Layer III frame header can signal."""

HEADER_BYTES = 4


@dataclass(frozen=True)
class FrameHeader:
    """The fields of a 4-byte MPEG audio frame header that matter for cutting and decoding."""

    version: str
    """MPEG version: "1", "2" or "2.5"."""
    layer: int
    bitrate_kbps: int
    sample_rate: int
    padding: bool
    channels: int
    protected: bool
    """A 16-bit CRC follows the header."""
    frame_length: int
    """Bytes in the whole frame, header included."""

    @property
    def samples(self) -> int:
        """PCM frames per channel that the frame decodes to."""
        if self.layer == 1:
            return 384
        if self.layer == 3 and self.version != "1":
            return 576
        return 1152


def parse_frame_header(data: bytes) -> FrameHeader:
    """Parse the MPEG audio frame header at the start of ``data``; ValueError if it is not one.

    Free-format (bitrate index 0) headers are rejected: their length cannot be known from the
    header alone.
    """
    if len(data) < HEADER_BYTES:
        raise ValueError(f"an MPEG audio header is 4 bytes, got {len(data)}")
    b0, b1, b2, b3 = data[0], data[1], data[2], data[3]
    if b0 != 0xFF or b1 & 0xE0 != 0xE0:
        raise ValueError("no MPEG audio frame sync")
    version = _VERSIONS.get((b1 >> 3) & 0b11)
    if version is None:
        raise ValueError("reserved MPEG version")
    layer = _LAYERS.get((b1 >> 1) & 0b11)
    if layer is None:
        raise ValueError("reserved MPEG layer")
    protected = not b1 & 1
    bitrate_index = b2 >> 4
    if bitrate_index == 0:
        raise ValueError("free-format bitrate is not supported")
    if bitrate_index == 15:
        raise ValueError("invalid bitrate index")
    rate_index = (b2 >> 2) & 0b11
    if rate_index == 3:
        raise ValueError("reserved sample rate index")
    if b3 & 0b11 == 0b10:
        raise ValueError("reserved emphasis")
    mpeg1 = version == "1"
    bitrate_kbps = _BITRATES[mpeg1, layer][bitrate_index - 1]
    sample_rate = _RATES[version][rate_index]
    padding = bool((b2 >> 1) & 1)
    channels = 1 if b3 >> 6 == 0b11 else 2
    if layer == 1:
        length = (12 * bitrate_kbps * 1000 // sample_rate + padding) * 4
    elif layer == 3 and not mpeg1:
        length = 72 * bitrate_kbps * 1000 // sample_rate + padding
    else:
        length = 144 * bitrate_kbps * 1000 // sample_rate + padding
    return FrameHeader(version, layer, bitrate_kbps, sample_rate, padding, channels, protected,
                       length)


def side_info_main_data_begin(frame: bytes) -> int:
    """The Layer III ``main_data_begin``: how many bytes of its main data the frame takes from
    the frames before it (0 = it decodes on its own).

    9 bits for MPEG-1, 8 bits for MPEG-2/2.5, right after the header and the optional CRC.
    """
    header = parse_frame_header(frame)
    if header.layer != 3:
        raise ValueError(f"main_data_begin exists in Layer III only, not Layer {header.layer}")
    at = HEADER_BYTES + (2 if header.protected else 0)
    if len(frame) < at + 2:
        raise ValueError("frame too short for its side information")
    if header.version == "1":
        return (frame[at] << 1) | (frame[at + 1] >> 7)
    return frame[at]


def _consistent(a: FrameHeader, b: FrameHeader) -> bool:
    return a.version == b.version and a.layer == b.layer and a.sample_rate == b.sample_rate


def split_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """Cut ``data`` into whole MPEG audio frames; returns (frames, remainder).

    Garbage, ID3 tags and broken frames are skipped; a frame is trusted right after one of the
    same version, layer and rate, else confirmed by the header after it
    (:func:`deskcast.encode.sync.split_synced`). The remainder starts where a frame may begin
    that is not complete yet: prepend it to the next chunk of the stream.
    """
    return split_synced(data, HEADER_BYTES, parse_frame_header, _consistent)


LAME_LIBRARY = "libmp3lame.so.0"
"""The system's libmp3lame (Debian: libmp3lame0, which ffmpeg depends on)."""
_LAME_JOINT_STEREO, _LAME_MONO = 1, 3
"""``MPEG_mode`` values of lame.h."""
LAME_FLUSH_BYTES = 7200
"""lame.h: the output buffer needs 1.25 x the samples + 7200 bytes; 7200 hold a flush."""


class _Lame:
    """libmp3lame called directly through ctypes, fed the block's own interleaved samples.

    The copy bundled with PyAV's wheels is built without its SIMD code and reached through
    PyAV's frame, resampler and packet objects: ~40-55 ms of CPU per second of 48 kHz stereo
    against ~5 ms for the system library called like this (no numpy conversion, no copies but
    the encoded bytes). ctypes releases the GIL for the call.
    """

    def __init__(self, lib: ctypes.CDLL, fmt: AudioFormat, bitrate_kbps: int,
                 reservoir: bool) -> None:
        self.fmt = fmt
        self._lib = lib
        handle = lib.lame_init()
        if not handle:
            raise ConfigError("libmp3lame: lame_init failed")
        self._handle = ctypes.c_void_p(handle)
        settings = [
            ("lame_set_num_channels", fmt.channels),
            ("lame_set_in_samplerate", fmt.rate),
            ("lame_set_out_samplerate", fmt.rate),
            ("lame_set_mode", _LAME_MONO if fmt.channels == 1 else _LAME_JOINT_STEREO),
            ("lame_set_VBR", 0),  # vbr_off: CBR
            ("lame_set_brate", bitrate_kbps),
            ("lame_set_bWriteVbrTag", 0),  # no Xing/LAME info frame
            ("lame_set_disable_reservoir", 0 if reservoir else 1),
        ]
        for name, value in settings:
            if getattr(lib, name)(self._handle, value) < 0:
                self.close()
                raise ConfigError(f"libmp3lame: {name}({value}) failed")
        if lib.lame_init_params(self._handle) < 0:
            self.close()
            raise ConfigError(f"libmp3lame cannot encode {fmt} at {bitrate_kbps} kbit/s")
        stereo = fmt.channels == 2
        self._encode = {
            SampleFormat.S16LE: (lib.lame_encode_buffer_interleaved if stereo
                                 else lib.lame_encode_buffer),
            SampleFormat.S32LE: (lib.lame_encode_buffer_interleaved_int if stereo
                                 else lib.lame_encode_buffer_int),
            SampleFormat.F32LE: (lib.lame_encode_buffer_interleaved_ieee_float if stereo
                                 else lib.lame_encode_buffer_ieee_float),
        }[fmt.sample]
        self._stereo = stereo
        self._out = ctypes.create_string_buffer(LAME_FLUSH_BYTES)

    def encode(self, data: bytes) -> bytes:
        frames = len(data) // self.fmt.frame_bytes
        if not frames:
            return b""
        need = frames * 5 // 4 + LAME_FLUSH_BYTES  # lame.h's worst case
        if len(self._out) < need:
            self._out = ctypes.create_string_buffer(need)
        if self._stereo:
            n = self._encode(self._handle, data, frames, self._out, len(self._out))
        else:  # left and right: a mono encoder reads only the left
            n = self._encode(self._handle, data, data, frames, self._out, len(self._out))
        if n < 0:
            raise RuntimeError(f"libmp3lame: encoding failed ({n})")
        return ctypes.string_at(self._out, n) if n else b""

    def flush(self) -> bytes:
        n = self._lib.lame_encode_flush(self._handle, self._out, len(self._out))
        if n < 0:
            raise RuntimeError(f"libmp3lame: flush failed ({n})")
        return ctypes.string_at(self._out, n)

    def close(self) -> None:
        if self._handle:
            self._lib.lame_close(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self) -> None:
        self.close()



@functools.cache
def lame_library() -> ctypes.CDLL | None:
    """The system libmp3lame with the prototypes used here, or None if it is not installed."""
    try:
        lib = ctypes.CDLL(LAME_LIBRARY)
    except OSError as err:
        logger.info("no system libmp3lame (%s): MP3 goes through PyAV's bundled copy, which "
                    "costs several times the CPU", err)
        return None
    ptr, i32, buf = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    lib.lame_init.restype = ptr
    lib.lame_init.argtypes = []
    for name in ("lame_set_num_channels", "lame_set_in_samplerate", "lame_set_out_samplerate",
                 "lame_set_mode", "lame_set_VBR", "lame_set_brate", "lame_set_bWriteVbrTag",
                 "lame_set_disable_reservoir"):
        getattr(lib, name).argtypes = [ptr, i32]
        getattr(lib, name).restype = i32
    for name in ("lame_init_params", "lame_close"):
        getattr(lib, name).argtypes = [ptr]
        getattr(lib, name).restype = i32
    for name in ("lame_encode_buffer_interleaved", "lame_encode_buffer_interleaved_int",
                 "lame_encode_buffer_interleaved_ieee_float"):
        getattr(lib, name).argtypes = [ptr, buf, i32, buf, i32]
        getattr(lib, name).restype = i32
    for name in ("lame_encode_buffer", "lame_encode_buffer_int", "lame_encode_buffer_ieee_float"):
        getattr(lib, name).argtypes = [ptr, buf, buf, i32, buf, i32]
        getattr(lib, name).restype = i32
    lib.lame_encode_flush.argtypes = [ptr, buf, i32]
    lib.lame_encode_flush.restype = i32
    return lib


class _PyAv:
    """libmp3lame through PyAV (its wheel's own copy): the fallback without a system one."""

    def __init__(self, fmt: AudioFormat, bitrate_kbps: int, reservoir: bool) -> None:
        self.fmt = fmt
        self._layout = "mono" if fmt.channels == 1 else "stereo"
        ctx = av.CodecContext.create("libmp3lame", "w")
        ctx.sample_rate = fmt.rate
        ctx.layout = self._layout
        ctx.format = "fltp"
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.options = {"reservoir": "1" if reservoir else "0"}
        ctx.open()
        self._ctx = ctx
        self._pcm: FloatArray = np.zeros((fmt.channels, 0), dtype=np.float32)  # planar, pending
        self._pts = 0
        self.frame_samples = 1152

    def encode(self, data: bytes) -> bytes:
        if data:
            block = PcmBlock(data, self.fmt)
            self._pcm = np.concatenate([self._pcm, block.as_float().T], axis=1)
        n = self.frame_samples
        whole = self._pcm.shape[1] - self._pcm.shape[1] % n
        out = b"".join(self._send(self._pcm[:, start:start + n])
                       for start in range(0, whole, n))
        self._pcm = self._pcm[:, whole:]
        return out

    def flush(self) -> bytes:
        out = self._send(self._pcm) if self._pcm.shape[1] else b""
        self._pcm = self._pcm[:, :0]
        return out + b"".join(bytes(p) for p in self._ctx.encode(None))

    def _send(self, planar: FloatArray) -> bytes:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar, dtype=np.float32),
                                           format="fltp", layout=self._layout)
        frame.sample_rate = self.fmt.rate
        frame.pts = self._pts
        self._pts += planar.shape[1]
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


class Mp3Encoder:
    """CBR MPEG-1 Layer III through libmp3lame with the bit reservoir off.

    Takes blocks of any size (any sample format at the encoder's rate and channel count) and
    returns the MP3 frames completed so far, each one ``bytes`` object holding exactly one frame.
    The system's libmp3lame is called directly when it is installed, else PyAV's copy
    (``backend`` "lame" or "pyav" forces one, for tests and comparisons).
    """

    def __init__(self, fmt: AudioFormat, *, bitrate_kbps: int = 128,
                 reservoir: bool = False, backend: str | None = None) -> None:
        """``reservoir=True`` is only for tests and comparisons: frames then depend on earlier
        ones and a listener cannot join at any frame."""
        if fmt.rate not in MP3_RATES:
            raise ConfigError(f"MP3 cannot encode {fmt.rate} Hz: use --rate "
                              + ", ".join(map(str, MP3_RATES)))
        if fmt.channels > 2:
            raise ConfigError(f"MP3 carries 1 or 2 channels, not {fmt.channels}")
        if bitrate_kbps not in MP3_BITRATES:
            raise ConfigError(f"MP3 bitrate {bitrate_kbps} kbit/s is not one of "
                              + ", ".join(map(str, MP3_BITRATES)))
        if backend not in (None, "lame", "pyav"):
            raise ValueError(f"unknown MP3 backend {backend!r}")
        self.fmt = fmt
        self.bitrate_kbps = bitrate_kbps
        self.frame_samples = 1152
        self.frame_duration_s = self.frame_samples / fmt.rate
        lib = lame_library() if backend != "pyav" else None
        if backend == "lame" and lib is None:
            raise ConfigError(f"no system libmp3lame ({LAME_LIBRARY})")
        self._codec: _Lame | _PyAv = (_Lame(lib, fmt, bitrate_kbps, reservoir) if lib is not None
                                      else _PyAv(fmt, bitrate_kbps, reservoir))
        self.backend = "lame" if lib is not None else "pyav"
        self._bytes = b""  # encoded bytes not yet returned as whole frames
        self._flushed = False
        logger.debug("mp3 encoder (%s): %s, %d kbit/s CBR, reservoir %s", self.backend, fmt,
                     bitrate_kbps, "on" if reservoir else "off")

    def describe(self) -> str:
        return f"MP3 {self.bitrate_kbps} kbit/s CBR"

    def encode(self, block: PcmBlock) -> list[bytes]:
        """The MP3 frames completed by ``block`` (zero or more; any block size)."""
        if self._flushed:
            raise ValueError("the MP3 encoder has been flushed")
        if block.fmt != self.fmt:
            if block.fmt.rate != self.fmt.rate or block.fmt.channels != self.fmt.channels:
                raise ValueError(f"MP3 encoder is set up for {self.fmt}, got a block of "
                                 f"{block.fmt}")
            block = PcmBlock(convert(block.data, block.fmt, self.fmt), self.fmt, block.pts)
        data = self._codec.encode(block.data)
        return self._collect(data) if data else []

    def flush(self) -> list[bytes]:
        """Encode what is pending (the last frame padded with silence) and drain the encoder."""
        if self._flushed:
            return []
        self._flushed = True
        out = self._collect(self._codec.flush())
        if self._bytes:
            logger.warning("mp3 encoder: dropping %d bytes that are not a whole frame",
                           len(self._bytes))
            self._bytes = b""
        return out

    def _collect(self, data: bytes) -> list[bytes]:
        frames, self._bytes = split_frames(self._bytes + data)
        return frames
