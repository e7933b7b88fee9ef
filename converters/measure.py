"""`platezarr stats`: pixel statistics for a store converted without them, and the competition's table.

Each well is one task on the conversion's executor (a local pool or a dask.distributed cluster): its
shard is read back whole by the store's site reader and fed to the function conversions use
(`stats.well_stats`). Resumable as a conversion is: each well's statistics go to a small record,
`_platezarr/stats/{plate}/{well index}.json`, and a re-run reads the wells without one. The store
stays complete and readable throughout; the statistics, the index columns and the root attribute are
written once every well is measured, the records deleted last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from converters.convert import Progress, ProgressCallback
from converters.errors import SchemaError
from converters.execute import run_tasks
from converters.finalize import write_index, write_root
from converters.lock import owning
from converters.output import RECORDS, Output, storage_errors
from converters.readers import checked_root, plate_groups, read_array, read_index
from converters.schema import Controls, load_schema
from converters.sitereader import SiteReader
from converters.stats import StoreStats, WellStats, control_mask, well_stats
from converters.statstore import ATTR, index_column_names, index_columns, pixel_stats_table, write_stats, write_table

log = logging.getLogger("platezarr")
STATS_RECORDS = f"{RECORDS}/stats"


@dataclass(frozen=True)
class MeasureJob:
    """What every well task shares: the store's site reader and where the records go; picklable."""

    reader: SiteReader
    output: Output


@dataclass(frozen=True)
class MeasureTask:
    """One well to measure, with its present mask (sites, channels): a well with no image is not read."""

    group: str
    well_index: int
    well: str
    present: np.ndarray


def measure_well(job: MeasureJob, task: MeasureTask) -> tuple[str, int, WellStats]:
    """Read the well's shard, compute its statistics and record them; runs on workers."""
    layout = job.reader.layout
    if task.present.any():
        block = job.reader.read_well(task.group, task.well_index, task.well)
    else:
        block = np.zeros(layout.shard_shape[1:], dtype=layout.dtype)
    stats = well_stats(block, task.present)
    job.output.write_json(record_key(task.group, task.well_index), stats.record())
    return task.group, task.well_index, stats


def record_key(group: str, well_index: int) -> str:
    return f"{STATS_RECORDS}/{group}/{well_index}.json"


def compute_stats(url: str | os.PathLike[str], table: str | os.PathLike[str] | None = None, *,
                  workers: int | None = None, scheduler: str | None = None,
                  storage_options: dict[str, Any] | None = None,
                  progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Add pixel statistics to the finished store at `url` if it has none (resuming an interrupted run), then
    write the `pixel_stats` table to `table` (.csv or .parquet) if given. Returns what was done."""
    _, attrs = checked_root(url, storage_options)
    output = Output.open(url, storage_options=storage_options)
    report: dict[str, Any] = {"store": output.location, "computed": ATTR not in attrs, "wells": 0, "resumed_wells": 0}
    if report["computed"]:
        with owning(output), storage_errors(output):
            report |= _measure(url, output, attrs, workers or os.cpu_count() or 1, scheduler, storage_options,
                               progress or (lambda _: None))
    if table is not None:
        rows = pixel_stats_table(url, storage_options)
        write_table(rows, table)
        report["table"], report["table_rows"] = os.fspath(table), len(rows)
    return report


def _measure(url: str | os.PathLike[str], output: Output, attrs: dict[str, Any], workers: int, scheduler: str | None,
             storage_options: dict[str, Any] | None, progress: ProgressCallback) -> dict[str, Any]:
    root = zarr.open_group(output.store, mode="r", zarr_format=3, use_consolidated=True)
    groups = plate_groups(root)
    stats = _empty_stats(root, attrs, groups)
    with closing(stats):
        finished: set[tuple[str, int]] = set()
        for group, index, well in _recorded(output):
            stats.add(group, index, well)
            finished.add((group, index))
        if finished:
            log.info("resuming the statistics of %s: %d wells already measured", output.location, len(finished))
        total = sum(len(p.controls) for p in stats.plates.values())
        progress(Progress("stats", len(finished), total, "wells"))
        if groups:
            job = MeasureJob(SiteReader(url, groups[0], storage_options), output)
            done = len(finished)
            for group, index, well in run_tasks(measure_well, job, _tasks(root, groups, finished), workers, scheduler):
                stats.add(group, index, well)
                done += 1
                progress(Progress("stats", done, total, "wells"))
        table = read_index(output.store).to_dataframe().reset_index(drop=True)
        pooled = write_stats(output.store, stats)
        measured = table.drop(columns=index_column_names(stats.channels), errors="ignore")  # those of an earlier run
        write_index(output.store, measured, more=index_columns(table, stats))
    write_root(output.store, attrs | {ATTR: pooled})
    output.delete(RECORDS)  # the wells' records; the lock is kept until `owning` releases it
    return {"wells": total, "resumed_wells": len(finished)}


def _tasks(root: zarr.Group, groups: list[str], finished: set[tuple[str, int]]) -> Iterator[MeasureTask]:
    for group in groups:
        wells = [str(w) for w in read_array(root, f"{group}/well")]
        present = read_array(root, f"{group}/present")
        for i, well in enumerate(wells):
            if (group, i) not in finished:
                yield MeasureTask(group, i, well, present[i])


def _empty_stats(root: zarr.Group, attrs: dict[str, Any], groups: list[str]) -> StoreStats:
    """Empty statistics of the store's plates, negative-control wells marked as its dataset's schema declares."""
    try:
        controls = load_schema(attrs["dataset"]).controls
    except SchemaError:
        controls = Controls(none=f"dataset {attrs['dataset']!r} has no schema here to declare its controls")
    masks = {}
    for group in groups:
        n_wells = len(read_array(root, f"{group}/well"))
        path = f"{group}/{controls.column}"
        values = read_array(root, path) if controls.column and path in root else np.array([])
        masks[group] = control_mask(values, controls) if values.shape == (n_wells,) else np.zeros(n_wells, dtype=bool)
    channels = tuple(c["id"] for c in attrs["channels"])
    return StoreStats.of(np.dtype(attrs["dtype"]), channels, len(attrs["sites"]), controls, masks)


def _recorded(output: Output) -> Iterator[tuple[str, int, WellStats]]:
    """The wells an interrupted `platezarr stats` already measured, one at a time (each holds a histogram)."""
    for group, well_index, record in output.well_records(f"{STATS_RECORDS}/"):
        yield group, well_index, WellStats.from_record(record)
