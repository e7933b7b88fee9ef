"""The conversion, as a straight line: scan sources → plan the store → write wells → finalize."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from converters.decode import probe_dtype
from converters.detect import detect_dataset
from converters.execute import run_wells
from converters.finalize import LAYOUT_VERSION, index_table, write_index, write_present, write_root
from converters.layouts import SCANNERS
from converters.metadata import read_metadata
from converters.output import output_path, prepare_output, store_bytes
from converters.plan import Plan, make_plan
from converters.schema import DatasetSchema, load_schema
from converters.source import LocalSource
from converters.template import write_template
from converters.version import __version__
from converters.write import WellJob

log = logging.getLogger("platezarr")


@dataclass(frozen=True)
class Progress:
    """A progress report: `done` of `total` units (files, sites) of one stage."""

    stage: str
    done: int
    total: int
    unit: str = "sites"


ProgressCallback = Callable[[Progress], None]


@dataclass
class Summary:
    """What a conversion did, for people (`str`) and machines (`as_dict`)."""

    out: str
    plan: dict
    seconds: float
    bytes_out: int
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        p = self.plan
        return {
            "out": self.out,
            "dataset": p["dataset"],
            "experiments": p["experiments"],
            "plates": p["plates"],
            "wells": p["wells"],
            "sites": p["sites"],
            "images": p["images"],
            "missing_images": p["missing_images"],
            "images_without_metadata": p["images_without_metadata"],
            "metadata_without_images": p["metadata_without_images"],
            "ignored_files": p["ignored_files"],
            "bytes_in": p["source_bytes"],
            "bytes_out": self.bytes_out,
            "ratio": round(self.bytes_out / p["source_bytes"], 4) if p["source_bytes"] else None,
            "seconds": round(self.seconds, 3),
            "sites_per_second": round(p["sites"] / self.seconds, 1) if self.seconds else None,
        } | self.extra


def _noop(_: Progress) -> None:
    return None


def build_plan(src: str | os.PathLike[str], dataset: str | DatasetSchema | None = None, metadata: str | os.PathLike[str] | None = None,
               progress: ProgressCallback = _noop) -> tuple[Plan, LocalSource]:
    """Scan the source and the metadata and plan the store; reads one image header, no pixels."""
    source = LocalSource.open(src)
    listing = list(source.walk())
    progress(Progress("scan", len(listing), len(listing), "files"))
    if isinstance(dataset, DatasetSchema):
        schema = dataset
    else:
        schema = load_schema(dataset) if dataset else detect_dataset(source, listing)
    log.info("dataset %s (%s)", schema.name, "given" if dataset else "detected")
    index = SCANNERS[schema.layout](source, listing, schema)
    table = read_metadata(metadata, schema) if metadata is not None else None
    dtype = _store_dtype(source, schema, index.images["path"].tolist())
    return make_plan(schema, index, source.url, table, dtype), source


def _store_dtype(source: LocalSource, schema: DatasetSchema, paths: list[str]) -> np.dtype:
    """The schema's dtype, unless the images are deeper: a 16-bit release is stored as uint16, never cut."""
    if not paths:
        return schema.dtype
    return max(schema.dtype, probe_dtype(source.read(paths[0]), source.path(paths[0])), key=lambda d: d.itemsize)


def convert(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dataset: str | DatasetSchema | None = None,
    metadata: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback = _noop,
) -> Summary:
    """Convert the dataset at `src` into a platezarr store at `out`; returns what was done."""
    started = time.perf_counter()
    plan, source = build_plan(src, dataset, metadata, progress)
    store = prepare_output(out, source.root, overwrite)
    location = str(output_path(out))
    plates = write_template(plan, store, {"started": _now(), "converter_version": __version__})
    present = write_wells(plan, location, workers or os.cpu_count() or 1, progress)
    progress(Progress("finalize", 0, 1, "steps"))
    for group, mask in present.items():
        write_present(store, group, mask)
    table = index_table(plan, plates, present)
    write_index(store, table)
    write_root(store, root_attrs(plan, len(table)))
    progress(Progress("finalize", 1, 1, "steps"))
    return Summary(location, plan.describe(), time.perf_counter() - started, store_bytes(location))


def write_wells(plan: Plan, out: str, workers: int, progress: ProgressCallback) -> dict[str, np.ndarray]:
    """Write every well's shard in parallel; returns each plate's present mask from the wells' reports."""
    schema = plan.schema
    shape = (len(schema.sites), len(schema.channels), *schema.image_shape)
    job = WellJob(plan.source, out, shape, plan.dtype.str)
    present = {p.group: np.zeros((len(p.wells), *shape[:2]), dtype=bool) for p in plan.plates}
    tasks = [t for p in plan.plates for t in p.tasks]
    total, done = plan.n_sites, plan.n_sites - len(tasks) * len(schema.sites)
    progress(Progress("write", done, total))
    for result in run_wells(job, tasks, workers):
        present[result.group][result.well_index] = result.present
        done += len(schema.sites)
        progress(Progress("write", done, total))
    return present


def root_attrs(plan: Plan, n_index: int) -> dict:
    """The root `platezarr` attribute (SPEC.md, store layout v1); its presence marks the store complete."""
    described = plan.describe()
    return {
        "layout_version": LAYOUT_VERSION,
        "dataset": plan.schema.name,
        "title": plan.schema.title,
        "channels": [c.attrs() for c in plan.schema.channels],
        "image_shape": list(plan.schema.image_shape),
        "dtype": str(plan.dtype),
        "sites": list(plan.schema.sites),
        "pixel_size_um": plan.schema.pixel_size_um,
        "chunks": described["chunks"],
        "shards": described["shards"],
        "codec": described["codec"],
        "converter_version": __version__,
        "created": _now(),
        "counts": {k: described[k] for k in ("experiments", "plates", "wells", "sites", "images")} | {"index_rows": n_index},
        "missing_images": described["missing_images"],
        "source": {
            "url": plan.source,
            "layout": plan.schema.layout,
            "metadata": plan.metadata_location,
            "metadata_format": plan.metadata_format,
            "bytes": plan.source_bytes,
        },
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
