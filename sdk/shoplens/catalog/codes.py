"""How an index stores its vectors: integer codes in steps of 1/127, packed to the bits they need.

A unit embedding ``v`` becomes ``round(127 v)`` (what format 1 stored as int8). The codes of a
catalog usually need fewer than 8 bits: the reference embedding model ends in ReLU and global
pooling, so its codes are 0..44 and pack into 6 bits (192 bytes for 256 dimensions instead of 256).
Packing is lossless: the exact search and the re-rank of approximate candidates score the same
codes the same way, ``q . c / |c|``, so a re-ranked score equals the exact score.

Rows are little-endian bit streams: value ``j`` occupies bits ``j*bits .. j*bits+bits-1``, stored
as ``code + offset`` (unsigned; ``offset`` is 0 unless some code is negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SCALE", "CodeFormat", "to_codes", "unit"]

SCALE = 127


def to_codes(v: np.ndarray) -> np.ndarray:
    """Unit vectors (N, D) as int8 codes ``round(127 v)``."""
    return np.clip(np.rint(np.asarray(v, np.float32) * SCALE), -SCALE, SCALE).astype(np.int8)


def unit(codes: np.ndarray) -> np.ndarray:
    """Codes (M, D) -> unit vectors float32: the vectors every search scores (zero rows stay zero)."""
    c = np.asarray(codes, np.float32)
    n = np.linalg.norm(c, axis=1, keepdims=True)
    return c / np.where(n > 0, n, 1.0)


@dataclass(frozen=True)
class CodeFormat:
    """``dim`` codes per row, each stored in ``bits`` bits as ``code + offset``."""

    dim: int
    bits: int
    offset: int

    def __post_init__(self) -> None:
        if not (1 <= self.bits <= 8 and 0 <= self.offset <= 127 and self.dim >= 1):
            raise ValueError(f"invalid code format {self}")

    @classmethod
    def fit(cls, dim: int, lo: int, hi: int) -> CodeFormat:
        """The narrowest format that holds codes in ``lo..hi``."""
        offset = max(0, -int(lo))
        return cls(dim, max(1, int(hi + offset).bit_length()), offset)

    def holds(self, lo: int, hi: int) -> bool:
        return lo + self.offset >= 0 and hi + self.offset < (1 << self.bits)

    @property
    def group(self) -> tuple[int, int, int]:
        """(bytes, values, groups) per row: rows are packed in groups of ``lcm(bits, 8)`` bits."""
        nbytes = math.lcm(self.bits, 8) // 8
        values = nbytes * 8 // self.bits
        return nbytes, values, -(-self.dim // values)

    @property
    def row_bytes(self) -> int:
        nbytes, _, groups = self.group
        return nbytes * groups

    def to_dict(self) -> dict[str, int]:
        return {"dim": self.dim, "bits": self.bits, "offset": self.offset, "scale": SCALE}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> CodeFormat:
        if int(d.get("scale", SCALE)) != SCALE:
            raise ValueError(f"code scale {d.get('scale')} (this ShopLens reads {SCALE})")
        return cls(int(d["dim"]), int(d["bits"]), int(d["offset"]))

    # -- packing ---------------------------------------------------------------------------
    def pack(self, codes: np.ndarray) -> np.ndarray:
        """int8 codes (N, dim) -> packed rows (N, row_bytes) uint8."""
        u = (np.asarray(codes, np.int16) + self.offset).astype(np.uint8)
        if self.bits == 8:
            return u
        _, values, groups = self.group
        if groups * values != self.dim:  # the last group is padded with zeros
            u = np.concatenate([u, np.zeros((len(u), groups * values - self.dim), np.uint8)], axis=1)
        planes = (u[:, :, None] >> np.arange(self.bits, dtype=np.uint8)) & 1
        return np.packbits(planes.reshape(len(u), -1), axis=1, bitorder="little")

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Packed rows (M, row_bytes) -> codes (M, dim) float32.

        Each group of ``nbytes`` bytes holds ``values`` codes; code ``j`` of a group is read from
        strided byte slices with shifts, so the work is a few byte operations per code."""
        p = np.asarray(packed, np.uint8)
        if self.bits == 8:
            out = p.astype(np.float32)
        else:
            nbytes, values, groups = self.group
            x = p.reshape(len(p), groups, nbytes)
            u = np.empty((len(p), groups, values), np.uint8)
            mask = (1 << self.bits) - 1
            for j in range(values):
                i, shift = divmod(j * self.bits, 8)
                v = x[:, :, i] >> shift
                if shift + self.bits > 8:
                    v |= x[:, :, i + 1] << (8 - shift)
                u[:, :, j] = v & mask
            out = u.reshape(len(p), -1)[:, : self.dim].astype(np.float32)
        if self.offset:
            out -= self.offset
        return out

    def decode(self, packed: np.ndarray) -> np.ndarray:
        """Packed rows -> unit vectors (M, dim) float32 (a zero row stays zero)."""
        return unit(self.unpack(packed))
