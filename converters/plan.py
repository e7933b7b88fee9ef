"""Plan the store: join the scanned images with the metadata into plates, wells and their tasks.

A task is one well (`WellTask`), or for sources that pack a plate into one tar, that tar (`TarTask`).

The plan is plain data: it can be printed (`--dry-run`), compared with an existing store, and handed
to workers. Nothing here reads pixels or writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from converters.embeddings import EmbeddingsTable
from converters.errors import MetadataError, SourceError
from converters.layouts.files import SourceIndex
from converters.layouts.tars import TAR_COLUMN, MemberNames
from converters.metadata import ORIGIN, MetadataTable
from converters.schema import Column, DatasetSchema
from converters.wells import well_order

SITE_KEY = ["experiment", "plate", "well", "site"]
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
EXAMPLES = 5


ZSTD_LEVEL = 3
COMPRESSIONS = {
    "default": f"zstd-{ZSTD_LEVEL}",  # a standard Zarr v3 codec: plain zarr reads it; 1.25-1.4x the PNG bytes of RxRx1
    "compact": "platezarr.jpegls",  # JPEG-LS lossless: 0.8x the PNG bytes; readers need platezarr installed
}
SIZE_RATIO = {"default": 1.25, "compact": 0.85}  # output bytes / source PNG bytes, measured on RxRx1


def parse_compression(name: str) -> str:
    """`name` if it is a compression profile, else a ValueError listing them."""
    if name not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {name!r}")
    return name


@dataclass(frozen=True)
class StoreSettings:
    """How images are chunked, sharded and compressed (a whole site per chunk, a whole well per shard)."""

    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    compression: str = "default"

    def __post_init__(self) -> None:
        parse_compression(self.compression)

    @property
    def codec(self) -> str:
        """The chunk codec of the profile, as the plan and the store's attributes name it (e.g. `zstd-3`)."""
        return COMPRESSIONS[self.compression]

    @classmethod
    def default(cls, schema: DatasetSchema, compression: str = "default") -> StoreSettings:
        n_sites, n_channels = len(schema.sites), len(schema.channels)
        y, x = schema.image_shape
        return cls(chunks=(1, 1, n_channels, y, x), shards=(1, n_sites, n_channels, y, x), compression=compression)


@dataclass(frozen=True)
class WellTask:
    """One unit of work: read every image of one well and write its shard, exactly once."""

    group: str
    well_index: int
    well: str
    files: tuple[tuple[int, int, str], ...]  # (site index, channel index, source path, or member name in a tar)


@dataclass(frozen=True)
class TarTask:
    """One unit of work of a plate packed in a tar: stream the tar once, writing each of `wells` exactly once."""

    group: str
    tar: str  # the tar's path in the source
    wells: tuple[WellTask, ...]  # the plate's wells still to write; their files are member names
    names: MemberNames
    plate_wells: frozenset[str]  # every well of the plate group, written or not


class WellTasks:
    """A plate's well tasks in well order, kept compact (about 40 bytes per file: Arrow strings and small
    ints, not a Python tuple and str per file) and built one `WellTask` at a time as they are iterated."""

    def __init__(self, group: str, wells: list[str], well_index: np.ndarray, starts: np.ndarray,
                 site: np.ndarray, channel: np.ndarray, paths: pa.Array) -> None:
        self.group, self.wells = group, wells
        self.well_index, self.starts = well_index, starts  # per task; starts[i]:starts[i + 1] are its files
        self.site, self.channel, self.paths = site, channel, paths  # per file

    def __len__(self) -> int:
        return len(self.well_index)

    @property
    def n_files(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[WellTask]:
        for i, w in enumerate(self.well_index.tolist()):
            a, b = int(self.starts[i]), int(self.starts[i + 1])
            files = zip(self.site[a:b].tolist(), self.channel[a:b].tolist(), self.paths[a:b].to_pylist())
            yield WellTask(self.group, w, self.wells[w], tuple(files))

    def __repr__(self) -> str:
        return f"WellTasks({self.group!r}, {len(self)} wells, {self.n_files} files)"


@dataclass
class PlatePlan:
    """One plate group: its wells in plate order, the metadata rows that become its coordinates, and
    the tasks of its wells (with the tar that holds them, for the tars layout)."""

    experiment: str
    plate: int | str
    group: str
    wells: list[str]
    metadata: pd.DataFrame
    tasks: WellTasks
    tar: str | None = None

    @property
    def n_images(self) -> int:
        return self.tasks.n_files


@dataclass
class Report:
    """A count and the first few examples of one kind of gap between images and metadata."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, items: list[str]) -> Report:
        return cls(len(items), items[:EXAMPLES])


@dataclass
class EmbeddingsPlan:
    """An embeddings table and how it meets the store: its rows with no site there, the sites with no row."""

    table: EmbeddingsTable
    rows_without_sites: Report
    sites_without_rows: Report

    def for_plate(self, plate: PlatePlan, sites: tuple[int, ...]) -> np.ndarray:
        return self.table.for_plate(plate.experiment, plate.plate, plate.wells, sites)

    def describe(self) -> dict:
        return {"location": self.table.location, "level": self.table.level, "features": len(self.table.features)}


@dataclass
class Plan:
    """Everything needed to write the store, and everything worth telling the user before doing it."""

    schema: DatasetSchema
    source: str
    metadata_location: str | None
    metadata_format: str | None
    metadata_columns: list[Column]
    settings: StoreSettings
    dtype: np.dtype
    plates: list[PlatePlan]
    source_bytes: int
    missing_images: Report
    images_without_rows: Report
    rows_without_images: Report
    ignored_files: Report
    source_attrs: dict = field(default_factory=dict)
    dataset_detected: bool = False
    embeddings: EmbeddingsPlan | None = None

    @property
    def n_wells(self) -> int:
        return sum(len(p.wells) for p in self.plates)

    def work(self, finished: Container[tuple[str, int]]) -> Iterator[WellTask | TarTask]:
        """The tasks left once the `finished` (group, well index) are kept: one per well, or one per plate
        tar holding its unfinished wells (a tar whose wells are all finished is not read again).

        Built as they are consumed, a plate at a time, so a run never holds every task's file names at once."""
        for plate in self.plates:
            todo = [t for t in plate.tasks if (t.group, t.well_index) not in finished]
            if plate.tar is None:
                yield from todo
            elif todo:
                yield TarTask(plate.group, plate.tar, tuple(todo), MemberNames.of(self.schema), frozenset(plate.wells))

    def wells_left(self, finished: Container[tuple[str, int]]) -> int:
        """How many wells `work(finished)` writes, counted without building its tasks."""
        return sum((p.group, w) not in finished for p in self.plates for w in p.tasks.well_index.tolist())

    @property
    def n_sites(self) -> int:
        return self.n_wells * len(self.schema.sites)

    @property
    def n_images(self) -> int:
        return sum(p.n_images for p in self.plates)

    @property
    def pixel_size_um(self) -> float | None:
        """The pixel size the microscope recorded (e.g. in Index.idx.xml) when the source gives one, else the schema's."""
        return self.source_attrs.get("pixel_size_um", self.schema.pixel_size_um)

    @property
    def source_details(self) -> dict:
        """For the root `source` attribute: each acquisition (plate ids, start time, from Index.idx.xml) and
        the options the source was read with (`--experiment`, `--plate`), so `verify` can read it again."""
        return {key: self.source_attrs[key] for key in ("measurements", "options") if key in self.source_attrs}

    def channel_attrs(self) -> list[dict]:
        """Each channel's id, name, stain and target, plus what the microscope recorded for it when known."""
        recorded = self.source_attrs.get("channels", {})
        return [c.attrs() | recorded.get(c.id, {}) for c in self.schema.channels]

    @property
    def estimated_bytes(self) -> int:
        """Output size guess: the profile's measured ratio to the source files, or the raw size if unknown."""
        if self.source_bytes:
            return int(self.source_bytes * SIZE_RATIO[self.settings.compression])
        y, x = self.schema.image_shape
        return self.n_sites * len(self.schema.channels) * y * x * self.dtype.itemsize

    def describe(self) -> dict:
        """The plan as plain JSON-able data, for `--dry-run` and for comparing with an existing store."""
        return {
            "dataset": self.schema.name,
            "dataset_detected": self.dataset_detected,
            "source": self.source,
            "metadata": self.metadata_location,
            "metadata_format": self.metadata_format,
            "experiments": len({p.experiment for p in self.plates}),
            "plates": len(self.plates),
            "wells": self.n_wells,
            "sites": self.n_sites,
            "channels": list(self.schema.channel_ids),
            "images": self.n_images,
            "dtype": str(self.dtype),
            "image_shape": list(self.schema.image_shape),
            "chunks": list(self.settings.chunks),
            "shards": list(self.settings.shards),
            "compression": self.settings.compression,
            "codec": self.settings.codec,
            "source_bytes": self.source_bytes,
            "estimated_output_bytes": self.estimated_bytes,
            "missing_images": asdict(self.missing_images),
            "images_without_metadata": asdict(self.images_without_rows),
            "metadata_without_images": asdict(self.rows_without_images),
            "ignored_files": asdict(self.ignored_files),
        } | self._embeddings_gaps()

    def _embeddings_gaps(self) -> dict:
        """The embeddings table (location, level, features) and its gaps, reported like missing images."""
        if self.embeddings is None:
            return {"embeddings": None}
        e = self.embeddings
        return {"embeddings": e.describe(), "embeddings_without_sites": asdict(e.rows_without_sites),
                f"{e.table.level}s_without_embeddings": asdict(e.sites_without_rows)}


def make_plan(
    schema: DatasetSchema,
    index: SourceIndex,
    source: str,
    metadata: MetadataTable | None,
    dtype: np.dtype,
    settings: StoreSettings | None = None,
    detected: bool = False,
    embeddings: EmbeddingsTable | None = None,
) -> Plan:
    """Join images and metadata (and embeddings) into plates and well tasks, and count what is missing on either side."""
    images = _checked_images(index.images, schema, source)
    # no table: an empty one of fresh columns (an `images[...].iloc[:0]` slice would keep every plate holding
    # the whole images' string buffers alive through the write)
    rows = metadata.table if metadata is not None else pd.DataFrame(
        {k: pd.Series([], dtype=images[k].dtype) for k in SITE_KEY}).assign(**{ORIGIN: ""})
    unplaced = rows.iloc[:0]
    if metadata is not None and "experiment" not in metadata.keys:
        rows, unplaced = _place_rows(rows, images)
    image_sites = images[SITE_KEY].drop_duplicates()
    row_sites = rows[SITE_KEY]
    keyed = image_sites.merge(row_sites, how="outer", indicator=True)
    plates = []
    missing: list[str] = []
    images_by_plate = dict(tuple(images.groupby(["experiment", "plate"], sort=False)))
    rows_by_plate = dict(tuple(rows.groupby(["experiment", "plate"], sort=False)))
    for key, group_sites in keyed.groupby(["experiment", "plate"], sort=True):
        plate_images = images_by_plate.get(key, images.iloc[:0])
        plate_rows = rows_by_plate.get(key, rows.iloc[:0])
        plan = _plan_plate(schema, str(key[0]), key[1], group_sites, plate_images, plate_rows)
        missing.extend(_missing(plan, schema, len(missing)))
        plates.append(plan)
    missing_count = sum(len(p.wells) for p in plates) * len(schema.sites) * len(schema.channels) - len(images)
    return Plan(
        schema=schema,
        source=source,
        metadata_location=metadata.location if metadata else None,
        metadata_format=metadata.format if metadata else None,
        metadata_columns=metadata.columns if metadata else [],
        settings=settings or StoreSettings.default(schema),
        dtype=dtype,
        plates=plates,
        source_bytes=int(images["bytes"].sum()) if index.bytes is None else index.bytes,
        missing_images=Report(missing_count, missing[:EXAMPLES]),
        images_without_rows=_site_report(keyed, "left_only", schema) if metadata is not None else Report(),
        rows_without_images=_site_report(keyed, "right_only", schema, unplaced),
        ignored_files=Report(index.ignored_count, index.ignored[:EXAMPLES]),
        source_attrs=index.attrs,
        dataset_detected=detected,
        embeddings=_plan_embeddings(embeddings, plates, schema) if embeddings is not None else None,
    )


def _plan_embeddings(table: EmbeddingsTable, plates: list[PlatePlan], schema: DatasetSchema) -> EmbeddingsPlan:
    """Match the table's rows with the store's sites (or wells, for a per-well table), both ways."""
    columns = table.key_columns
    grids = [pd.DataFrame({"experiment": p.experiment, "plate": p.plate, "well": p.wells, "group": p.group})
             for p in plates]
    grid = pd.concat(grids, ignore_index=True) if grids else pd.DataFrame(columns=["experiment", "plate", "well", "group"])
    if table.level == "site":
        grid = grid.merge(pd.DataFrame({"site": np.array(schema.sites, dtype="int64")}), how="cross")
    keys = table.keys.assign(_row=np.arange(len(table.keys)))
    joined = keys.merge(grid.astype({"plate": keys["plate"].dtype}), on=columns, how="outer", indicator=True)
    rows_only = joined[joined["_merge"] == "left_only"]
    sites_only = joined[joined["_merge"] == "right_only"]
    names = [f"{r.group}/{r.well}" + (f" site {r.site}" if table.level == "site" else "")
             for r in sites_only.head(EXAMPLES).itertuples(index=False)]
    return EmbeddingsPlan(
        table,
        Report(len(rows_only), [str(table.ids[int(i)]) for i in rows_only["_row"].head(EXAMPLES)]),
        Report(len(sites_only), names),
    )


def _place_rows(rows: pd.DataFrame, images: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A table without experiments: each row takes the experiment of its plate's images. Rows of plates
    with no images cannot be placed; they are returned apart, to be reported."""
    experiments = images[["plate", "experiment"]].drop_duplicates()
    twice = experiments[experiments.duplicated("plate", keep=False)]
    if not twice.empty:
        plate = twice["plate"].iloc[0]
        raise MetadataError(
            f"plate {plate} has images in experiments {', '.join(sorted(twice[twice['plate'] == plate]['experiment']))}, "
            "and the metadata table names no experiment; convert each experiment separately"
        )
    rows = rows.assign(experiment=rows["plate"].map(experiments.set_index("plate")["experiment"]))
    placed = rows["experiment"].notna()
    return rows[placed], rows[~placed]


def _checked_images(images: pd.DataFrame, schema: DatasetSchema, source: str) -> pd.DataFrame:
    """Refuse files whose site or channel the schema does not know, naming the first such file."""
    images = images.copy()
    images["site_index"] = images["site"].map({s: i for i, s in enumerate(schema.sites)})
    images["channel_index"] = images["channel"].map({c: i for i, c in enumerate(schema.channel_ids)})
    for what, allowed in (("site", list(schema.sites)), ("channel", list(schema.channel_ids))):
        bad = images[f"{what}_index"].isna()
        if bad.any():
            raise SourceError(
                f"{source}/{images['path'][bad].iloc[0]}: {what} {images[what][bad].iloc[0]!r} is not one of "
                f"{schema.title}'s {what}s {allowed} ({int(bad.sum())} such files); check --dataset"
            )
    return images.astype({"site_index": "int64", "channel_index": "int64"})


def _plan_plate(
    schema: DatasetSchema,
    experiment: str,
    plate: int | str,
    sites: pd.DataFrame,
    images: pd.DataFrame,
    rows: pd.DataFrame,
) -> PlatePlan:
    group = f"{check_group_name(experiment, 'experiment')}/{check_group_name(schema.plate_name(plate), 'plate')}"
    wells = well_order(sites["well"].tolist())
    position = {w: i for i, w in enumerate(wells)}
    files = pd.DataFrame({"well_index": images["well"].map(position).to_numpy(dtype="int64"),
                          "site_index": images["site_index"].to_numpy(), "channel_index": images["channel_index"].to_numpy(),
                          "path": images["path"].to_numpy(dtype=object)})
    files = files.sort_values(["well_index", "site_index", "channel_index", "path"], ignore_index=True)
    well_index, starts = np.unique(files["well_index"].to_numpy(), return_index=True)
    tasks = WellTasks(group, wells, well_index.astype(np.int32), np.append(starts, len(files)).astype(np.int64),
                      files["site_index"].to_numpy(np.int16), files["channel_index"].to_numpy(np.int16),
                      pa.array(files["path"].tolist(), type=pa.string()))
    tar = str(images[TAR_COLUMN].iloc[0]) if TAR_COLUMN in images and len(images) else None
    return PlatePlan(experiment, plate, group, wells, rows.drop(columns=[ORIGIN]), tasks, tar)


def _missing(plan: PlatePlan, schema: DatasetSchema, already: int) -> list[str]:
    """Names of the first few expected images that have no file (only as many as the report shows)."""
    if already >= EXAMPLES:
        return []
    found = {(t.well_index, s, c) for t in plan.tasks for s, c, _ in t.files}
    out = []
    for w, well in enumerate(plan.wells):
        for s, site in enumerate(schema.sites):
            for c, channel in enumerate(schema.channel_ids):
                if (w, s, c) not in found:
                    out.append(f"{plan.group}/{well} site {site} {channel}")
                    if already + len(out) >= EXAMPLES:
                        return out
    return out


def _site_report(keyed: pd.DataFrame, side: str, schema: DatasetSchema, unplaced: pd.DataFrame | None = None) -> Report:
    """Sites on one side of the join only; `unplaced` rows (plates with no images) count as metadata-only sites."""
    only = keyed[keyed["_merge"] == side]
    rows = only[SITE_KEY].head(EXAMPLES).itertuples(index=False)
    names = [f"{e}/{schema.plate_name(p)}/{w} site {s}" for e, p, w, s in rows]
    if unplaced is None or unplaced.empty:
        return Report(len(only), names)
    lost = unplaced[["plate", "well", "site"]].head(EXAMPLES).itertuples(index=False)
    names = names[: EXAMPLES - 1] + [f"{schema.plate_name(p)}/{w} site {s} (no images of this plate)" for p, w, s in lost]
    return Report(len(only) + len(unplaced), names[:EXAMPLES])


def check_group_name(name: str, what: str) -> str:
    """Refuse names that would escape the store or clash with its own keys: `/`, `..`, control characters."""
    if not name or name in (".", "..", "index", "zarr.json") or _BAD_NAME.search(name) or name.startswith("_platezarr"):
        raise MetadataError(
            f"{what} name {name!r} cannot be a group in the store (no '/', '\\', '..', control characters, "
            "'index', '_platezarr'); fix the metadata table or the folder name"
        )
    return name
