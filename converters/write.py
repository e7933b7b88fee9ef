"""Write one well: read and decode its images, then write its shard in one call. Runs on workers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import zarr

from converters.decode import decode_png
from converters.output import open_output_array
from converters.plan import WellTask
from converters.source import LocalSource


@dataclass(frozen=True)
class WellJob:
    """What every well task of one conversion shares: where to read, where to write, what to expect."""

    source: str
    out: str
    shape: tuple[int, int, int, int]  # (sites, channels, y, x)
    dtype: str


@dataclass(frozen=True)
class WellResult:
    """What a written well reports back: which images were present and how many bytes were read."""

    group: str
    well_index: int
    present: np.ndarray  # (sites, channels) bool
    bytes_read: int


@lru_cache(maxsize=64)
def _images(out: str, group: str) -> zarr.Array:
    return open_output_array(out, f"{group}/images")


@lru_cache(maxsize=4)
def _source(root: str) -> LocalSource:
    return LocalSource.open(root)


def write_well(job: WellJob, task: WellTask) -> WellResult:
    """Decode every image of `task` into one (site, channel, y, x) block and write the well's shard once."""
    source = _source(job.source)
    dtype = np.dtype(job.dtype)
    block = np.zeros(job.shape, dtype=dtype)
    present = np.zeros(job.shape[:2], dtype=bool)
    bytes_read = 0
    for site, channel, rel in task.files:
        data = source.read(rel)
        bytes_read += len(data)
        block[site, channel] = decode_png(data, source.path(rel), job.shape[2:], dtype)
        present[site, channel] = True
    _images(job.out, task.group)[task.well_index] = block
    return WellResult(task.group, task.well_index, present, bytes_read)
