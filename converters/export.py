"""`platezarr export`: write the plates of a finished native store in another format (OME-Zarr), no source needed.

The store is turned into a plan (its plates, wells, metadata columns and which images are present),
each well is read whole through the one site reader (converters/sitereader.py) and handed to the
format's `write_well`, all by the write path of `convert` (`convert.write_plan`): resume after a
kill, --scheduler, progress and the summary work as they do there.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from converters.convert import ProgressCallback, Summary, _noop, write_plan
from converters.errors import OptionError
from converters.formats import FORMATS, StoreFormat, format_for
from converters.options import Options
from converters.plan import Plan, PlatePlan, Report, StoreSettings, WellTask, WellTasks
from converters.schema import Column, ColumnLevel, ColumnType, load_schema

if TYPE_CHECKING:  # the store's readers are imported by the export alone (`import converters` loads no xarray)
    import xarray as xr

    from converters.output import Output
    from converters.sitereader import SiteReader
    from converters.write import WellResult

EXPORT_FORMATS = [name for name in FORMATS if name != "native"]
NOT_COLUMNS = {"well", "row", "column"}  # coordinates on `well` that are the plate grid, not metadata


@dataclass(frozen=True)
class ExportJob:
    """What every well task of an export shares: the store's reader, the output and its format."""

    reader: SiteReader
    output: Output
    format: StoreFormat


def export(store: str | os.PathLike[str], out: str | os.PathLike[str], format: str = "ome-zarr",
           plates: list[str] | None = None, *, progress: ProgressCallback = _noop, **options: Any) -> Summary:
    """Write the native store's plates (all, or those named `EXP/PLATE` in `plates`) as `format` into `out`,
    resuming an interrupted export there. `options` are `workers`, `scheduler`, `overwrite`, `storage_options`."""
    return run_export(store, out, Options(format=format, **options), plates, progress)


def run_export(store: str | os.PathLike[str], out: str | os.PathLike[str], options: Options,
               plates: list[str] | None = None, progress: ProgressCallback = _noop) -> Summary:
    """`export` with its options as one value."""
    from converters.output import Output, check_output
    from converters.sitereader import SiteReader

    if options.format not in EXPORT_FORMATS:
        raise OptionError(f"export writes {', '.join(EXPORT_FORMATS)}, not {options.format!r}")
    started = time.perf_counter()
    plan = store_plan(store, plates, options.storage_options)
    output = Output.open(out, storage_options=options.storage_options)
    check_output(output, plan.source)
    fmt = format_for(options.format, plan)
    reader = SiteReader(store, plan.plates[0].group, options.storage_options)
    return write_plan(plan, output, fmt, options, export_well, ExportJob(reader, output, fmt), progress, started)


def export_well(job: ExportJob, task: WellTask) -> list[WellResult]:
    """Read one stored well whole, checksums checked, write it in the output's format, then its completion record
    (with the well's pixel statistics, which give the output's display windows as they do in `convert`)."""
    from converters.stats import well_stats
    from converters.write import WellResult, record_well

    block = job.reader.read_well(task.group, task.well_index, task.well)
    present = np.zeros(block.shape[:2], dtype=bool)
    for site, channel, _ in task.files:
        present[site, channel] = True
    job.format.write_well(job.output, task.group, task.well_index, block)
    result = WellResult(task.group, task.well_index, present, 0, stats=well_stats(block, present))
    record_well(job.output, result)
    return [result]


def store_plan(url: str | os.PathLike[str], plates: list[str] | None,
               storage_options: dict[str, Any] | None = None) -> Plan:
    """The plan of writing a finished native store again: its plates (or those asked for), their wells and
    metadata columns as coordinates give them, and a task per well with images (its present ones as files)."""
    import xarray as xr

    from converters.readers import open_root, plate_groups, read_array

    root, source, attrs = open_root(url, storage_options)
    groups = _chosen(plate_groups(root), plates, source.location)
    schema = dataclasses.replace(load_schema(attrs["dataset"]), image_shape=tuple(attrs["image_shape"]),
                                 sites=tuple(attrs["sites"]))
    columns: dict[str, Column] = {}
    planned = []
    for group in groups:
        ds = xr.open_zarr(source.store, group=group, consolidated=True, zarr_format=3)
        columns |= {c.name: c for c in _columns(ds)}
        planned.append(_plate(ds, group, schema.channel_ids, read_array(root, f"{group}/present")))
    recorded = attrs["source"]
    share = sum(p.n_images for p in planned) / max(attrs["counts"]["images"], 1)  # of the source bytes, for the summary
    return Plan(
        schema=schema, source=source.location, metadata_location=recorded.get("metadata"),
        metadata_format=recorded.get("metadata_format"), metadata_columns=list(columns.values()),
        settings=StoreSettings.default(schema, dtype=np.dtype(attrs["dtype"])), dtype=np.dtype(attrs["dtype"]),
        plates=planned,
        source_bytes=round((recorded.get("bytes") or 0) * share), missing_images=Report(**attrs["missing_images"]),
        images_without_rows=Report(), rows_without_images=Report(), ignored_files=Report(),
        source_attrs={"pixel_size_um": attrs.get("pixel_size_um"), "channels": {c["id"]: c for c in attrs["channels"]},
                      **{k: recorded[k] for k in ("measurements", "options") if k in recorded}},
    )


def _chosen(groups: list[str], wanted: list[str] | None, where: str) -> list[str]:
    """The plate groups asked for, in the store's order; an OptionError naming the store's plates for any it lacks."""
    if not wanted:
        return groups
    unknown = [g for g in wanted if g not in groups]
    if unknown:
        raise OptionError(f"{where} has no plate {', '.join(map(repr, unknown))}; its plates are: {', '.join(groups)}")
    return [g for g in groups if g in wanted]


def _columns(ds: xr.Dataset) -> list[Column]:
    """The metadata columns of a plate: its variables on `well` or (`well`, `site`) beyond the plate grid (read as
    coordinates or, where a later write left the group's attributes without xarray's list of them, as variables)."""
    found = []
    for name, variable in ds.variables.items():
        if variable.dims in (("well",), ("well", "site")) and name not in NOT_COLUMNS:
            kind: ColumnType = "int" if variable.dtype.kind in "iu" else "float" if variable.dtype.kind == "f" else "str"
            level: ColumnLevel = "well" if variable.dims == ("well",) else "site"
            found.append(Column(str(name), kind, level, variable.attrs.get("description", "")))
    return found


def _plate(ds: xr.Dataset, group: str, channels: tuple[str, ...], present: np.ndarray) -> PlatePlan:
    """One plate of the store as planned: its metadata rows (one per well and site) and a task per well with images."""
    wells = [str(w) for w in ds["well"].values]
    sites = ds["site"].values.tolist()
    rows = pd.DataFrame({"experiment": str(ds["experiment"].item()), "plate": ds["plate"].item(),
                         "well": np.repeat(wells, len(sites)), "site": np.tile(sites, len(wells))})
    for column in _columns(ds):
        values = ds[column.name].values
        rows[column.name] = values.ravel() if column.level == "site" else np.repeat(values, len(sites))
    w, s, c = np.nonzero(present)
    labels = [f"{group}/{wells[i]} site {sites[j]} {channels[k]}" for i, j, k in zip(w, s, c)]
    well_index, starts = np.unique(w, return_index=True)
    tasks = WellTasks(group, wells, well_index.astype(np.int32), np.append(starts, len(w)).astype(np.int64),
                      s.astype(np.int16), c.astype(np.int16), pa.array(labels, type=pa.string()))
    return PlatePlan(str(ds["experiment"].item()), ds["plate"].item(), group, wells, rows, tasks)
