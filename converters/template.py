"""Write the store's skeleton before any pixel: groups, coordinates and empty, sharded image arrays."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.codec_pipeline import BatchedCodecPipeline, fill_value_or_default
from zarr.core.sync import sync
from zarr.storage import MemoryStore, StorePath

from converters.embeddings import write_embeddings
from converters.errors import MetadataError
from converters.nodes import Nodes, group_document, meta_key
from converters.output import MARKER_ATTR
from converters.plan import EmbeddingsPlan, Plan, PlatePlan
from converters.schema import Column
from converters.shard import ShardLayout

DIMS = ("well", "site", "channel", "y", "x")
TEMPLATE_BATCH = 64  # plate groups whose objects are written at once
KEY_COLUMNS = ("experiment", "plate", "well", "site")


def strings(values: Iterable[Any]) -> np.ndarray:
    """Python str objects in an object array: what Zarr v3 stores as variable-length UTF-8 strings ("" for missing)."""
    items = values if isinstance(values, (np.ndarray, pd.Series, list, tuple)) else list(values)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    present = ~pd.isna(array)
    out = np.full(len(array), "", dtype=object)
    out[present] = [v if type(v) is str else str(v) for v in array[present]]
    return out


def column_values(values: pd.Series | np.ndarray, kind: str) -> np.ndarray:
    """A coordinate's values: strings as str objects ("" when missing), ints as int64 unless missing."""
    if kind == "str":
        return strings(values)
    array = np.asarray(values, dtype="float64")
    if kind == "int" and not np.isnan(array).any():
        return array.astype("int64")
    return array


Coordinate = tuple[tuple[str, ...], np.ndarray, dict]  # dimensions, values, attributes


def metadata_coords(plate: PlatePlan, columns: list[Column], sites: tuple[int, ...]) -> dict[str, Coordinate]:
    """Every metadata column as a coordinate on `well` or (`well`, `site`), aligned with the plate grid (missing where
    the table has no row); rows of wells or sites outside the grid are left out."""
    table = plate.metadata
    well_at = pd.Index(plate.wells).get_indexer(table["well"]) if len(table) else np.zeros(0, np.intp)
    site_at = pd.Index(list(sites)).get_indexer(table["site"]) if len(table) else np.zeros(0, np.intp)
    inside = (well_at >= 0) & (site_at >= 0)
    cells = well_at[inside] * len(sites) + site_at[inside]
    coords: dict[str, Coordinate] = {}
    for column in columns:
        if column.name in KEY_COLUMNS:
            continue
        flat = np.full(len(plate.wells) * len(sites), np.nan, dtype=object)
        flat[cells] = table[column.name].to_numpy(dtype=object)[inside]
        grid = flat.reshape(len(plate.wells), len(sites))
        attrs = {"description": column.description}
        if column.level == "site":
            coords[column.name] = (("well", "site"), column_values(grid.ravel(), column.type).reshape(grid.shape), attrs)
        else:
            coords[column.name] = (("well",), column_values(_per_well(grid, plate, column), column.type), attrs)
    return coords


def _per_well(grid: np.ndarray, plate: PlatePlan, column: Column) -> np.ndarray:
    """The one value of a per-well column in each well (its first present one over the sites); a well with two
    values is a metadata error."""
    first = grid[:, 0].copy()
    conflict = np.zeros(len(grid), dtype=bool)
    for site in range(1, grid.shape[1]):
        values, missing = grid[:, site], pd.isna(first)
        conflict |= ~pd.isna(values) & ~missing & (values != first)
        first = np.where(missing, values, first)
    if conflict.any():
        w = int(np.argmax(conflict))
        found = pd.unique(np.array([v for v in grid[w] if not pd.isna(v)], dtype=object))
        raise MetadataError(
            f"{plate.group}: column {column.name!r} is declared per well, but well {plate.wells[w]} has "
            f"{len(found)} values ({', '.join(map(str, found[:3]))}); fix the table or the schema's level"
        )
    return first


def plate_dataset(plan: Plan, plate: PlatePlan) -> xr.Dataset:
    """The coordinates of one plate group: well/row/column/site/channel and every metadata column."""
    return xr.Dataset(coords=plate_coords(plan, plate))


def plate_coords(plan: Plan, plate: PlatePlan) -> dict[str, Coordinate]:
    """`plate_dataset`'s coordinates as plain arrays (the template writes them without building a Dataset per plate)."""
    schema = plan.schema
    rows, cols = [w[:-2] for w in plate.wells], [int(w[-2:]) for w in plate.wells]  # wells are `B02`, `AF48`
    coords: dict[str, Coordinate] = {
        "well": (("well",), strings(plate.wells), {"description": "Well on the plate, row letter(s) and 2-digit column"}),
        "row": (("well",), strings(rows), {"description": "Plate row letter(s)"}),
        "column": (("well",), np.array(cols, dtype="int64"), {"description": "Plate column, 1-based"}),
        "site": (("site",), np.array(schema.sites, dtype="int64"), {"description": "Field of view within the well"}),
        "channel": (("channel",), strings(schema.channel_ids), channel_attrs(plan)),
        "channel_name": (("channel",), strings(c.name for c in schema.channels), {"description": "Channel name"}),
        "experiment": ((), np.array(plate.experiment, dtype=object), {}),
        "plate": ((), np.array(plate.plate, dtype=object if isinstance(plate.plate, str) else "int64"), {}),
    }
    coords.update(metadata_coords(plate, plan.metadata_columns, schema.sites))
    return coords


def channel_attrs(plan: Plan) -> dict:
    """What each channel shows, so a reader knows that `w1` is Hoechst, and the physical pixel size."""
    attrs: dict = {"description": "Channel id as in the source file names", "channels": plan.channel_attrs()}
    if plan.pixel_size_um is not None:
        attrs["pixel_size_um"] = plan.pixel_size_um
    return attrs


def create_images(group: zarr.Group, plan: Plan, n_wells: int, layout: ShardLayout) -> None:
    """The empty images array: a chunk per site, a shard per well, encoded as the profile says, CRC32C-checked."""
    profile = layout.profile
    shape = (n_wells, len(plan.schema.sites), len(plan.schema.channels), *plan.schema.image_shape)
    group.create_array(
        "images",
        shape=shape,
        dtype=plan.dtype,
        chunks=layout.chunk_shape,
        shards=layout.shard_shape,
        serializer=profile.serializer(),
        compressors=profile.compressors(),
        fill_value=0,
        dimension_names=DIMS,
        chunk_key_encoding={"name": "default", "separator": layout.separator},
        attributes={"description": "Source pixels, exactly; fill value 0 where present is False"},
    )
    group.create_array(
        "present",
        shape=shape[:3],
        dtype="bool",
        chunks=shape[:3] if n_wells else "auto",
        fill_value=False,
        dimension_names=DIMS[:3],
        attributes={"description": "True where the source image file existed and was read"},
    )


def write_template(plan: Plan, store: Store, marker: dict, layout: ShardLayout) -> None:
    """Create every group, coordinate and empty array in an empty store; the root carries only an in-progress marker.

    Plate groups are written TEMPLATE_BATCH at a time, each batch's objects at once (`PlateGroups`): the template of
    RxRx3's 1,450 plates takes seconds, not the minutes of one `to_zarr` after another."""
    # objects written one by one, never open_group(mode="w"): that would empty OUT, the lock and any foreign files
    # with it; the root first, so that what follows is ours. Every document is kept (`Nodes`) and recorded for the
    # consolidation at the end.
    nodes = Nodes(store, complete=True)
    nodes.put([(meta_key(""), group_document({MARKER_ATTR: marker}))])
    experiments = sorted({p.experiment for p in plan.plates})
    nodes.put([(meta_key(experiment), group_document({})) for experiment in experiments])
    groups = PlateGroups(plan, layout)
    for start in range(0, len(plan.plates), TEMPLATE_BATCH):
        nodes.put(groups.objects(plan.plates[start:start + TEMPLATE_BATCH]))
    nodes.save()


@dataclass
class _Shape:
    """What xarray and zarr write for a plate group of one shape: each zarr.json document (by key in the group),
    and each coordinate's array, in memory (`chunks`), with which a plate's values are encoded."""

    documents: dict[str, bytes]
    arrays: dict[str, AsyncArray]
    chunks: dict[str, Any]


class PlateGroups:
    """Writes plate groups as `to_zarr` of `plate_dataset` and `create_images` would, without their cost per plate.

    A group's documents depend only on its shape (the names, dimensions, sizes, dtypes and attributes of its
    coordinates), so each shape is written once by xarray and zarr into memory. Every plate of that shape is then
    written from those documents and its coordinates' chunks, encoded by each array's zarr codecs (all plates'
    chunks of a coordinate in one batch, chunks all of the fill value left out, as zarr's writes leave them out),
    then stored (`put_objects`): on a local disk as plain file writes, elsewhere all the objects of a batch of plates
    at once."""

    def __init__(self, plan: Plan, layout: ShardLayout) -> None:
        self.plan, self.layout = plan, layout
        self.shapes: dict[tuple, _Shape] = {}

    def shape(self, coords: dict[str, Coordinate], n_wells: int) -> _Shape:
        key = (n_wells, tuple((name, dims, v.shape, v.dtype.str, repr(attrs)) for name, (dims, v, attrs) in coords.items()))
        if key not in self.shapes:
            written: dict[str, Any] = {}
            memory = MemoryStore(written)
            xr.Dataset(coords=coords).to_zarr(memory, mode="w", zarr_format=3, consolidated=False)
            create_images(zarr.open_group(memory, mode="r+"), self.plan, n_wells, self.layout)
            documents = {k: v.to_bytes() for k, v in written.items() if k.rpartition("/")[2] == "zarr.json"}
            chunks: dict[str, Any] = {}
            arrays = {name: AsyncArray(json.loads(documents[f"{name}/zarr.json"]), StorePath(MemoryStore(chunks), name))
                      for name in coords}
            self.shapes[key] = _Shape(documents, arrays, chunks)
        return self.shapes[key]

    def objects(self, plates: list[PlatePlan]) -> list[tuple[str, bytes]]:
        """The objects (key, bytes) of the groups of `plates`, their embeddings included."""
        by_shape: dict[int, tuple[_Shape, list[tuple[str, dict[str, Coordinate]]]]] = {}
        objects: list[tuple[str, bytes]] = []
        for plate in plates:
            coords = plate_coords(self.plan, plate)
            shape = self.shape(coords, len(plate.wells))
            by_shape.setdefault(id(shape), (shape, []))[1].append((plate.group, coords))
            objects += [(f"{plate.group}/{key}", doc) for key, doc in shape.documents.items()]
        for shape, groups in by_shape.values():
            objects += _encoded(shape, groups)
        embeddings = self.plan.embeddings
        return objects if embeddings is None else _with_embeddings(embeddings, self.plan.schema.sites, plates, objects)


def _with_embeddings(embeddings: EmbeddingsPlan, sites: tuple[int, ...], plates: list[PlatePlan],
                     objects: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`objects` with each plate's embeddings added in memory by `write_embeddings`, to be stored with the rest of the
    batch; the parent groups zarr makes in memory are left out. The plate group's zarr.json is kept as it was:
    xarray's append rewrites its attributes, and with them the list of the metadata coordinates."""
    written = {key: default_buffer_prototype().buffer.from_bytes(data) for key, data in objects}
    memory = MemoryStore(written)
    for plate in plates:
        group = written[f"{plate.group}/zarr.json"]
        write_embeddings(memory, plate.group, embeddings.for_plate(plate, sites), embeddings.table)
        written[f"{plate.group}/zarr.json"] = group
    groups = tuple(f"{plate.group}/" for plate in plates)
    return [(key, data.to_bytes()) for key, data in written.items() if key.startswith(groups)]


def dataset_objects(ds: xr.Dataset, encoding: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The objects (key, bytes) `to_zarr` writes for `ds` as a group of its own, made in memory: stored with
    `put_objects`, each is one PUT, where `to_zarr` into a bucket reads and rewrites the parents' zarr.json for
    every array it creates."""
    written: dict[str, Any] = {}
    memory = MemoryStore(written)
    ds.to_zarr(memory, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    return [(key, value.to_bytes()) for key, value in written.items()]


def _encoded(shape: _Shape, groups: list[tuple[str, dict[str, Coordinate]]]) -> list[tuple[str, bytes]]:
    """The coordinate chunks (key, bytes) of plate groups of one shape, as zarr writes them: a coordinate that is one
    chunk (all of them, but for huge plates) encoded here by its zarr codecs, any other written by zarr's `setitem`."""
    out: list[tuple[str, bytes]] = []
    prototype = default_buffer_prototype()
    for name, array in shape.arrays.items():
        meta, pipeline = array.metadata, array.codec_pipeline
        steps = [getattr(codec, "_encode_sync", None) for codec in  # zarr's own codecs, without a thread per chunk
                 (pipeline.array_bytes_codec, *pipeline.bytes_bytes_codecs)] \
            if isinstance(pipeline, BatchedCodecPipeline) and not pipeline.array_array_codecs else [None]
        if tuple(meta.chunks) != tuple(meta.shape) or None in steps:
            for group, coords in groups:
                shape.chunks.clear()
                sync(array.setitem(..., coords[name][1]))
                out += [(f"{group}/{key}", data.to_bytes()) for key, data in shape.chunks.items()]
            continue
        spec = meta.get_chunk_spec((0,) * meta.ndim, array.config, prototype)
        native = meta.dtype.to_native_dtype()
        key = f"{name}/{meta.encode_chunk_key((0,) * meta.ndim)}"
        for group, coords in groups:
            values = coords[name][1]
            buffer = prototype.nd_buffer.from_numpy_array(
                values if values.dtype.name == native.name else values.astype(dtype=native, order="A"))
            if not spec.config.write_empty_chunks and buffer.all_equal(fill_value_or_default(spec)):
                continue
            data: Any = buffer
            for step in steps:
                data = step(data, spec) if step is not None and data is not None else None
            if data is not None:
                out.append((f"{group}/{key}", data.to_bytes()))
    return out
