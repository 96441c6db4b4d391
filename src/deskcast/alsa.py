"""Plain ALSA (alsaaudio): the one ``alsa:DEVICE`` device stream, for both directions.

:class:`AlsaStream` is what :class:`~deskcast.capture.alsa.AlsaSource` reads and
:class:`~deskcast.playback.alsa.AlsaSink` writes: an ALSA PCM whose period is one block,
opened with one-line errors (:func:`open_pcm`; a held loopback names its holder,
:func:`loopback_holders`). The shape it shares with ``pulse:`` (reopen with backoff, stand in
at real time, one line lost, one line back) is :class:`deskcast.reconnect.DeviceStream`.
Also here: the device names ALSA advertises (:func:`device_names`, for ``deskcast devices``
and the hub).

**Reconnection.** Once open, a device that fails (a USB card unplugged, the sound server
behind ``alsa:pulse…`` restarted) is reported in one warning, silence is captured (or audio
dropped) at real time meanwhile, and the device is reopened with backoff; one more line says
when it is back. A device that cannot be opened at the start is still an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
from pathlib import Path
from typing import Any

import alsaaudio

from deskcast.errors import DeviceError, EndpointError
from deskcast.media import AudioFormat, PcmBlock, Reblocker, SampleFormat
from deskcast.reconnect import DeviceStream

logger = logging.getLogger(__name__)

# alsa-lib prints its own diagnostics to stderr ("ALSA lib pcm.c:2666: Unknown PCM x"); we
# report every failure ourselves in one line, so route its messages to our debug log instead.
_ERROR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                  ctypes.c_int, ctypes.c_char_p)


def _alsa_lib_message(filename: bytes | None, line: int, function: bytes | None, err: int,
                      fmt: bytes | None) -> None:
    logger.debug("alsa-lib: %s (%s:%d)", (fmt or b"").decode(errors="replace"),
                 (function or b"").decode(errors="replace"), line)


_HANDLER = _ERROR_HANDLER(_alsa_lib_message)  # kept alive for as long as alsa-lib may call it


def _quiet_alsa_lib() -> None:
    try:
        lib = ctypes.CDLL("libasound.so.2")
        lib.snd_lib_error_set_handler(_HANDLER)
    except (OSError, AttributeError):  # pragma: no cover - no libasound: nothing prints
        pass


_quiet_alsa_lib()

ALSA_FORMATS = {
    SampleFormat.S16LE: alsaaudio.PCM_FORMAT_S16_LE,
    SampleFormat.S32LE: alsaaudio.PCM_FORMAT_S32_LE,
    SampleFormat.F32LE: alsaaudio.PCM_FORMAT_FLOAT_LE,
}


def device_names(capture: bool) -> list[str]:
    """PCM names ALSA advertises (config hints) plus hw:CARD for each card."""
    kind = alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK
    names: list[str] = []
    try:
        names = list(alsaaudio.pcms(kind))
    except alsaaudio.ALSAAudioError as err:  # pragma: no cover - broken alsa config
        logger.warning("ALSA cannot list its devices: %s", err)
    with contextlib.suppress(alsaaudio.ALSAAudioError):
        names += [f"hw:CARD={card}" for card in alsaaudio.cards()]
    return names


def open_pcm(device: str, fmt: AudioFormat, period_frames: int, periods: int,
             capture: bool) -> Any:
    """Open and configure an ALSA PCM, mapping failures to one-line errors."""
    kind = alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK
    role = "capture" if capture else "playback"
    try:
        pcm = alsaaudio.PCM(
            type=kind, mode=alsaaudio.PCM_NORMAL, rate=fmt.rate, channels=fmt.channels,
            format=ALSA_FORMATS[fmt.sample], periodsize=period_frames, periods=periods,
            device=device,
        )
    except alsaaudio.ALSAAudioError as err:
        raise _error(err, device, role, capture) from None
    info = pcm.info()
    got_rate, got_channels = int(info.get("rate", fmt.rate)), int(info.get("channels", 0))
    if got_rate != fmt.rate or (got_channels and got_channels != fmt.channels):
        pcm.close()
        raise DeviceError(
            f"ALSA device {device!r} runs at {got_rate} Hz, {got_channels} ch, not {fmt.rate} Hz,"
            f" {fmt.channels} ch: use plug:{device} to convert, or --rate {got_rate}"
        )
    return pcm


def loopback_holders(proc_asound: Path = Path("/proc/asound")) -> list[str]:
    """Who has a substream of an ``snd-aloop`` card open, and at which format: ``aplay (pid
    42) plays to hw:Loopback,0,0 at 44100 Hz S32_LE 1 ch``. A loopback takes its format from
    whoever opens it first, so that is what a failed open on it needs to know."""
    found: list[str] = []
    for card in sorted(proc_asound.glob("card[0-9]*")):
        try:
            if "loopback" not in (card / "pcm0p" / "info").read_text().lower():
                continue
            card_id = (card / "id").read_text().strip()
        except OSError:
            continue
        for sub in sorted(card.glob("pcm*/sub*")):
            try:
                status, params = (sub / "status").read_text(), (sub / "hw_params").read_text()
            except OSError:
                continue
            if status.strip() == "closed":
                continue
            pid = re.search(r"owner_pid\s*:\s*(\d+)", status)
            program = "a program"
            if pid is not None:
                try:
                    program = f"{Path(f'/proc/{pid[1]}/comm').read_text().strip()} (pid {pid[1]})"
                except OSError:
                    program = f"pid {pid[1]}"
            stream = sub.parent.name  # pcm0p, pcm1c
            what = "plays to" if stream.endswith("p") else "records from"
            fields = dict(re.findall(r"^(\w+):\s*(\S+)", params, re.MULTILINE))
            fmt = (f" at {fields['rate']} Hz {fields.get('format', '?')} "
                   f"{fields.get('channels', '?')} ch" if "rate" in fields else "")
            found.append(f"{program} {what} hw:{card_id},{int(stream[3:-1])},"
                         f"{int(sub.name[3:])}{fmt}")
    return found


def _error(err: Exception, device: str, role: str, capture: bool) -> Exception:
    text = str(err)
    low = text.lower()
    holders = loopback_holders() if "busy" in low or "invalid argument" in low else []
    if holders:
        return DeviceError(
            f"cannot open ALSA device {device!r} for {role} ({text}): on the loopback card, "
            f"{'; '.join(holders)}. The loopback takes its format from whoever opens it first "
            "and a hw device opens once: stop that program (or let it play through the "
            "hub's dmix default), then start this again"
        )
    if "busy" in low:
        return DeviceError(
            f"ALSA device {device!r} is busy (another program has it open for {role}): stop "
            "that program, or use a shared device such as 'default', or a dmix/dsnoop plug"
        )
    if "no such file" in low or "no such device" in low or "unknown pcm" in low:
        names = ", ".join(device_names(capture)) or "none"
        return EndpointError(
            f"no ALSA {role} device {device!r}; available: {names} (see `deskcast devices`)"
        )
    if "permission" in low:
        return DeviceError(
            f"no permission to open ALSA device {device!r}: add yourself to the 'audio' group"
        )
    return DeviceError(f"cannot open ALSA device {device!r} for {role}: {text}")


RING_MS = 200.0
"""The least a capture device's buffer holds. On capture a buffer costs no delay (a block is
read as soon as its period is complete; the buffer only fills while we are late), so it is
made large enough to ride out a late reader: with 40 ms, ``send`` from the ``hubcap`` dsnoop
overran 234 times in 10 s on an emulated CPU (a garbled tone), with 200 ms never."""


class AlsaStream(DeviceStream):
    """An ALSA PCM on ``device`` (``capture``: recording, else playing), kept open.

    The period is one block; the buffer ``buffer_ms`` for playback, at least :data:`RING_MS`
    for capture. An xrun (an overrun on capture: we read too late; an underrun on playback:
    we wrote too late) is counted in :attr:`~deskcast.reconnect.DeviceStream.xruns` and the
    stream carries on; a playback block is written again after an underrun.
    """

    errors = (alsaaudio.ALSAAudioError,)

    def __init__(self, device: str, fmt: AudioFormat, block_frames: int, *, capture: bool,
                 buffer_ms: float = 40.0, reconnect: bool = True) -> None:
        self.device = device
        super().__init__(fmt, block_frames, capture=capture, reconnect=reconnect)
        ring_ms = max(buffer_ms, RING_MS) if capture else buffer_ms
        self.periods = max(2, round(fmt.frames_for_ms(ring_ms) / block_frames))
        self.buffer_frames = self.periods * block_frames
        """The device's buffer: what was asked, then what the device granted if it says."""
        self._reblocker = Reblocker(fmt, block_frames)
        self._pending: list[PcmBlock] = []

    @property
    def name(self) -> str:
        return f"alsa:{self.device}"

    def _open(self) -> Any:
        pcm = open_pcm(self.device, self.fmt, self.block_frames, self.periods, self.capture)
        # What the device granted, if it says (an ALSA buffer is often not what was asked).
        size = pcm.info().get("buffer_size")
        if isinstance(size, int) and size > 0:
            self.buffer_frames = size
        self._reblocker = Reblocker(self.fmt, self.block_frames)
        self._pending.clear()
        return pcm

    def _read(self, handle: Any) -> bytes:
        while not self._pending:
            frames, data = handle.read()
            if frames < 0:
                self.xruns += 1
                logger.debug("%s: overrun (%d)", self.name, frames)
                continue
            self._pending.extend(self._reblocker.push(data))
        return self._pending.pop(0).data

    def _write(self, handle: Any, data: bytes) -> None:
        for _attempt in range(2):
            written = handle.write(data)
            if written >= 0:
                return
            self.xruns += 1
            logger.debug("%s: underrun (%d)", self.name, written)
