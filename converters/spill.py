"""Float64 arrays that grow with the dataset kept in a temporary file rather than in the client's memory.

Every image's statistics take 480 bytes a site of 6 channels (1.1 GB for RxRx3's 2.2 million sites); a conversion
writes them a well at a time as wells finish and reads them back a plate, or an index column, at a time.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from converters.errors import StoreError

ITEM = np.dtype(np.float64).itemsize


class Spill:
    """An unnamed temporary file (gone once closed, or when the process ends) holding float64 `Region`s, read and
    written at their offsets: no shared file position, so the file is never read or written out of place."""

    def __init__(self) -> None:
        try:
            self._file = tempfile.TemporaryFile(prefix="platezarr-")
        except OSError as exc:
            raise _full(exc) from exc
        self._end = 0

    def region(self, *shape: int) -> Region:
        """A new array of `shape`, NaN until written."""
        return Region(self, self.reserve(int(np.prod(shape))), shape)

    def reserve(self, count: int) -> int:
        """The offset of room for `count` more values."""
        offset, self._end = self._end, self._end + count * ITEM
        return offset

    def write(self, offset: int, values: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        try:
            while data:
                done = os.pwrite(self._file.fileno(), data, offset)
                data, offset = data[done:], offset + done
        except OSError as exc:
            raise _full(exc) from exc

    def read(self, offset: int, count: int) -> np.ndarray:
        raw = os.pread(self._file.fileno(), count * ITEM, offset)
        return np.frombuffer(raw.ljust(count * ITEM, b"\0"), dtype=np.float64).copy()  # past the end: never written

    def close(self) -> None:
        self._file.close()


@dataclass
class Region:
    """An array in a `Spill`: written a row (an index of its first axis) or a run of rows at a time, read whole;
    rows never written read NaN."""

    spill: Spill
    offset: int
    shape: tuple[int, ...]
    written: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.written = np.zeros(self.shape[0], dtype=bool)

    @property
    def row_size(self) -> int:
        return int(np.prod(self.shape[1:]))

    def write(self, start: int, rows: np.ndarray) -> None:
        """Rows `start`, `start + 1`, ... of the array: `rows` has the shape of a run of them (or of one row)."""
        count = rows.size // self.row_size
        self.spill.write(self.offset + start * self.row_size * ITEM, rows)
        self.written[start:start + count] = True

    def read(self) -> np.ndarray:
        """The whole array."""
        values = self.spill.read(self.offset, self.shape[0] * self.row_size).reshape(self.shape)
        values[~self.written] = np.nan
        return values


def _full(exc: OSError) -> StoreError:
    return StoreError(f"{tempfile.gettempdir()}: cannot keep the images' statistics in a temporary file there: "
                      f"{exc.strerror or exc}; free space there, or point TMPDIR at a disk that has some, then re-run "
                      "the same command to resume")
