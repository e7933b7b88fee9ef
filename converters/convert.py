"""The conversion, as a straight line: scan sources → plan the store → write wells → finalize."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from zarr.abc.store import Store

from converters.decode import probe_dtype
from converters.detect import detect_dataset
from converters.embeddings import read_embeddings
from converters.execute import run_tasks
from converters.finalize import LAYOUT_VERSION, index_table, write_index, write_present, write_root
from converters.layouts import SCANNERS
from converters.layouts.files import SourceIndex
from converters.metadata import read_metadata
from converters.errors import StoreError
from converters.output import MARKER_ATTR, RECORDS, ROOT_ATTR, Output, check_output, storage_errors
from converters.records import TEMPLATE_KEY, differences, finished_wells, plan_identity
from converters.plan import EXAMPLES, Plan, StoreSettings, make_plan, parse_compression
from converters.schema import DatasetSchema, load_schema
from converters.location import local_copy
from converters.source import Listing, Source, open_source
from converters.tasks import run_task
from converters.template import plate_dataset, write_template
from converters.version import __version__
from converters.write import WellJob, WellResult

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


def build_plan(src: str | os.PathLike[str], dataset: str | DatasetSchema | None = None, metadata: str | os.PathLike[str] | None = None,
               progress: ProgressCallback = _noop, storage_options: dict | None = None,
               *, experiment: str | None = None, plate: str | None = None,
               embeddings: str | os.PathLike[str] | None = None, compression: str = "default") -> tuple[Plan, Source]:
    """Scan the source, the metadata and the embeddings and plan the store; reads one image header, no pixels."""
    parse_compression(compression)
    source = open_source(src, storage_options)
    listing = Listing.of(source.walk())
    progress(Progress("scan", len(listing), len(listing), "files"))
    if isinstance(dataset, DatasetSchema):
        schema = dataset
    else:
        schema = load_schema(dataset) if dataset else detect_dataset(source, listing)
    log.info("dataset %s (%s)", schema.name, "given" if dataset else "detected")
    table = None
    if metadata is not None:
        table = read_metadata(local_copy(metadata, storage_options), schema)
        table.location = os.fspath(metadata) if "://" in os.fspath(metadata) else table.location
    index = SCANNERS[schema.layout](source, listing, schema, experiment=experiment, plate=plate, metadata=table)
    del listing  # a tuple per file: its names are in the index now
    vectors = None
    if embeddings is not None:
        shown = os.fspath(embeddings) if "://" in os.fspath(embeddings) else None
        vectors = read_embeddings(local_copy(embeddings, storage_options), schema, shown)
    dtype = _store_dtype(source, schema, index)
    settings = StoreSettings.default(schema, compression)
    return make_plan(schema, index, source.url, table, dtype, settings, detected=dataset is None,
                     embeddings=vectors), source


def _store_dtype(source: Source, schema: DatasetSchema, index: SourceIndex) -> np.dtype:
    """The schema's dtype, unless the images are deeper: a 16-bit release is stored as uint16, never cut."""
    if index.dtype is not None:
        probed = index.dtype
    elif len(index.images):
        first = index.images["path"].iloc[0]
        probed = probe_dtype(source.read(first), source.path(first))
    else:
        return schema.dtype
    return max(schema.dtype, probed, key=lambda d: d.itemsize)


def convert(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str] | Store,
    dataset: str | DatasetSchema | None = None,
    metadata: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    on_error: str = "fail",
    progress: ProgressCallback = _noop,
    storage_options: dict | None = None,
    experiment: str | None = None,
    plate: str | None = None,
    embeddings: str | os.PathLike[str] | None = None,
    compression: str = "default",
) -> Summary:
    """Convert the dataset at `src` into a platezarr store at `out`, resuming an interrupted run there.

    `workers` parallel wells locally, or every worker of the dask.distributed cluster at `scheduler`;
    `on_error="skip"` records bad images (present=False) instead of stopping at the first one;
    `storage_options` reach buckets (e.g. {"endpoint": URL} or {"skip_signature": True});
    `embeddings` is Recursion's embeddings table (or folder of tables), attached to each plate;
    `compression="compact"` stores JPEG-LS (about 0.6x the default's bytes; readers need platezarr).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    started = time.perf_counter()
    plan, source = build_plan(src, dataset, metadata, progress, storage_options, experiment=experiment, plate=plate,
                              embeddings=embeddings, compression=compression)
    output = Output.open(out, storage_options=storage_options)
    check_output(output, source.url)
    identity = plan_identity(plan)
    with storage_errors(output):
        finished = prepare(output, plan, identity, overwrite)
    job = WellJob(source, output, _well_shape(plan), plan.dtype.str, on_error)
    results = Written(plan)
    for result in finished.values():
        results.add(result)
    total = plan.n_sites
    done = total - plan.wells_left(finished) * len(plan.schema.sites)
    progress(Progress("write", done, total))
    for written in run_tasks(run_task, job, plan.work(finished), workers or os.cpu_count() or 1, scheduler):
        for result in written:
            results.add(result)
        done += len(written) * len(plan.schema.sites)
        progress(Progress("write", done, total))
    progress(Progress("finalize", 0, 1, "steps"))
    with storage_errors(output):
        finalize(output, plan, results)
    progress(Progress("finalize", 1, 1, "steps"))
    return _summary(output, plan, results, resumed=len(finished), seconds=time.perf_counter() - started)


def plan_only(src: str | os.PathLike[str], dataset: str | DatasetSchema | None = None,
              metadata: str | os.PathLike[str] | None = None, progress: ProgressCallback = _noop,
              storage_options: dict | None = None,
              *, experiment: str | None = None, plate: str | None = None,
              embeddings: str | os.PathLike[str] | None = None, compression: str = "default") -> dict:
    """The plan as plain data (what `--dry-run` prints); reads no pixels and writes nothing."""
    return build_plan(src, dataset, metadata, progress, storage_options, experiment=experiment, plate=plate,
                      embeddings=embeddings, compression=compression)[0].describe()


def prepare(output: Output, plan: Plan, identity: dict, overwrite: bool) -> dict[tuple[str, int], WellResult]:
    """Make the output ready: a fresh template, or the wells an interrupted run of the same plan finished."""
    meta = output.root_meta()
    state = output.classify(meta)
    if state == "foreign":
        raise StoreError(f"{output.location} exists and is not a platezarr store; it is left untouched: choose another output")
    if state != "absent" and overwrite:
        output.clear()
        state = "absent"
    if state == "complete":
        raise StoreError(f"{output.location} already holds a complete platezarr store; pass --overwrite to replace it")
    if state != "absent":
        attrs = (meta or {}).get("attributes", {})
        stored = attrs.get(MARKER_ATTR, attrs.get(ROOT_ATTR, {})).get("plan", {})
        changed = differences(stored, identity)
        if changed:
            raise StoreError(
                f"{output.location} holds a conversion of a different plan ({'; '.join(changed)}); "
                "pass --overwrite to start over, or choose another output"
            )
        if output.read_json(TEMPLATE_KEY) is not None:
            output.delete_partials()
            finished = finished_wells(output)
            log.info("resuming %s: %d wells already written", output.location, len(finished))
            return finished
        output.clear()
    marker = {"plan": identity, "started": _now(), "converter_version": __version__}
    write_template(plan, output.store, marker)
    output.write_json(TEMPLATE_KEY, {"plates": len(plan.plates)})
    return {}


class Written:
    """What the written wells reported, kept small: each plate's present mask, filled in as wells finish,
    and the results of only the wells with skipped or missing images (not a WellResult per well)."""

    def __init__(self, plan: Plan) -> None:
        self.present = {p.group: np.zeros((len(p.wells), *_well_shape(plan)[:2]), dtype=bool) for p in plan.plates}
        self.notes: dict[tuple[str, int], WellResult] = {}

    def add(self, result: WellResult) -> None:
        self.present[result.group][result.well_index] = result.present
        if result.skipped or result.missing:
            self.notes[(result.group, result.well_index)] = result


def finalize(output: Output, plan: Plan, results: Written) -> None:
    """Present masks, the index, then the root attribute and consolidated metadata: the store is complete."""
    present = results.present
    for group, mask in present.items():
        write_present(output.store, group, mask)
    table = index_table(plan, {p.group: plate_dataset(plan, p) for p in plan.plates}, present)
    write_index(output.store, table)
    attrs = root_attrs(plan, _reported(plan, results.notes), len(table), _skipped(results.notes))
    write_root(output.store, attrs | {"plan": plan_identity(plan)})
    output.delete(RECORDS)


def _well_shape(plan: Plan) -> tuple[int, int, int, int]:
    schema = plan.schema
    return (len(schema.sites), len(schema.channels), *schema.image_shape)


def _skipped(results: dict[tuple[str, int], WellResult]) -> list[dict[str, str]]:
    return [{"file": f, "reason": r} for key in sorted(results) for f, r in results[key].skipped]


def _summary(output: Output, plan: Plan, results: Written, resumed: int, seconds: float) -> Summary:
    skipped = _skipped(results.notes)
    extra = {"resumed_wells": resumed, "skipped_images": {"count": len(skipped), "files": skipped}}
    return Summary(output.location, _reported(plan, results.notes), seconds, output.nbytes(), extra)


def _reported(plan: Plan, results: dict[tuple[str, int], WellResult]) -> dict:
    """The plan as data, with the images found missing only while writing (tars planned from metadata) counted in."""
    data = plan.describe()
    found = [name for key in sorted(results) for name in results[key].missing]
    if found:
        planned = data["missing_images"]
        data["missing_images"] = {"count": planned["count"] + len(found), "examples": (planned["examples"] + found)[:EXAMPLES]}
        data["images"] -= len(found)
    return data


def root_attrs(plan: Plan, described: dict, n_index: int, skipped: list[dict[str, str]]) -> dict:
    """The root `platezarr` attribute (SPEC.md, store layout v1); its presence marks the store complete."""
    return {
        "layout_version": LAYOUT_VERSION,
        "dataset": plan.schema.name,
        "title": plan.schema.title,
        "channels": plan.channel_attrs(),
        "image_shape": list(plan.schema.image_shape),
        "dtype": str(plan.dtype),
        "sites": list(plan.schema.sites),
        "pixel_size_um": plan.pixel_size_um,
        "chunks": described["chunks"],
        "shards": described["shards"],
        "compression": described["compression"],
        "codec": described["codec"],
        "converter_version": __version__,
        "created": _now(),
        "counts": {k: described[k] for k in ("experiments", "plates", "wells", "sites", "images")} | {"index_rows": n_index},
        "missing_images": described["missing_images"],
        "skipped_images": {"count": len(skipped), "examples": skipped[:5]},
        "embeddings": _embeddings_attrs(described),
        "source": {
            "url": plan.source,
            "layout": plan.schema.layout,
            "metadata": plan.metadata_location,
            "metadata_format": plan.metadata_format,
            "bytes": plan.source_bytes,
            **plan.source_details,
        },
    }


def _embeddings_attrs(described: dict) -> dict | None:
    """Where the embeddings came from, and their rows with no site in the store and sites with no row."""
    if described["embeddings"] is None:
        return None
    gaps = {k: v for k, v in described.items() if k == "embeddings_without_sites" or k.endswith("_without_embeddings")}
    return described["embeddings"] | gaps


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
