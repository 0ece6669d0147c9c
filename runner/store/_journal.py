"""The write-ahead journal: one checksummed frame per recorded unit, appended with one write.

A frame is `VLJ1 | compressed length | raw length | crc32` (16 bytes, little endian), then the
LZ4-compressed payload: `u32 length of the requests message`, the requests record batch and the
hits record batch, each an Arrow IPC message (`RecordBatch.serialize`). Request rows and hits of a
unit travel in ONE frame, so a unit is either wholly in the journal or not at all; a frame cut short
by a crash (or torn by a lost page after a power cut) fails its length or checksum and is dropped
with everything after it. The writer never appends after a failed write (it cuts the file back
first), so only the last frame of a segment can be torn.

Why not a plain Arrow IPC stream: a stream holds one schema, a unit needs two; and a stream has no
checksum, so a torn tail is detected only when it happens to be cut inside a length prefix.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.ipc as ipc

from runner.errors import RunError
from runner.schema import HITS_SCHEMA, OPTIONAL_COLUMNS, REQUESTS_SCHEMA, conform
from runner.store.atomic import write_error

__all__ = ["JournalSegment", "Unit", "encode_unit", "read_segment"]

_MAGIC: Final = b"VLJ1"
_HEADER: Final = struct.Struct("<4sIII")
_LEN: Final = struct.Struct("<I")
_CODEC: Final = "lz4"


@dataclass(frozen=True, slots=True)
class Unit:
    """The rows of one recorded unit."""

    requests: pa.RecordBatch
    hits: pa.RecordBatch


def encode_unit(unit: Unit) -> bytes:
    """One journal frame holding `unit`."""
    req = unit.requests.serialize()
    hit = unit.hits.serialize()
    raw = b"".join((_LEN.pack(req.size), req, hit))  # Arrow buffers join without a copy each
    body: bytes = pa.compress(raw, codec=_CODEC, asbytes=True)
    return _HEADER.pack(_MAGIC, len(body), len(raw), zlib.crc32(body)) + body


def _decode(body: bytes, raw_len: int) -> Unit:
    raw = pa.decompress(body, decompressed_size=raw_len, codec=_CODEC, asbytes=True)
    (req_len,) = _LEN.unpack_from(raw)
    req = ipc.read_record_batch(pa.py_buffer(raw[_LEN.size : _LEN.size + req_len]), REQUESTS_SCHEMA)
    return Unit(req, _hits(pa.py_buffer(raw[_LEN.size + req_len :])))


# The hit columns of a journal written before the optional ones were added (see runner/schema.py).
_OLDER_HITS: Final = pa.schema([f for f in HITS_SCHEMA if f.name not in OPTIONAL_COLUMNS])


def _hits(buffer: pa.Buffer) -> pa.RecordBatch:
    """A frame's hit batch; one of a journal left by an older version gets its optional columns."""
    try:
        return ipc.read_record_batch(buffer, HITS_SCHEMA)
    except pa.ArrowInvalid:  # fewer columns than the schema: perhaps an older journal
        older = ipc.read_record_batch(buffer, _OLDER_HITS)
    return conform(older, HITS_SCHEMA)


def read_segment(path: Path) -> Iterator[tuple[int, Unit]]:
    """Yield `(offset after the frame, unit)` for each whole frame of a segment, in order.

    Stops at the first frame that is short, has a wrong magic or checksum, or does not decode:
    that frame and anything after it is a torn tail. The last offset yielded (0 if none) is where
    the good part of the file ends.
    """
    with open(path, "rb") as f:
        offset = 0
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            magic, body_len, raw_len, crc = _HEADER.unpack(header)
            if magic != _MAGIC:
                return
            body = f.read(body_len)
            if len(body) < body_len or zlib.crc32(body) != crc:
                return
            try:
                unit = _decode(body, raw_len)
            except (pa.ArrowException, struct.error, ValueError):
                return
            offset += _HEADER.size + body_len
            yield offset, unit


class JournalSegment:
    """An open journal segment that frames are appended to, one `os.write` per frame.

    Without `fsync`, an appended frame survives the death of the process (it is in the kernel's
    page cache) but not a power cut; with it, each append is also forced to disk.
    """

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.path = path
        self._fsync = fsync
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._broken = False

    def append(self, frame: bytes) -> None:
        """Append one frame, or leave the segment as it was and raise `WriteError`."""
        if self._broken:
            raise RunError(f"{self.path}: journal is unusable after an earlier write error")
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._cut_back()
            # A full disk is the machine's failure, not bad input: WriteError, exit 1, resumable.
            raise write_error(self.path, exc) from exc
        self._size += len(frame)

    def _cut_back(self) -> None:
        # A half-written frame followed by a good one would hide the good one on resume.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._broken = True

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
