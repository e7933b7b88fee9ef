"""Plan the store: join the scanned images with the metadata into plates, wells and their tasks.

A task is one well (`WellTask`), or for sources that pack a plate into one tar, that tar (`TarTask`).

The plan is plain data: it can be printed (`--dry-run`), compared with an existing store, and handed
to workers. Nothing here reads pixels or writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from converters.errors import MetadataError, OptionError, SchemaError, SourceError
from converters.layouts.files import SourceIndex
from converters.layouts.tars import TAR_COLUMN, MemberNames
from converters.metadata import ORIGIN, MetadataTable
from converters.profiles import DEFAULT, Profile, chains_of, parse_profile, profile_for
from converters.schema import Column, DatasetSchema, _load_raw, schema_dir
from converters.sitekeys import SiteKeys, distinct, first_of_runs, not_in

if TYPE_CHECKING:  # read (with xarray) only when a conversion is given embeddings
    from converters.embeddings import EmbeddingsTable

SITE_KEY = ["experiment", "plate", "well", "site"]
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
EXAMPLES = 5


@dataclass(frozen=True)
class StoreSettings:
    """How images are chunked, sharded and compressed (a whole well per shard; a whole site, or tiles of it, per chunk)."""

    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    compression: str = DEFAULT
    dtype: str = "uint8"
    codec: str | None = None  # the chain a store begun by an earlier version holds, kept when it resumes

    def __post_init__(self) -> None:
        parse_profile(self.compression)

    @property
    def profile(self) -> Profile:
        """The chain (converters/profiles.py) that encodes every chunk: the profile's for the dtype, or the pinned one."""
        if self.codec is not None:
            return chains_of(self.compression)[self.codec]
        return profile_for(self.compression, np.dtype(self.dtype))

    @classmethod
    def default(cls, schema: DatasetSchema, compression: str = DEFAULT, dtype: np.dtype | None = None,
                chunks: tuple[int, int, int] | None = None) -> StoreSettings:
        """A shard per well, its chunks as asked (`parse_chunks`), else as the schema's file says, else a whole site.

        A tile longer than the image is cut to it; tiles that do not divide the image make the shard reach past the
        image, its edge chunks padded with the fill value as Zarr pads them."""
        n_sites, n_channels = len(schema.sites), len(schema.channels)
        y, x = schema.image_shape
        c, ty, tx = chunks if chunks is not None else schema_chunks(schema)
        c, ty, tx = c or n_channels, min(ty or y, y), min(tx or x, x)
        if n_channels % c:
            raise OptionError(f"chunks of {c} channels do not divide the {n_channels} channels of {schema.name}: give "
                              f"one of {', '.join(str(d) for d in range(1, n_channels + 1) if n_channels % d == 0)}")
        return cls(chunks=(1, 1, c, ty, tx), shards=(1, n_sites, n_channels, -(-y // ty) * ty, -(-x // tx) * tx),
                   compression=compression, dtype=str(np.dtype(dtype if dtype is not None else schema.dtype)))


CHUNKS_FORMS = ("site (one chunk per site), N (N x N tiles of every channel), Y,X, C,Y,X (C channels per chunk) or "
                "1,1,C,Y,X (the images array's own chunk shape)")
SMALLEST_TILE = 16  # a tile side below this is a typo, not a layout: its shard index would outweigh its pixels


def parse_chunks(value: str | int | Sequence[int] | None) -> tuple[int, int, int] | None:
    """The chunks asked for as (channels, y, x) per chunk, 0 meaning the whole extent; None: the schema's default.

    Accepts `CHUNKS_FORMS`, as text ("512", "1,512,512") or numbers; anything else is an OptionError saying so."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "site":
        return (0, 0, 0)
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = [_positive(p) for p in parts]
    if len(numbers) not in (1, 2, 3, 5) or None in numbers:
        raise OptionError(f"chunks must be {CHUNKS_FORMS}, with positive integers; not {value!r}")
    shape = [n for n in numbers if n is not None]
    if len(shape) == 5 and shape[:2] != [1, 1]:
        raise OptionError(f"chunks {value!r}: a chunk holds one well and one site, so 1,1,C,Y,X starts with 1,1")
    shape = shape[-3:] if len(shape) >= 3 else [0, shape[0], shape[-1]]
    if min(shape[1:]) < SMALLEST_TILE:
        raise OptionError(f"chunks {value!r}: tiles must be at least {SMALLEST_TILE} pixels on a side")
    return shape[0], shape[1], shape[2]


def _positive(part: object) -> int | None:
    """`part` as a positive int if it is one (or its digits), else None."""
    if isinstance(part, str) and part.strip().isdigit():
        part = int(part)
    return part if isinstance(part, int) and not isinstance(part, bool) and part > 0 else None


def schema_chunks(schema: DatasetSchema) -> tuple[int, int, int]:
    """The chunks the schema's file declares (`chunks = 256`, as `--chunks` takes them), else a whole site per chunk."""
    try:
        declared = _load_raw(schema.name).get("chunks")
    except SchemaError:  # a schema made in code, with no file
        return (0, 0, 0)
    try:
        return parse_chunks(declared) or (0, 0, 0)
    except OptionError as exc:
        raise SchemaError(f"{schema_dir() / schema.name}.toml: {exc}") from exc


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
    """A plate's well tasks in well order, kept compact (about 12 bytes per file: small ints, and indices into the
    source's paths, not a Python tuple and str per file) and built one `WellTask` at a time as they are iterated."""

    def __init__(self, group: str, wells: list[str], well_index: np.ndarray, starts: np.ndarray,
                 site: np.ndarray, channel: np.ndarray, paths: pa.Array | pa.ChunkedArray) -> None:
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
            return int(self.source_bytes * self.settings.profile.size_ratio)
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
            "codec": self.settings.profile.codec,
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
    """Join images and metadata (and embeddings) into plates and well tasks, and count what is missing on either side.

    Sites are joined as integer keys (converters/sitekeys.py) and every plate's tasks are slices of a few columns
    sorted once, so planning takes seconds and memory in proportion to the images, even for thousands of plates.
    """
    images = index.images
    per_site = index.member_name is not None  # each row stands for every channel of its site (tars in a bucket)
    site_index = _schema_positions(images, "site", schema, source, index.member_name)
    channel_index = None if per_site else _schema_positions(images, "channel", schema, source, None)
    # no table: an empty one of fresh columns (an `images[...].iloc[:0]` slice would keep every plate holding
    # the whole images' string buffers alive through the write)
    rows = metadata.table if metadata is not None else pd.DataFrame(
        {k: pd.Series([], dtype=_plain(images[k].dtype)) for k in SITE_KEY}).assign(**{ORIGIN: ""})
    unplaced = rows.iloc[:0]
    if metadata is not None and "experiment" not in metadata.keys:
        rows, unplaced = _place_rows(rows, images)
    keys = SiteKeys.of(images, rows)
    image_keys, row_keys = distinct(keys.images), distinct(keys.rows)
    wells = distinct(keys.well_of(np.concatenate([image_keys, row_keys])))  # every plate's wells, in plan order
    well_plate = wells // keys.n_wells
    well_starts = np.searchsorted(well_plate, np.arange(len(keys.plates) + 1))
    files = _sorted_files(images, keys, np.searchsorted(wells, keys.well_of(keys.images)), site_index, channel_index,
                          schema, index.member_name)
    row_starts = np.searchsorted(well_plate[files.well], np.arange(len(keys.plates) + 1))
    tars = _plate_tars(images, keys)
    plate_rows = _rows_by_plate(rows, keys)
    plates = []
    missing: list[str] = []
    for p, (experiment, plate) in enumerate(keys.plates):
        group = f"{check_group_name(experiment, 'experiment')}/{check_group_name(schema.plate_name(plate), 'plate')}"
        w0, w1, r0, r1 = well_starts[p], well_starts[p + 1], row_starts[p], row_starts[p + 1]
        names = [keys.wells[w] for w in (wells[w0:w1] % keys.n_wells).tolist()]
        tasks = files.tasks(group, names, r0, r1, w0)
        plates.append(PlatePlan(experiment, plate, group, names, plate_rows(p).drop(columns=[ORIGIN], errors="ignore"), tasks, tars.get(p)))
        if len(missing) < EXAMPLES:
            missing += _missing(tasks, schema, EXAMPLES - len(missing))
    missing_count = sum(len(p.wells) for p in plates) * len(schema.sites) * len(schema.channels) - len(files)
    plate_name = schema.plate_name
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
        images_without_rows=_site_report(not_in(image_keys, row_keys), keys, plate_name)
        if metadata is not None else Report(),
        rows_without_images=_site_report(not_in(row_keys, image_keys), keys, plate_name, unplaced),
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
    experiments = images[["plate", "experiment"]].drop_duplicates().astype({"experiment": "str"})
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


def _plain(dtype: Any) -> Any:
    """The dtype of a column's values (a categorical column's categories)."""
    return dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype


def _schema_positions(images: pd.DataFrame, what: str, schema: DatasetSchema, source: str,
                      member_name: str | None) -> np.ndarray:
    """Each image's site (or channel) as its position in the schema's; refuse one the schema does not know, naming
    the first such file (for images expected in a tar, the first such site's first member)."""
    allowed = list(schema.sites) if what == "site" else list(schema.channel_ids)
    codes, values = pd.factorize(images[what])
    lookup = np.array([allowed.index(v) if v in allowed else -1 for v in values.tolist()], dtype=np.int16)
    positions = lookup[codes] if len(lookup) else codes.astype(np.int16)
    bad = positions < 0
    if bad.any():
        row = int(np.argmax(bad))
        value = values.tolist()[codes[row]]  # a plain value (`3`, not `np.int64(3)`)
        if member_name is None:
            path, count = images["path"].iloc[row], int(bad.sum())
        else:
            image = images.iloc[row]
            path = member_name.format(well=image["well"], site=image["site"], channel=schema.channel_ids[0])
            count = int(bad.sum()) * len(schema.channel_ids)
        raise SourceError(f"{source}/{path}: {what} {value!r} is not one of {schema.title}'s {what}s {allowed} "
                          f"({count} such files); check --dataset")
    return positions


@dataclass
class _Files:
    """Every image in plan order (plate, well, site, channel), as columns that each plate's `WellTasks` take slices
    of. `well` (a position in the plan's wells) is given per row: an image, or a site standing for `per_row` images,
    one per channel; site and channel index and path are given per image."""

    well: np.ndarray
    per_row: int
    site: np.ndarray
    channel: np.ndarray
    paths: pa.Array | pa.ChunkedArray

    def __len__(self) -> int:
        return len(self.site)

    def tasks(self, group: str, wells: list[str], start: int, stop: int, first_well: int) -> WellTasks:
        """The well tasks of the plate whose rows are `start:stop` and whose wells start at `first_well`."""
        well = self.well[start:stop] - first_well
        starts = first_of_runs(well)
        a, b = start * self.per_row, stop * self.per_row
        return WellTasks(group, wells, well[starts].astype(np.int32),
                         np.append(starts, stop - start).astype(np.int64) * self.per_row,
                         self.site[a:b], self.channel[a:b], self.paths.slice(a, b - a))


def _sorted_files(images: pd.DataFrame, keys: SiteKeys, well: np.ndarray, site: np.ndarray, channel: np.ndarray | None,
                  schema: DatasetSchema, member_name: str | None) -> _Files:
    """The images in plan order; ties (none, as scanners refuse two files for one image) keep the images' path order.
    Paths are kept as indices into the images' own column (an Arrow dictionary: 4 bytes a file, not a copy of each
    path). Images expected in tars (`member_name`, one row per site) become one file per channel, their names kept
    once per distinct well, site and channel as an Arrow dictionary."""
    n_sites, n_channels = len(schema.sites), len(schema.channels)
    if channel is not None:
        order = np.argsort((well * n_sites + site) * n_channels + channel, kind="stable")
        paths = pa.DictionaryArray.from_arrays(pa.array(order.astype(np.int32)), _one_array(images["path"]))
        return _Files(well[order], 1, site[order], channel[order], paths)
    order = np.argsort(well * n_sites + site, kind="stable")
    names = [member_name.format(well=w, site=s, channel=c)  # type: ignore[union-attr]
             for w in keys.wells for s in schema.sites for c in schema.channel_ids]
    row_site = site[order]
    first = ((keys.images[order] // keys.n_sites % keys.n_wells * n_sites + row_site) * n_channels).astype(np.int32)
    indices = (first[:, np.newaxis] + np.arange(n_channels, dtype=np.int32)).reshape(-1)
    paths = pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(names, pa.string()))
    return _Files(well[order], n_channels, np.repeat(row_site, n_channels),
                  np.tile(np.arange(n_channels, dtype=np.int16), len(order)), paths)


def _one_array(column: pd.Series) -> pa.Array:
    """A column as one Arrow array: the one a pandas column of Arrow strings in one chunk holds (a scan's paths are
    the source listing's), not a copy; else a copy in one piece."""
    values = pa.array(column)
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _plate_tars(images: pd.DataFrame, keys: SiteKeys) -> dict[int, str]:
    """The tar holding each plate's images, by plate position (tars layout only)."""
    if TAR_COLUMN not in images or not len(images):
        return {}
    plates = pd.Series(keys.plate_of(keys.images)).drop_duplicates()  # each plate's first image
    return {p: str(t) for p, t in zip(plates.tolist(), images[TAR_COLUMN].iloc[plates.index].tolist())}


def _rows_by_plate(rows: pd.DataFrame, keys: SiteKeys) -> Callable[[int], pd.DataFrame]:
    """Each plate's metadata rows, in table order: slices of the table when each plate's rows are together
    (no copy), else of one copy sorted by plate."""
    plate = keys.plate_of(keys.rows)
    if len(plate) and np.count_nonzero(np.diff(plate)) + 1 != len(distinct(plate)):
        order = np.argsort(plate, kind="stable")
        rows, plate = rows.take(order), plate[order]
    starts = first_of_runs(plate)
    stops = np.append(starts[1:], len(plate))
    where = {int(plate[a]): (int(a), int(b)) for a, b in zip(starts, stops)}
    return lambda p: rows.iloc[slice(*where.get(p, (0, 0)))]


def _missing(tasks: WellTasks, schema: DatasetSchema, limit: int) -> list[str]:
    """Names of the first few (`limit`) images of a plate's grid that have no file, in plate order."""
    per_well = len(schema.sites) * len(schema.channels)
    if tasks.n_files == len(tasks.wells) * per_well:
        return []
    found = np.zeros(len(tasks.wells) * per_well, dtype=bool)
    files_well = np.repeat(tasks.well_index.astype(np.int64), np.diff(tasks.starts))
    found[(files_well * len(schema.sites) + tasks.site) * len(schema.channels) + tasks.channel] = True
    out = []
    for position in np.flatnonzero(~found)[:limit].tolist():
        w, rest = divmod(position, per_well)
        s, c = divmod(rest, len(schema.channels))
        out.append(f"{tasks.group}/{tasks.wells[w]} site {schema.sites[s]} {schema.channel_ids[c]}")
    return out


def _site_report(only: np.ndarray, keys: SiteKeys, plate_name: Callable[[Any], str],
                 unplaced: pd.DataFrame | None = None) -> Report:
    """Sites (keys) on one side of the join only, the first few by name; `unplaced` rows (plates with no images)
    count as metadata-only sites."""
    names = keys.names(only, plate_name, EXAMPLES)
    if unplaced is None or unplaced.empty:
        return Report(len(only), names)
    lost = unplaced[["plate", "well", "site"]].head(EXAMPLES).itertuples(index=False)
    names = names[: EXAMPLES - 1] + [f"{plate_name(p)}/{w} site {s} (no images of this plate)" for p, w, s in lost]
    return Report(len(only) + len(unplaced), names[:EXAMPLES])


def check_group_name(name: str, what: str) -> str:
    """Refuse names that would escape the store or clash with its own keys: `/`, `..`, control characters."""
    if not name or name in (".", "..", "index", "zarr.json") or _BAD_NAME.search(name) or name.startswith("_platezarr"):
        raise MetadataError(
            f"{what} name {name!r} cannot be a group in the store (no '/', '\\', '..', control characters, "
            "'index', '_platezarr'); fix the metadata table or the folder name"
        )
    return name
