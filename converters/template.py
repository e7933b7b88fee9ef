"""Write the store's skeleton before any pixel: groups, coordinates and empty, sharded image arrays."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.abc.store import Store

from converters.embeddings import write_embeddings
from converters.errors import MetadataError
from converters.output import MARKER_ATTR
from converters.plan import Plan, PlatePlan
from converters.schema import Column
from converters.shard import ShardLayout
from converters.wells import split_well

DIMS = ("well", "site", "channel", "y", "x")
KEY_COLUMNS = ("experiment", "plate", "well", "site")


def strings(values: Iterable[Any]) -> np.ndarray:
    """Python str objects in an object array: what Zarr v3 stores as variable-length UTF-8 strings."""
    return np.array(["" if pd.isna(v) else str(v) for v in values], dtype=object)


def column_values(values: pd.Series | np.ndarray, kind: str) -> np.ndarray:
    """A coordinate's values: strings as str objects ("" when missing), ints as int64 unless missing."""
    if kind == "str":
        return strings(values)
    array = np.asarray(values, dtype="float64")
    if kind == "int" and not np.isnan(array).any():
        return array.astype("int64")
    return array


def metadata_coords(plate: PlatePlan, columns: list[Column], sites: tuple[int, ...]) -> dict[str, xr.Variable]:
    """Every metadata column as a coordinate on `well` or (`well`, `site`), aligned with the plate grid."""
    grid = pd.MultiIndex.from_product([plate.wells, list(sites)], names=["well", "site"])
    rows = plate.metadata.set_index(["well", "site"]).reindex(grid)
    coords = {}
    for column in columns:
        if column.name in KEY_COLUMNS:
            continue
        attrs = {"description": column.description}
        if column.level == "site":
            values = column_values(rows[column.name].to_numpy(), column.type).reshape(len(plate.wells), len(sites))
            coords[column.name] = xr.Variable(("well", "site"), values, attrs)
        else:
            per_well = _per_well(rows[column.name], plate, column)
            coords[column.name] = xr.Variable("well", column_values(per_well, column.type), attrs)
    return coords


def _per_well(values: pd.Series, plate: PlatePlan, column: Column) -> np.ndarray:
    """The one value of a per-well column in each well; a well with two values is a metadata error."""
    by_well = values.groupby(level="well", sort=False)
    distinct = by_well.nunique()
    if (distinct > 1).any():
        well = distinct.index[distinct > 1][0]
        found = values.xs(well, level="well").dropna().unique()
        raise MetadataError(
            f"{plate.group}: column {column.name!r} is declared per well, but well {well} has "
            f"{len(found)} values ({', '.join(map(str, found[:3]))}); fix the table or the schema's level"
        )
    return by_well.first().reindex(plate.wells).to_numpy()


def plate_dataset(plan: Plan, plate: PlatePlan) -> xr.Dataset:
    """The coordinates of one plate group: well/row/column/site/channel and every metadata column."""
    schema = plan.schema
    rows, cols = zip(*(split_well(w) for w in plate.wells)) if plate.wells else ((), ())
    coords: dict[str, Any] = {
        "well": ("well", strings(plate.wells), {"description": "Well on the plate, row letter(s) and 2-digit column"}),
        "row": ("well", strings(rows), {"description": "Plate row letter(s)"}),
        "column": ("well", np.array(cols, dtype="int64"), {"description": "Plate column, 1-based"}),
        "site": ("site", np.array(schema.sites, dtype="int64"), {"description": "Field of view within the well"}),
        "channel": ("channel", strings(schema.channel_ids), channel_attrs(plan)),
        "channel_name": ("channel", strings(c.name for c in schema.channels), {"description": "Channel name"}),
        "experiment": ((), np.array(plate.experiment, dtype=object)),
        "plate": ((), np.array(plate.plate, dtype=object if isinstance(plate.plate, str) else "int64")),
    }
    coords.update(metadata_coords(plate, plan.metadata_columns, schema.sites))
    return xr.Dataset(coords=coords)


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
    """Create every group, coordinate and empty array; the root carries only an in-progress marker."""
    # create_group, not open_group(mode="w"): that would empty OUT, the lock and any foreign files with it
    root = zarr.create_group(store, zarr_format=3, attributes={MARKER_ATTR: marker})
    for experiment in sorted({p.experiment for p in plan.plates}):
        root.create_group(experiment)
    for plate in plan.plates:
        plate_dataset(plan, plate).to_zarr(store, group=plate.group, mode="w", zarr_format=3, consolidated=False)
        create_images(zarr.open_group(store, path=plate.group, mode="r+"), plan, len(plate.wells), layout)
        if plan.embeddings is not None:
            write_embeddings(store, plate.group, plan.embeddings.for_plate(plate, plan.schema.sites), plan.embeddings.table)
