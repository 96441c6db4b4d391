"""Plain ALSA: shared by ``alsa:DEVICE`` capture and playback."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
from pathlib import Path
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


