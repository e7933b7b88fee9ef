"""Finish one well: decode its images → present mask → block → the output format → completion record.

Every source layout ends here: files are read one by one (`file_images`), a plate's tar is streamed
(converters/tarstream.py); both hand over a `WellImages`. Runs on workers: everything a worker needs
travels in the `WellJob`, nothing is kept between conversions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.decode import decode_image
from converters.errors import SourceError
from converters.output import RECORDS, Output
from converters.plan import Plan, WellTask
from converters.source import Source
from converters.stats import StoreStats, WellStats, well_stats

if TYPE_CHECKING:
    from converters.formats import StoreFormat

Image = tuple[int, int, str, "bytes | SourceError"]  # site index, channel index, where, its bytes or why not


@dataclass(frozen=True)
class WellJob:
    """What every well task of one conversion shares: where to read, where and how to write, what to expect."""

    source: Source
    output: Output
    format: StoreFormat
    shape: tuple[int, int, int, int]  # (sites, channels, y, x)
    dtype: str
    on_error: str = "fail"  # "skip": a bad image is recorded and left out (present=False)


@dataclass
class WellImages:
    """The images of one well as they arrived, and the planned ones that never did (a tar lacking them)."""

    task: WellTask
    images: Iterable[Image]
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class WellResult:
    """What a written well reports back: which images were present, how many bytes were read, and the pixel
    statistics of its images (None in a record of a platezarr that did not compute them)."""

    group: str
    well_index: int
    present: np.ndarray  # (sites, channels) bool
    bytes_read: int
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of bad images left out with on_error="skip"
    missing: tuple[str, ...] = ()  # planned images found absent only while writing (tars planned from metadata)
    stats: WellStats | None = None

    def record(self) -> dict[str, Any]:
        """The completion record of this well, as JSON-able data."""
        stats = {} if self.stats is None else {"stats": self.stats.record()}
        return {"present": self.present.tolist(), "bytes_read": self.bytes_read,
                "skipped": [list(s) for s in self.skipped], "missing": list(self.missing)} | stats

    @classmethod
    def from_record(cls, group: str, well_index: int, record: dict[str, Any]) -> WellResult:
        skipped = tuple((str(f), str(r)) for f, r in record["skipped"])
        stats = WellStats.from_record(record["stats"]) if "stats" in record else None
        return cls(group, well_index, np.array(record["present"], dtype=bool), int(record["bytes_read"]), skipped,
                   tuple(map(str, record.get("missing", ()))), stats)


def file_images(source: Source, task: WellTask) -> Iterator[Image]:
    """The images of a well of files, each read as it is consumed (a file that cannot be read gives its error)."""
    for site, channel, rel in task.files:
        try:
            data: bytes | SourceError = source.read(rel)
        except SourceError as error:
            data = error
        yield site, channel, source.path(rel), data


def finish_well(job: WellJob, well: WellImages, record: bool = True) -> WellResult:
    """Decode the well's images into one (site, channel, y, x) block, write it and compute its pixel statistics,
    then (if `record`) write its record.

    A well of which no image arrived at all is not written: its shard stays absent (the fill value).
    """
    dtype = np.dtype(job.dtype)
    block = np.zeros(job.shape, dtype=dtype)
    present = np.zeros(job.shape[:2], dtype=bool)
    bytes_read, arrived = 0, False
    skipped = []
    for site, channel, where, data in well.images:
        arrived = True
        try:
            if isinstance(data, SourceError):
                raise data
            bytes_read += len(data)
            block[site, channel] = decode_image(data, where, job.shape[2:], dtype)
        except SourceError as error:
            if job.on_error != "skip":
                raise
            skipped.append((where, str(error)))
            continue
        present[site, channel] = True
    task = well.task
    if arrived:
        job.format.write_well(job.output, task.group, task.well_index, block)
    result = WellResult(task.group, task.well_index, present, bytes_read, tuple(skipped), well.missing,
                        well_stats(block, present))
    if record:
        record_well(job.output, result)
    return result


def record_well(output: Output, result: WellResult) -> None:
    """Write the well's completion record: written only after its shard, so a record means a finished well."""
    output.write_json(well_record_key(result.group, result.well_index), result.record())


def well_record_key(group: str, well_index: int) -> str:
    return f"{RECORDS}/wells/{group}/{well_index}.json"


def well_shape(plan: Plan) -> tuple[int, int, int, int]:
    """(sites, channels, y, x) of every well of the plan."""
    schema = plan.schema
    return (len(schema.sites), len(schema.channels), *schema.image_shape)


@dataclass
class WrittenWells:
    """What the written wells reported, kept small: each plate's present mask and pixel statistics, filled in
    as wells finish, and the results of only the wells with skipped or missing images (not a WellResult per well)."""

    present: dict[str, np.ndarray]
    stats: StoreStats
    notes: dict[tuple[str, int], WellResult] = field(default_factory=dict)

    @classmethod
    def empty(cls, plan: Plan) -> WrittenWells:
        shape = well_shape(plan)[:2]
        return cls({p.group: np.zeros((len(p.wells), *shape), dtype=bool) for p in plan.plates}, StoreStats.for_plan(plan))

    def add(self, result: WellResult) -> None:
        self.present[result.group][result.well_index] = result.present
        self.stats.add(result.group, result.well_index, result.stats)
        if result.skipped or result.missing:
            self.notes[(result.group, result.well_index)] = result

    def skipped(self) -> list[dict[str, str]]:
        """Every image left out with on_error="skip", as {file, reason}, in well order."""
        return [{"file": f, "reason": r} for key in sorted(self.notes) for f, r in self.notes[key].skipped]

    def missing(self) -> list[str]:
        """Planned images found missing only while writing (tars planned from metadata)."""
        return [name for key in sorted(self.notes) for name in self.notes[key].missing]
