"""The conversion, as a straight line: scan sources → plan the store → write wells → finalize."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa

from converters.decode import probe_dtype
from converters.detect import detect_dataset, nothing_found
from converters.errors import SourceError
from converters.layouts import SCANNERS
from converters.layouts.files import Scan, SourceIndex
from converters.location import local_copy
from converters.metadata import ORIGIN, read_metadata
from converters.options import Options
from converters.plan import Plan, StoreSettings, make_plan, parse_chunks
from converters.schema import DatasetSchema, load_schema
from converters.source import Listing, Source, open_source

if TYPE_CHECKING:  # the write path's modules are imported where it starts: a dry run loads no zarr store code
    from zarr.abc.store import Store

    from converters.formats import StoreFormat
    from converters.output import Output
    from converters.write import WellResult

log = logging.getLogger("platezarr")
PROBES = 9  # images whose header decides the store's bit depth
Job = TypeVar("Job")


class Progress(NamedTuple):
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
    plan: dict[str, Any]
    seconds: float
    bytes_out: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "out": self.out,
            "dataset": p["dataset"],
            "dataset_detected": p["dataset_detected"],
            "experiments": p["experiments"],
            "plates": p["plates"],
            "wells": p["wells"],
            "sites": p["sites"],
            "images": p["images"],
            "missing_images": p["missing_images"],
            "images_without_metadata": p["images_without_metadata"],
            "metadata_without_images": p["metadata_without_images"],
            "ignored_files": p["ignored_files"],
            **{k: v for k, v in p.items() if k.startswith("embeddings") or k.endswith("_without_embeddings")},
            "bytes_in": p["source_bytes"],
            "bytes_out": self.bytes_out,
            "ratio": round(self.bytes_out / p["source_bytes"], 4) if p["source_bytes"] else None,
            "seconds": round(self.seconds, 3),
            "sites_per_second": round(p["sites"] / self.seconds, 1) if self.seconds else None,
        } | self.extra


def _noop(_: Progress) -> None:
    return None


def build_plan(src: str | os.PathLike[str], options: Options = Options(),
               progress: ProgressCallback = _noop) -> tuple[Plan, Source]:
    """Scan the source, the metadata and the embeddings and plan the store; reads one image header, no pixels."""
    source = open_source(src, options.storage_options)
    listing = Listing.of(source.walk(on_error=options.on_error))
    progress(Progress("scan", len(listing), len(listing), "files"))
    dataset = options.dataset
    if isinstance(dataset, DatasetSchema):
        schema = dataset
    else:
        schema = load_schema(dataset) if dataset else detect_dataset(source, listing)
    log.info("dataset %s (%s)", schema.name, "given" if dataset else "detected")
    table = None
    if options.metadata is not None:
        table = read_metadata(local_copy(options.metadata, options.storage_options), schema)
        table.location = _shown(options.metadata) or table.location
        table.table = table.table.drop(columns=[ORIGIN])  # file:line of each row, for the reader's errors alone
        _release_memory()
    index = SCANNERS[schema.layout](Scan(source, listing, schema, options.experiment, options.plate, table))
    if index.images.empty:
        if table is None:
            raise nothing_found(source, schema, listing)
        log.warning("%s; planning from the metadata table alone", nothing_found(source, schema, listing))
    del listing  # its names are in the index now
    vectors = None
    if options.embeddings is not None:
        from converters.embeddings import read_embeddings

        vectors = read_embeddings(local_copy(options.embeddings, options.storage_options), schema,
                                  _shown(options.embeddings))
    dtype = _store_dtype(source, schema, index)
    settings = StoreSettings.default(schema, options.compression, dtype, parse_chunks(options.chunks))
    plan = make_plan(schema, index, source.url, table, dtype, settings, detected=dataset is None, embeddings=vectors)
    del index, table
    _release_memory()
    return plan, source


def _release_memory() -> None:
    """Hand back to the system what Arrow's allocator keeps of the columns freed since (it holds on to freed
    memory for reuse, so a plan of millions of sites would otherwise keep the peak of its reading as it writes)."""
    pa.default_memory_pool().release_unused()


def _shown(location: str | os.PathLike[str]) -> str | None:
    """How a remote table is named in messages and attributes: its URL, not the temporary copy read."""
    return os.fspath(location) if "://" in os.fspath(location) else None


def _store_dtype(source: Source, schema: DatasetSchema, index: SourceIndex) -> np.dtype:
    """The schema's dtype, unless the images are deeper: a 16-bit release is stored as uint16, never cut.

    The images' depth is the one most of `PROBES` images spread over the source have, so that one odd
    image decides nothing: it is refused (or skipped) by name when its well is written, as is a probed
    image whose header is bad."""
    if index.dtype is not None:
        return max(schema.dtype, index.dtype, key=lambda d: d.itemsize)
    paths = index.images["path"]
    depths: Counter[np.dtype] = Counter()
    for rel in paths.iloc[np.unique(np.linspace(0, len(paths) - 1, min(PROBES, len(paths))).astype(int))]:
        try:
            depths[probe_dtype(source.read(rel), source.path(rel))] += 1
        except SourceError as error:
            log.info("bit depth not probed from %s", error)
    probed = max(depths, key=lambda d: (depths[d], d.itemsize), default=schema.dtype)
    return max(schema.dtype, probed, key=lambda d: d.itemsize)


def convert(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str] | Store,
    dataset: str | DatasetSchema | None = None,
    metadata: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressCallback = _noop,
    **options: Any,
) -> Summary:
    """Convert the dataset at `src` into a platezarr store at `out`, resuming an interrupted run there.

    `options` are those of `converters.options.Options`: `workers` parallel wells locally, or every
    worker of the dask.distributed cluster at `scheduler`; `on_error="skip"` records bad images
    (present=False) instead of stopping at the first one; `storage_options` reach buckets (e.g.
    {"endpoint": URL}); `embeddings` is Recursion's embeddings table, attached to each plate;
    `compression="compact"` stores JPEG-LS (about 0.6x the default's bytes; readers need platezarr);
    `format="ome-zarr"` writes OME-NGFF 0.5 HCS plates for viewers instead (docs/viewing.md).
    """
    return run_conversion(src, out, Options(dataset=dataset, metadata=metadata, **options), progress)


def run_conversion(src: str | os.PathLike[str], out: str | os.PathLike[str] | Store, options: Options,
                   progress: ProgressCallback = _noop) -> Summary:
    """`convert` with its options as one value: scan and plan, then write the plan (`write_plan`)."""
    from converters.formats import format_for
    from converters.output import Output, check_output
    from converters.resume import keep_stored_chain
    from converters.tasks import run_task
    from converters.write import WellJob, well_shape

    started = time.perf_counter()
    plan, source = build_plan(src, options, progress)
    output = Output.open(out, storage_options=options.storage_options)
    if plan.n_images == 0:
        raise SourceError(f"{source.url}: not one image of the plan's {plan.n_sites} sites is in the source; "
                          "nothing to convert (--dry-run shows the plan)")
    check_output(output, source.url)
    plan = keep_stored_chain(output, plan, options.overwrite, chunks_given=options.chunks is not None)
    fmt = format_for(options.format, plan)
    job = WellJob(source, output, fmt, well_shape(plan), plan.dtype.str, options.on_error)
    return write_plan(plan, output, fmt, options, run_task, job, progress, started)


def write_plan(plan: Plan, output: Output, fmt: StoreFormat, options: Options,
               task: Callable[[Job, Any], list[WellResult]], job: Job, progress: ProgressCallback,
               started: float) -> Summary:
    """Prepare the output (a fresh skeleton, or the wells a run of the same plan finished), run `task(job, ...)` on
    each task left on the executor, finalize: the one write path of `convert` and `export` (converters/export.py)."""
    from converters.execute import run_tasks
    from converters.finalize import now, reported
    from converters.lock import owning
    from converters.output import storage_errors
    from converters.resume import finished_wells, plan_identity, prepare
    from converters.write import WrittenWells

    written = WrittenWells.empty(plan)
    identity = plan_identity(plan)  # walks every task's files: once per conversion
    with closing(written.stats), owning(output):
        finished: set[tuple[str, int]] = set()
        with storage_errors(output):
            if prepare(output, plan, identity, fmt, options.overwrite, now()):
                for result in finished_wells(output):
                    written.add(result)
                    finished.add((result.group, result.well_index))
                log.info("resuming %s: %d wells already written", output.location, len(finished))
        total = plan.n_sites
        done = total - plan.wells_left(finished) * len(plan.schema.sites)
        progress(Progress("write", done, total))
        for results in run_tasks(task, job, plan.work(finished), options.parallel, options.scheduler):
            for result in results:
                written.add(result)
            done += len(results) * len(plan.schema.sites)
            progress(Progress("write", done, total))
        if not any(mask.any() for mask in written.present.values()):  # e.g. tars planned from metadata, all lacking
            raise SourceError(f"{plan.source}: not one of the {plan.n_images} planned images could be stored (all "
                              "missing or skipped as bad); the store is left unfinished: check the source and "
                              "metadata")
        progress(Progress("finalize", 0, 1, "steps"))
        with storage_errors(output):
            fmt.finalize(output, plan, written, identity)
        progress(Progress("finalize", 1, 1, "steps"))
    skipped = written.skipped()
    extra = {"resumed_wells": len(finished), "skipped_images": {"count": len(skipped), "files": skipped}}
    return Summary(output.location, reported(plan, written), time.perf_counter() - started, output.nbytes(), extra)


def plan_only(src: str | os.PathLike[str], options: Options = Options(), progress: ProgressCallback = _noop) -> dict[str, Any]:
    """The plan as plain data (what `--dry-run` prints); reads no pixels and writes nothing."""
    return build_plan(src, options, progress)[0].describe()

