"""Write one well: read and decode its images, then write its shard in one call. Runs on workers.

On a local store the worker that decoded the well also encodes its shard (converters/shard.py) and
writes the file once; any other store, or an array whose codecs shard.py does not encode, goes
through zarr-python's `array[well] = block`. Both produce the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from converters.decode import decode_image
from converters.errors import SourceError, StoreError
from converters.output import RECORDS, Output, open_output_array
from converters.plan import WellTask
from converters.shard import ShardLayout, write_shard
from converters.source import Source


@dataclass(frozen=True)
class WellJob:
    """What every well task of one conversion shares: where to read, where to write, what to expect."""

    source: Source
    output: Output
    shape: tuple[int, int, int, int]  # (sites, channels, y, x)
    dtype: str
    on_error: str = "fail"  # "skip": a bad image is recorded and left out (present=False)


@dataclass(frozen=True)
class WellResult:
    """What a written well reports back: which images were present and how many bytes were read."""

    group: str
    well_index: int
    present: np.ndarray  # (sites, channels) bool
    bytes_read: int
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of bad images left out with on_error="skip"
    missing: tuple[str, ...] = ()  # planned images found absent only while writing (tars planned from metadata)

    def record(self) -> dict:
        """The completion record of this well, as JSON-able data."""
        return {"present": self.present.tolist(), "bytes_read": self.bytes_read,
                "skipped": [list(s) for s in self.skipped], "missing": list(self.missing)}

    @classmethod
    def from_record(cls, group: str, well_index: int, record: dict) -> WellResult:
        skipped = tuple((str(f), str(r)) for f, r in record["skipped"])
        return cls(group, well_index, np.array(record["present"], dtype=bool), int(record["bytes_read"]), skipped,
                   tuple(map(str, record.get("missing", ()))))


_ARRAYS: dict[tuple[str, str], zarr.Array] = {}


def _images(output: Output, group: str) -> zarr.Array:
    """The plate's images array, opened once per worker and output."""
    key = (output.location, group)
    if key not in _ARRAYS:
        _ARRAYS[key] = open_output_array(output.store, f"{group}/images")
    return _ARRAYS[key]


_LAYOUTS: dict[tuple[str, str], ShardLayout | None] = {}


def _layout(output: Output, group: str) -> ShardLayout | None:
    """How to write the plate's shards directly (one well per shard, local store), or None: via zarr-python."""
    key = (output.location, group)
    if key not in _LAYOUTS:
        layout = ShardLayout.of(_images(output, group))
        _LAYOUTS[key] = layout if layout is not None and layout.shard_shape[0] == 1 else None
    return _LAYOUTS[key]


def write_well(job: WellJob, task: WellTask) -> WellResult:
    """Decode every image of `task` into one (site, channel, y, x) block and write the well's shard once."""
    source = job.source
    dtype = np.dtype(job.dtype)
    block = np.zeros(job.shape, dtype=dtype)
    present = np.zeros(job.shape[:2], dtype=bool)
    bytes_read = 0
    skipped = []
    for site, channel, rel in task.files:
        try:
            data = source.read(rel)
            bytes_read += len(data)
            block[site, channel] = decode_image(data, source.path(rel), job.shape[2:], dtype)
        except SourceError as error:
            if job.on_error != "skip":
                raise
            skipped.append((source.path(rel), str(error)))
            continue
        present[site, channel] = True
    try:
        write_block(job.output, task.group, task.well_index, block)
    except OSError as exc:
        raise StoreError(f"{job.output.location}: cannot write well {task.group}/{task.well}: {exc.strerror or exc}; "
                         "free space or fix permissions, then re-run the same command to resume") from None
    return WellResult(task.group, task.well_index, present, bytes_read, tuple(skipped))


def write_and_record(job: WellJob, task: WellTask) -> WellResult:
    """Write the well's shard, then its completion record: a record exists only for a finished shard."""
    result = write_well(job, task)
    job.output.write_json(well_record_key(task.group, task.well_index), result.record())
    return result


def well_record_key(group: str, well_index: int) -> str:
    return f"{RECORDS}/wells/{group}/{well_index}.json"


def write_block(output: Output, group: str, well_index: int, block: np.ndarray) -> None:
    """Write one well's (site, channel, y, x) block as its shard: directly when possible, else via zarr."""
    layout = _layout(output, group)
    if layout is not None and block.shape == layout.shard_shape[1:]:
        write_shard(layout, (well_index,) + (0,) * block.ndim, block[np.newaxis])
    else:
        _images(output, group)[well_index] = block
