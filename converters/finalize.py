"""Finish the store: present masks, the whole-store index, root attributes, consolidated metadata.

The root `platezarr` attribute and the consolidated metadata are written last, so a store reads as
complete only when every well is in it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from converters.output import MARKER_ATTR, ROOT_ATTR
from converters.plan import Plan
from converters.template import strings

LAYOUT_VERSION = 1
INDEX_GROUP = "index"


def write_present(store: zarr.abc.store.Store, group: str, present: np.ndarray) -> None:
    zarr.open_array(store, path=f"{group}/present", mode="r+")[...] = present


def index_table(plan: Plan, plates: dict[str, xr.Dataset], present: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per site of the whole store, with its group path, array position and metadata."""
    frames = []
    for plate in plan.plates:
        ds = plates[plate.group]
        n_wells, n_sites = len(plate.wells), len(plan.schema.sites)
        frame = pd.DataFrame(
            {
                "experiment": plate.experiment,
                "plate": plate.plate,
                "well": np.repeat(plate.wells, n_sites),
                "site": np.tile(plan.schema.sites, n_wells),
                "group": plate.group,
                "well_index": np.repeat(np.arange(n_wells), n_sites),
                "site_index": np.tile(np.arange(n_sites), n_wells),
                "channels_present": present[plate.group].sum(axis=2).ravel(),
            }
        )
        for name, coord in ds.coords.items():
            if name in frame or "well" not in coord.dims or name in ("row", "column"):
                continue
            values = coord.values if coord.ndim == 2 else np.repeat(coord.values, n_sites)
            frame[name] = values.ravel()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_index(store: zarr.abc.store.Store, table: pd.DataFrame) -> None:
    """The root `index` group (dim `sample`): the whole metadata table in one read."""
    data = {}
    for name in table.columns:
        values = table[name]
        text = values.dtype == object or pd.api.types.is_string_dtype(values)
        data[name] = ("sample", strings(values) if text else values.to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=zarr.errors.ZarrUserWarning)
        whole = {name: {"chunks": (max(len(table), 1),)} for name in data}  # one read per column
        xr.Dataset(coords=data).to_zarr(store, group=INDEX_GROUP, mode="w", zarr_format=3, consolidated=False,
                                        encoding=whole)
        zarr.consolidate_metadata(store, path=INDEX_GROUP)  # readers open the index without the whole tree


def write_root(store: zarr.abc.store.Store, attrs: dict) -> None:
    """Mark the store complete and consolidate: the last two writes of a conversion."""
    root = zarr.open_group(store, mode="r+")
    current = dict(root.attrs)
    current.pop(MARKER_ATTR, None)
    current[ROOT_ATTR] = attrs
    root.attrs.put(current)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(store)
