"""Real UDP datagrams from other programs, recorded once and kept as data files for the parser
tests (tests/data/datagrams/, its README says how each file was made).

A ``.dgrams`` file is a list of records, nothing before the first::

    u8   port: 0 the RTP port, 1 the RTCP port (RTP's + 1)
    u32  arrival, microseconds after the capture started (big-endian)
    u16  length (big-endian)
    ...  the datagram, as received

Run ``PYTHONPATH=src:tests python -m rig.datagrams tests/data/datagrams`` to record them
again (about a minute: trx-tx needs a sound server, one of the rig's private PulseAudio
servers; ffmpeg makes its own tone). The SRTP key in ``ffmpeg-srtp.key`` is kept, so a new
recording decrypts with the same key.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import select
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RTCP", "RTP", "Captured", "capture", "read", "write"]

RTP = 0
RTCP = 1
_RECORD = struct.Struct("!BIH")
TONE_HZ = 700
"""The tone every capture carries."""


@dataclass(frozen=True)
class Captured:
    """One datagram as it arrived."""

    port: int
    """:data:`RTP` or :data:`RTCP`."""
    at_us: int
    data: bytes


def write(path: Path, records: Sequence[Captured]) -> None:
    with path.open("wb") as f:
        for record in records:
            f.write(_RECORD.pack(record.port, record.at_us, len(record.data)) + record.data)


def read(path: Path) -> list[Captured]:
    """The records of a ``.dgrams`` file; ``ValueError`` if it is cut short."""
    buf = path.read_bytes()
    records = []
    pos = 0
    while pos < len(buf):
        if pos + _RECORD.size > len(buf):
            raise ValueError(f"{path}: record header cut short at byte {pos}")
        port, at_us, size = _RECORD.unpack_from(buf, pos)
        pos += _RECORD.size
        if pos + size > len(buf) or port not in (RTP, RTCP):
            raise ValueError(f"{path}: bad record at byte {pos - _RECORD.size}")
        records.append(Captured(port, at_us, buf[pos : pos + size]))
        pos += size
    return records


def _port_pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on 127.0.0.1 bound to an even port and the one after it."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if port % 2:
                raise OSError("odd port")
            rtcp.bind(("127.0.0.1", port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise RuntimeError("no free pair of UDP ports on 127.0.0.1")


def capture(argv: Sequence[str], *, seconds: float, rtp_count: int | None = None,
            env: dict[str, str] | None = None) -> list[Captured]:
    """Start ``argv`` (``{port}`` in it replaced by the RTP port) and record what reaches the
    port pair for ``seconds`` or until the program ends: everything on the RTCP port, on the
    RTP port the first ``rtp_count`` datagrams (all if None). The program is stopped (SIGTERM)
    at the end; fewer RTP datagrams than ``rtp_count``, or none, is an error."""
    rtp, rtcp = _port_pair()
    port = rtp.getsockname()[1]
    records: list[Captured] = []
    proc = subprocess.Popen([arg.replace("{port}", str(port)) for arg in argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    start: float | None = None
    deadline = time.monotonic() + seconds
    rtp_seen = 0
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([rtp, rtcp], [], [], 0.2)
            now = time.monotonic()
            for sock in ready:
                data = sock.recv(65536)
                start = now if start is None else start
                kind = RTP if sock is rtp else RTCP
                if kind == RTP:
                    rtp_seen += 1
                    if rtp_count is not None and rtp_seen > rtp_count:
                        continue
                records.append(Captured(kind, round((now - start) * 1e6), data))
            if not ready and proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.terminate()
        _, err = proc.communicate(timeout=10)
        rtp.close()
        rtcp.close()
    if rtp_seen < (rtp_count or 1):
        raise RuntimeError(f"{argv[0]} sent {rtp_seen} RTP datagrams, not {rtp_count or 1}: "
                           f"{err.decode(errors='replace')[-500:]}")
    return records


def _trx(out: Path) -> None:
    from rig import SoundServer  # only the trx capture needs a sound server
    from rig.capture import play_file
    from rig.signals import tone, write_wav

    with SoundServer("pulseaudio") as server:
        server.create_null_sink("hub")
        wav = write_wav(server.root / "tone.wav", tone(TONE_HZ, 25.0))
        player = play_file(server, wav, "hub")
        try:
            time.sleep(0.5)
            records = capture(["trx-tx", "-d", "pulse:hub.monitor", "-h", "127.0.0.1",
                               "-p", "{port}"], rtp_count=50, seconds=20.0, env=server.env)
        finally:
            player.terminate()
            player.communicate()
    write(out / "trx-tx.dgrams", records)


def _ffmpeg(seconds: float, frame_ms: int, url: str, *extra: str) -> list[Captured]:
    return capture(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
                    "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=48000",
                    "-ac", "2", "-t", str(seconds), "-c:a", "libopus", "-b:a", "64k",
                    "-frame_duration", str(frame_ms), *extra, "-f", "rtp", url],
                   seconds=seconds + 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    out: Path = args.folder
    out.mkdir(parents=True, exist_ok=True)
    _trx(out)
    write(out / "ffmpeg-rtp.dgrams",
          _ffmpeg(1.2, 20, "rtp://127.0.0.1:{port}", "-rtpflags", "send_bye"))
    key_file = out / "ffmpeg-srtp.key"
    if not key_file.exists():
        key_file.write_text(base64.b64encode(secrets.token_bytes(30)).decode() + "\n")
    key = key_file.read_text().strip()
    write(out / "ffmpeg-srtp.dgrams",
          _ffmpeg(0.5, 10, "srtp://127.0.0.1:{port}", "-srtp_out_suite",
                  "AES_CM_128_HMAC_SHA1_80", "-srtp_out_params", key))
    for path in sorted(out.glob("*.dgrams")):
        records = read(path)
        print(f"{path}: {sum(r.port == RTP for r in records)} RTP, "
              f"{sum(r.port == RTCP for r in records)} RTCP, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
