"""The datagrams other programs sent, recorded once (tests/data/datagrams/, made by
``rig.datagrams``; its README says how): what each capture is, and its packets read back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deskcast.decode.opus import OpusDecoder
from deskcast.media import AudioFormat
from deskcast.transport.rtp import OPUS_CLOCK_RATE, TRX_CLOCK_RATE, RtpPacket
from deskcast.transport.srtp import SrtpKey, SrtpReceiver
from rig.datagrams import RTCP, RTP, TONE_HZ, Captured, read
from rig.signals import dominant_frequency, to_mono

DATA = Path(__file__).resolve().parents[2] / "data" / "datagrams"
SRTP_KEY_FILE = DATA / "ffmpeg-srtp.key"

__all__ = ["CAPTURES", "DATA", "FFMPEG_RTP", "FFMPEG_SRTP", "RTCP", "RTP", "SRTP_KEY_FILE",
           "TONE_HZ", "TRX", "Capture", "datagrams", "rtp_packets", "srtp_key", "tone_hz"]


@dataclass(frozen=True)
class Capture:
    """One recorded stream and what its sender was told (the README's commands)."""

    name: str
    clock: int
    """The RTP clock rate its timestamps count in."""
    frame_samples: int
    """The Opus frame size it was given, in samples at 48 kHz."""
    encrypted: bool = False

    def __str__(self) -> str:
        return self.name


TRX = Capture("trx-tx", TRX_CLOCK_RATE, 960)
FFMPEG_RTP = Capture("ffmpeg-rtp", OPUS_CLOCK_RATE, 960)
FFMPEG_SRTP = Capture("ffmpeg-srtp", OPUS_CLOCK_RATE, 480, encrypted=True)
CAPTURES = (TRX, FFMPEG_RTP, FFMPEG_SRTP)


def datagrams(capture: Capture, port: int) -> list[Captured]:
    """What reached the RTP port (:data:`RTP`) or the RTCP port (:data:`RTCP`), in order."""
    return [record for record in read(DATA / f"{capture.name}.dgrams") if record.port == port]


def srtp_key() -> SrtpKey:
    return SrtpKey.parse(SRTP_KEY_FILE.read_text(encoding="ascii"), str(SRTP_KEY_FILE))


def rtp_packets(capture: Capture) -> list[RtpPacket]:
    """The RTP packets of a capture, decrypted first if it is SRTP."""
    data = [record.data for record in datagrams(capture, RTP)]
    if capture.encrypted:
        receiver = SrtpReceiver(srtp_key())
        data = [receiver.unprotect(datagram) for datagram in data]
    return [RtpPacket.parse(datagram) for datagram in data]


def tone_hz(packets: list[RtpPacket]) -> float:
    """The strongest frequency in the packets' payloads decoded as 48 kHz stereo Opus."""
    decoder = OpusDecoder(AudioFormat(48000, 2))
    pcm = b"".join(decoder.decode(packet.payload) for packet in packets)
    samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2) / 32768.0
    return dominant_frequency(to_mono(samples), 48000)
