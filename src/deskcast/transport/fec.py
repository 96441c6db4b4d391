"""Packet-level forward error correction (``--fec K:R``): after every K audio packets the
sender adds R repair packets, and the receiver rebuilds up to R lost packets of each group.

Why not Opus' inband FEC: it only exists in SILK/hybrid modes, so it pushes music out of CELT
and costs 3x the CPU. Erasure coding (zfec, a Reed-Solomon code) protects any payload.

Cost: R/K more bandwidth (``4:2``: +50 %), and a lost packet can only be rebuilt once the
group's repair packets are in, so the receiver raises its jitter floor to K frames.

Wire format: audio packets are untouched (receivers without FEC, trx and ffmpeg included,
just play them). Repair packets are RTP with payload type :data:`FEC_PT` and their own SSRC
(the audio SSRC xor :data:`FEC_SSRC_XOR`); their payload is::

    base_seq u16 | k u8 | r u8 | index u8 (k..k+r-1) | share

and the share encodes, for each of the K audio packets, ``timestamp u32 | length u16 |
payload`` zero-padded to the longest in the group.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

import zfec

from deskcast.errors import ConfigError

FEC_PT = 127
FEC_SSRC_XOR = 0x00FEC000
_HEADER = struct.Struct("!HBBB")
_ITEM = struct.Struct("!IH")
MAX_GROUP = 16


def parse_scheme(text: str) -> tuple[int, int]:
    """``"K:R"`` -> (K, R), e.g. ``4:2``."""
    k_text, sep, r_text = text.partition(":")
    try:
        k, r = int(k_text), int(r_text)
    except ValueError:
        k = r = 0
    if not sep or not (1 <= k <= MAX_GROUP and 1 <= r <= k):
        raise ConfigError(f"--fec {text!r}: give K:R with 1 <= R <= K <= {MAX_GROUP}, e.g. 4:2 "
                          "(2 repair packets for every 4 audio packets, +50 % bandwidth)")
    return k, r


@dataclass(frozen=True, slots=True)
class Recovered:
    sequence: int
    timestamp: int
    payload: bytes


class FecEncoder:
    """Feed it every audio packet; it returns the repair payloads to send after it."""

    def __init__(self, k: int, r: int) -> None:
        self.k, self.r = k, r
        self._encoder = zfec.Encoder(k, k + r)
        self._group: list[bytes] = []
        self._base_seq = 0

    def add(self, sequence: int, timestamp: int, payload: bytes) -> list[bytes]:
        if not self._group:
            self._base_seq = sequence
        self._group.append(_ITEM.pack(timestamp & 0xFFFFFFFF, len(payload)) + payload)
        if len(self._group) < self.k:
            return []
        width = max(len(b) for b in self._group)
        blocks = tuple(b.ljust(width, b"\0") for b in self._group)
        self._group = []
        wanted = tuple(range(self.k, self.k + self.r))
        shares = self._encoder.encode(blocks, wanted)
        return [_HEADER.pack(self._base_seq, self.k, self.r, idx) + bytes(share)
                for idx, share in zip(wanted, shares, strict=True)]


class FecDecoder:
    """Keeps recent audio payloads and repair shares; rebuilds what a group lost."""

    def __init__(self, history: int = 512) -> None:
        self.history = history
        self._sources: OrderedDict[int, bytes] = OrderedDict()   # seq -> item bytes
        self._repairs: OrderedDict[int, dict[int, bytes]] = OrderedDict()  # base -> idx -> share
        self._shape: dict[int, tuple[int, int]] = {}
        self.recovered = 0
        self.malformed = 0
        self.group_k = 0

    def add_source(self, sequence: int, timestamp: int, payload: bytes) -> None:
        self._sources[sequence] = _ITEM.pack(timestamp & 0xFFFFFFFF, len(payload)) + payload
        while len(self._sources) > self.history:
            self._sources.popitem(last=False)

    def add_repair(self, data: bytes) -> list[Recovered]:
        """A repair payload; returns the audio packets it lets us rebuild (maybe none)."""
        if len(data) <= _HEADER.size:
            self.malformed += 1
            return []
        base, k, r, idx = _HEADER.unpack_from(data)
        if not (1 <= r <= k <= MAX_GROUP and k <= idx < k + r):
            self.malformed += 1
            return []
        self.group_k = k
        shares = self._repairs.setdefault(base, {})
        self._shape[base] = (k, r)
        shares[idx] = data[_HEADER.size:]
        while len(self._repairs) > self.history // max(1, k):
            old, _ = self._repairs.popitem(last=False)
            self._shape.pop(old, None)
        return self._try(base)

    def _try(self, base: int) -> list[Recovered]:
        k, r = self._shape[base]
        shares = self._repairs[base]
        width = len(next(iter(shares.values())))
        seqs = [(base + i) & 0xFFFF for i in range(k)]
        have = {i: self._sources[s] for i, s in enumerate(seqs) if s in self._sources}
        missing = [i for i in range(k) if i not in have]
        if not missing:
            self._forget(base)
            return []
        if len(have) + len(shares) < k:
            return []
        if any(len(b) > width for b in have.values()):
            # A share is as wide as the widest packet of its group: this one is not one.
            self.malformed += 1
            return []
        blocks: list[bytes] = []
        nums: list[int] = []
        for i, item in have.items():
            blocks.append(item.ljust(width, b"\0"))
            nums.append(i)
        for idx, share in shares.items():
            if len(blocks) == k:
                break
            if len(share) != width:
                self.malformed += 1
                return []
            blocks.append(share)
            nums.append(idx)
        try:
            decoded = zfec.Decoder(k, k + r).decode(tuple(blocks), tuple(nums))
        except (zfec.Error, ValueError):
            self.malformed += 1
            return []
        out = []
        for i in missing:
            item = bytes(decoded[i])
            ts, length = _ITEM.unpack_from(item)
            payload = item[_ITEM.size:_ITEM.size + length]
            if len(payload) != length or not payload:
                self.malformed += 1
                continue
            out.append(Recovered(seqs[i], ts, payload))
            self.add_source(seqs[i], ts, payload)
        self.recovered += len(out)
        self._forget(base)
        return out

    def _forget(self, base: int) -> None:
        self._repairs.pop(base, None)
        self._shape.pop(base, None)
