"""Plain ALSA: shared by ``alsa:DEVICE`` capture and playback."""

from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import Any

import alsaaudio

from deskcast.errors import DeviceError, EndpointError
from deskcast.media import AudioFormat, SampleFormat

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


def _error(err: Exception, device: str, role: str, capture: bool) -> Exception:
    text = str(err)
    low = text.lower()
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


