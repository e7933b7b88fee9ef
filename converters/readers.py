"""Open a platezarr store with xarray: one plate, the whole tree, or every site as one lazy Dataset.

All readers open the store read-only and from its consolidated metadata, so opening costs a handful
of reads however many plates the store holds.
"""

from __future__ import annotations

import os
import warnings

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from converters.errors import StoreError
from converters.finalize import INDEX_GROUP, LAYOUT_VERSION
from converters.output import ROOT_ATTR, Output


def checked_root(url: str | os.PathLike[str] | zarr.abc.store.Store,
                 storage_options: dict | None = None) -> tuple[Output, dict]:
    """The store and its root `platezarr` attributes, in one read; an unfinished or foreign store is an error."""
    output = Output.open(url, read_only=True, storage_options=storage_options)
    missing = output.local_path is not None and not output.local_path.exists()
    meta = None if missing else output.root_meta()
    state = "absent" if missing else output.classify(meta)
    if state == "absent":
        raise StoreError(f"{output.location}: no Zarr store here; create one with `platezarr convert SRC {url}`")
    if state == "foreign":
        raise StoreError(f"{output.location}: a Zarr store, but not one written by platezarr")
    if state == "incomplete":
        raise StoreError(
            f"{output.location}: the conversion into this store did not finish; re-run the same "
            "`platezarr convert SRC OUT ...` command to resume it"
        )
    attrs = meta["attributes"][ROOT_ATTR]
    if attrs.get("layout_version") != LAYOUT_VERSION:
        raise StoreError(f"{output.location}: store layout version {attrs.get('layout_version')}; "
                         f"this platezarr reads version {LAYOUT_VERSION}")
    return output, attrs


def open_root(url: str | os.PathLike[str] | zarr.abc.store.Store,
              storage_options: dict | None = None) -> tuple[zarr.Group, zarr.abc.store.Store]:
    """The root group of a complete store, read-only, with the whole hierarchy from its consolidated metadata."""
    output, _ = checked_root(url, storage_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=zarr.errors.ZarrUserWarning)
        return zarr.open_group(output.store, mode="r", zarr_format=3, use_consolidated=True), output.store


def open_plate(url: str | os.PathLike[str], experiment: str, plate: str | int,
               storage_options: dict | None = None) -> xr.Dataset:
    """One plate as an xarray Dataset (`plate` may be the group name `Plate1` or the plate number 1)."""
    root, store = open_root(url, storage_options)
    name = plate if isinstance(plate, str) else _plate_group(root, plate)
    group = f"{experiment}/{name}"
    if group not in root:
        raise StoreError(f"{url}: no plate {group}; `platezarr info {url}` lists the plates")
    return xr.open_zarr(store, group=group, consolidated=True, zarr_format=3)


def _plate_group(root: zarr.Group, plate: int) -> str:
    from converters.schema import load_schema

    return load_schema(root.attrs[ROOT_ATTR]["dataset"]).plate_name(plate)


def open_store(url: str | os.PathLike[str], storage_options: dict | None = None) -> xr.DataTree:
    """The whole store as an xarray DataTree: experiments, plates, and the `index` group."""
    _, store = open_root(url, storage_options)
    return xr.open_datatree(store, engine="zarr", consolidated=True, zarr_format=3)


def open_index(url: str | os.PathLike[str], storage_options: dict | None = None) -> xr.Dataset:
    """The one-row-per-site table of the whole store (dim `sample`), loaded in memory."""
    output, _ = checked_root(url, storage_options)
    return read_index(output.store)


def read_index(store: zarr.abc.store.Store) -> xr.Dataset:
    """The `index` group, from its own consolidated metadata: two small reads and one per column."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=zarr.errors.ZarrUserWarning)
        group = zarr.open_group(store, path=INDEX_GROUP, mode="r", zarr_format=3, use_consolidated=True)
    columns = dict(zip(*_read_all(group)))
    return xr.Dataset(coords={name: ("sample", values) for name, values in sorted(columns.items())})


def _read_all(group: zarr.Group) -> tuple[list[str], list[np.ndarray]]:
    """Every array of `group`, read concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    arrays = dict(group.arrays())
    with ThreadPoolExecutor(8) as pool:
        return list(arrays), list(pool.map(lambda a: a[...], arrays.values()))


class _Sites:
    """Array-like view of every site as (sample, channel, y, x), read one site at a time from its plate."""

    def __init__(self, store: zarr.abc.store.Store, attrs: dict, groups: np.ndarray, wells: np.ndarray,
                 sites: np.ndarray) -> None:
        self.store, self.groups, self.wells, self.sites = store, groups, wells, sites
        self._arrays: dict[str, zarr.Array] = {}
        self.shape = (len(groups), len(attrs["channels"]), *attrs["image_shape"])
        self.dtype = np.dtype(attrs["dtype"])
        self.ndim = 4

    def _array(self, group: str) -> zarr.Array:
        if group not in self._arrays:
            self._arrays[group] = zarr.open_array(self.store, path=f"{group}/images", mode="r", zarr_format=3)
        return self._arrays[group]

    def __getitem__(self, key: tuple) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        picked = np.arange(self.shape[0])[key[0]]
        rest = key[1:]
        read = [self._array(str(self.groups[i]))[(int(self.wells[i]), int(self.sites[i]), *rest)]
                for i in np.atleast_1d(picked)]
        return read[0] if np.ndim(picked) == 0 else np.stack(read)


def open_sites(url: str | os.PathLike[str], storage_options: dict | None = None) -> xr.Dataset:
    """Every site of every plate as one lazy Dataset (dim `sample`), every metadata column a coordinate.

    Built from the root attributes and the `index` group alone, so opening costs the same few reads
    however many plates the store holds; a plate's array metadata is read when its pixels are.
    """
    output, attrs = checked_root(url, storage_options)
    index = read_index(output.store)
    if index.sizes.get("sample", 0) == 0:
        raise StoreError(f"{url}: the store holds no sites")
    view = _Sites(output.store, attrs, index["group"].values, index["well_index"].values, index["site_index"].values)
    images = da.from_array(view, chunks=(1, *view.shape[1:]), asarray=False, meta=np.empty((0, 0, 0, 0), view.dtype))
    return xr.Dataset(
        {"images": (("sample", "channel", "y", "x"), images)},
        coords=index.coords | {"channel": _channel_coord(attrs)},
        attrs=attrs,
    )


def _channel_coord(attrs: dict) -> xr.DataArray:
    channels = attrs["channels"]
    return xr.DataArray(
        np.array([c["id"] for c in channels], dtype=object),
        dims="channel",
        coords={"channel_name": ("channel", np.array([c["name"] for c in channels], dtype=object))},
        attrs={"channels": channels},
    )
