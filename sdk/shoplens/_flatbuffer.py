"""A bounds-checked FlatBuffers reader: enough of the format to read a .tflite without native code.

Every read checks its bounds, so a truncated or corrupt file raises ModelError instead of reading
past the end (the fuzzer's truncations and byte flips land here).
"""

from __future__ import annotations

import struct

from shoplens.errors import ModelError

__all__ = ["Buf", "Table"]


class Buf:
    """Bounds-checked little-endian reads over a bytes object."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > self.n:
            raise ModelError(
                f"model flatbuffer is corrupt: read of {size} bytes at {pos} past the end ({self.n})"
            )

    def u8(self, pos: int) -> int:
        self._need(pos, 1)
        return self.data[pos]

    def i8(self, pos: int) -> int:
        self._need(pos, 1)
        return int(struct.unpack_from("<b", self.data, pos)[0])

    def u16(self, pos: int) -> int:
        self._need(pos, 2)
        return int(struct.unpack_from("<H", self.data, pos)[0])

    def i32(self, pos: int) -> int:
        self._need(pos, 4)
        return int(struct.unpack_from("<i", self.data, pos)[0])

    def u32(self, pos: int) -> int:
        self._need(pos, 4)
        return int(struct.unpack_from("<I", self.data, pos)[0])

    def u64(self, pos: int) -> int:
        self._need(pos, 8)
        return int(struct.unpack_from("<Q", self.data, pos)[0])


class Table:
    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: Buf, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vt = pos - buf.i32(pos)
        self.vt_len = buf.u16(self.vt)
        if self.vt_len < 4 or self.vt_len % 2:
            raise ModelError(f"model flatbuffer is corrupt: bad vtable at {self.vt}")

    def _field(self, index: int) -> int:
        o = 4 + 2 * index
        if o >= self.vt_len:
            return 0
        return self.buf.u16(self.vt + o)

    def has(self, index: int) -> bool:
        return self._field(index) != 0

    def scalar(self, index: int, kind: str, default: int = 0) -> int:
        off = self._field(index)
        if not off:
            return default
        p = self.pos + off
        reader = {"u8": self.buf.u8, "i8": self.buf.i8, "i32": self.buf.i32, "u32": self.buf.u32,
                  "u64": self.buf.u64}[kind]  # fmt: skip
        return int(reader(p))

    def _indirect(self, index: int) -> int | None:
        off = self._field(index)
        if not off:
            return None
        p = self.pos + off
        return p + self.buf.u32(p)

    def table(self, index: int) -> Table | None:
        p = self._indirect(index)
        return Table(self.buf, p) if p is not None else None

    def string(self, index: int) -> str | None:
        p = self._indirect(index)
        if p is None:
            return None
        n = self.buf.u32(p)
        self.buf._need(p + 4, n)
        return self.buf.data[p + 4 : p + 4 + n].decode("utf-8", errors="replace")

    def _vector(self, index: int, elem: int) -> tuple[int, int]:
        p = self._indirect(index)
        if p is None:
            return 0, 0
        n = self.buf.u32(p)
        self.buf._need(p + 4, n * elem)
        return p + 4, n

    def vector_bytes(self, index: int) -> bytes:
        start, n = self._vector(index, 1)
        return self.buf.data[start : start + n]

    def vector_i32(self, index: int) -> list[int]:
        start, n = self._vector(index, 4)
        return list(struct.unpack_from(f"<{n}i", self.buf.data, start)) if n else []

    def vector_f32(self, index: int) -> list[float]:
        start, n = self._vector(index, 4)
        return list(struct.unpack_from(f"<{n}f", self.buf.data, start)) if n else []

    def vector_i64(self, index: int) -> list[int]:
        start, n = self._vector(index, 8)
        return list(struct.unpack_from(f"<{n}q", self.buf.data, start)) if n else []

    def vector_tables(self, index: int) -> list[Table]:
        start, n = self._vector(index, 4)
        return [Table(self.buf, start + 4 * i + self.buf.u32(start + 4 * i)) for i in range(n)]
