"""The PCM model shared by every stage.

Glossary
--------
sample
    One number for one channel at one instant.
frame
    One sample for every channel at one instant (``AudioFormat.frame_bytes`` bytes).
block
    A fixed number of frames (:class:`PcmBlock`): the unit that flows from a source to a sink.
    Blocks of one stream all have the same size; ``pts`` counts frames since the stream began.
packet
    An encoded block (later stages: Opus, MP3).
sink timing
    What a sink says, before each block is taken for it, about when that block will be heard
    (:class:`SinkTiming`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from deskcast.errors import ConfigError

FloatArray = npt.NDArray[np.float32]


class SampleFormat(enum.Enum):
    """Interleaved little-endian sample encodings."""

    S16LE = "s16le"
    S32LE = "s32le"
    F32LE = "f32le"

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return _DTYPES[self]

    @property
    def width(self) -> int:
        """Bytes per sample."""
        return _DTYPES[self].itemsize

    @classmethod
    def parse(cls, text: str) -> SampleFormat:
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(f.value for f in cls)
            raise ConfigError(f"unknown sample format {text!r}: use one of {names}") from None


_DTYPES: dict[SampleFormat, np.dtype[np.generic]] = {
    SampleFormat.S16LE: np.dtype("<i2"), SampleFormat.S32LE: np.dtype("<i4"),
    SampleFormat.F32LE: np.dtype("<f4")}
_INT_SCALE = {SampleFormat.S16LE: 32768.0, SampleFormat.S32LE: 2147483648.0}


@dataclass(frozen=True)
class AudioFormat:
    """Rate, channel count and sample encoding of a PCM stream.

    The default, 48 kHz stereo s16le, is what Opus runs at natively, what the snd-aloop hub is
    fixed to, and what PulseAudio/PipeWire convert to for free.
    """

    rate: int = 48000
    channels: int = 2
    sample: SampleFormat = SampleFormat.S16LE

    def __post_init__(self) -> None:
        if not 8000 <= self.rate <= 384000:
            raise ConfigError(f"sample rate {self.rate} Hz is out of range: use 8000-384000")
        if not 1 <= self.channels <= 8:
            raise ConfigError(f"{self.channels} channels is out of range: use 1-8")

    @property
    def frame_bytes(self) -> int:
        return self.channels * _DTYPES[self.sample].itemsize

    def frames_for_ms(self, ms: float) -> int:
        """Frames in ``ms`` milliseconds, at least one."""
        return max(1, round(self.rate * ms / 1000.0))

    def seconds(self, frames: int) -> float:
        return frames / self.rate

    def __str__(self) -> str:
        return f"{self.rate} Hz, {self.channels} ch, {self.sample.value}"


@dataclass(frozen=True)
class PcmBlock:
    """A block of interleaved PCM frames; immutable so it can be shared between consumers."""

    data: bytes
    fmt: AudioFormat
    pts: int = 0
    """Index of the block's first frame since the start of the stream."""
    meta: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def frames(self) -> int:
        return len(self.data) // self.fmt.frame_bytes

    @property
    def duration(self) -> float:
        """Seconds of audio in the block."""
        return self.frames / self.fmt.rate

    def samples(self) -> npt.NDArray[np.generic]:
        """A read-only (frames, channels) view of the samples in their own dtype."""
        return np.frombuffer(self.data, dtype=self.fmt.sample.dtype).reshape(-1, self.fmt.channels)

    def as_float(self) -> FloatArray:
        """The samples as float32 in [-1, 1), shape (frames, channels)."""
        return to_float(self.samples(), self.fmt.sample)

    @classmethod
    def from_float(cls, x: npt.NDArray[np.floating], fmt: AudioFormat, pts: int = 0) -> PcmBlock:
        """Build a block from float samples shaped (frames, channels) in [-1, 1]."""
        return cls(from_float(x, fmt.sample).tobytes(), fmt, pts)


@dataclass(frozen=True)
class SinkTiming:
    """When the next block written to a sink will be heard, as the sink tells it.

    The pump asks the sink (:meth:`deskcast.playback.base.Sink.timing`) before each read of a
    source that is not clocked and hands the answer to that source
    (:meth:`deskcast.capture.base.Source.sink_timing`): one call each way, the only path by
    which the sink's clock reaches the source. The network receiver measures its delay and the
    sink's clock with it; a playout schedule (play this sample at time T) starts from
    :attr:`delay_s`: the next sample written is heard that long after the call returned.
    """

    clocked: bool
    """The sink's device clock paces the loop (its ``write()`` blocks while the device is
    full): a file or generator source then does not pace itself too (one clock, not two)."""
    queued_s: float | None
    """Written but not yet heard, measured now, in seconds (device buffer and sound server
    included); None when the sink cannot tell (a file, a pipe, a device being reopened)."""
    latency_s: float = 0.0
    """What the sink adds by design, declared by the sink itself (a device: its buffer,
    ``--buffer-ms``; 0 for a file, a pipe or the network): the estimate when it cannot
    measure."""

    @property
    def delay_s(self) -> float:
        """From now until the next sample written is heard: measured when the sink can tell,
        its declared latency otherwise."""
        return self.latency_s if self.queued_s is None else self.queued_s


def to_float(x: npt.NDArray[np.generic], sample: SampleFormat) -> FloatArray:
    if sample is SampleFormat.F32LE:
        return np.asarray(x, dtype=np.float32)
    return (np.asarray(x, dtype=np.float32) / np.float32(_INT_SCALE[sample])).astype(np.float32)


def from_float(x: npt.NDArray[np.floating], sample: SampleFormat) -> npt.NDArray[np.generic]:
    """Encode float samples, clipping to the format's range (no wrap-around on overload)."""
    if sample is SampleFormat.F32LE:
        clipped: npt.NDArray[np.generic] = np.clip(x, -1.0, 1.0).astype("<f4")
        return clipped
    scale = _INT_SCALE[sample]
    y = np.clip(np.rint(np.asarray(x, dtype=np.float64) * scale), -scale, scale - 1)
    return y.astype(sample.dtype)


def remix(x: npt.NDArray[np.floating], channels: int) -> FloatArray:
    """Map (frames, n) to (frames, channels): mono is copied out, more is averaged down."""
    have = x.shape[1]
    if have == channels:
        return np.asarray(x, dtype=np.float32)
    if have == 1:
        return np.repeat(x, channels, axis=1).astype(np.float32)
    if channels == 1:
        return np.asarray(x.mean(axis=1, keepdims=True), dtype=np.float32)
    # n -> m (both > 1): keep the first min(n, m) channels, fill the rest with the mean.
    out = np.empty((x.shape[0], channels), dtype=np.float32)
    keep = min(have, channels)
    out[:, :keep] = x[:, :keep]
    if channels > keep:
        out[:, keep:] = x.mean(axis=1, keepdims=True)
    return out


def convert(data: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    """Convert sample format and channel count (not rate) of interleaved PCM bytes."""
    if src.rate != dst.rate:
        raise ValueError(f"convert() does not resample ({src.rate} -> {dst.rate} Hz)")
    if src == dst:
        return data
    x = np.frombuffer(data, dtype=src.sample.dtype).reshape(-1, src.channels)
    y = remix(to_float(x, src.sample), dst.channels)
    return from_float(y, dst.sample).tobytes()


class Reblocker:
    """Cuts a byte stream of any chunk sizes into blocks of exactly ``block_frames`` frames.

    ``pts`` of the emitted blocks counts frames from ``start_pts``. ``flush()`` pads the last
    partial block with silence so that every block has the same size (encoders rely on it).
    """

    def __init__(self, fmt: AudioFormat, block_frames: int, start_pts: int = 0) -> None:
        if block_frames <= 0:
            raise ValueError("block_frames must be positive")
        self.fmt = fmt
        self.block_frames = block_frames
        self.block_bytes = block_frames * fmt.frame_bytes
        self._buf = bytearray()
        self._pts = start_pts

    @property
    def pts(self) -> int:
        """Frame index of the next block to be emitted."""
        return self._pts

    @property
    def pending_frames(self) -> int:
        return len(self._buf) // self.fmt.frame_bytes

    def push(self, data: bytes) -> list[PcmBlock]:
        self._buf += data
        out: list[PcmBlock] = []
        n = self.block_bytes
        while len(self._buf) >= n:
            out.append(PcmBlock(bytes(self._buf[:n]), self.fmt, self._pts))
            del self._buf[:n]
            self._pts += self.block_frames
        return out

    def flush(self) -> PcmBlock | None:
        """The pending partial block padded with silence, or None when nothing is pending."""
        whole = len(self._buf) - len(self._buf) % self.fmt.frame_bytes
        if whole == 0:
            self._buf.clear()
            return None
        data = bytes(self._buf[:whole]) + bytes(self.block_bytes - whole)
        self._buf.clear()
        block = PcmBlock(data, self.fmt, self._pts)
        self._pts += self.block_frames
        return block


def levels_db(block: PcmBlock) -> tuple[list[float], list[float]]:
    """(peak, rms) per channel in dBFS; -inf-safe (floors at -120 dB)."""
    x = block.as_float()
    if x.size == 0:
        return [-120.0] * block.fmt.channels, [-120.0] * block.fmt.channels
    peak = np.abs(x).max(axis=0)
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=0))
    floor = 1e-6
    return (
        [float(20 * np.log10(max(p, floor))) for p in peak],
        [float(20 * np.log10(max(r, floor))) for r in rms],
    )
