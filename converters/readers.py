"""Open a platezarr store with xarray: one plate, the whole tree, or every site as one lazy Dataset.

All readers open the store read-only and from its consolidated metadata, so opening costs a handful
of reads however many plates the store holds.
"""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.abc.store import Store

from converters.errors import StoreError
from converters.finalize import INDEX_GROUP, LAYOUT_VERSION
from converters.output import ROOT_ATTR, Output
from converters.sitereader import SiteReader


def checked_root(url: str | os.PathLike[str] | Store,
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
    attrs: dict[str, Any] = (meta or {})["attributes"][ROOT_ATTR]
    if attrs.get("layout_version") != LAYOUT_VERSION:
        raise StoreError(f"{output.location}: store layout version {attrs.get('layout_version')}; "
                         f"this platezarr reads version {LAYOUT_VERSION}")
    return output, attrs


def open_root(url: str | os.PathLike[str] | Store,
              storage_options: dict[str, Any] | None = None) -> tuple[zarr.Group, Output, dict[str, Any]]:
    """The root group of a complete store, read-only, with the whole hierarchy from its consolidated metadata;
    the store, and its root `platezarr` attributes. An OME-Zarr output has no such hierarchy: a StoreError."""
    output, attrs = checked_root(url, storage_options)
    if attrs.get("format", "native") != "native":
        raise StoreError(f"{output.location} is an {attrs['format']} output (docs/viewing.md): open its plates with an "
                         "OME-Zarr reader (napari, ome-zarr-py); of platezarr's readers, open_sites, SiteDataset and "
                         "verify read it, the rest and export read a native platezarr store")
    return zarr.open_group(output.store, mode="r", zarr_format=3, use_consolidated=True), output, attrs


def read_array(root: zarr.Group, path: str) -> np.ndarray:
    """The whole array at `path` below `root`, in memory."""
    node = root[path]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path}: a group where platezarr writes an array; the store was changed by hand")
    return np.asarray(node[...])


def plate_groups(root: zarr.Group) -> list[str]:
    """Every `experiment/plate` group of a store, sorted."""
    return sorted(f"{e}/{p}" for e, experiment in root.groups() if e != INDEX_GROUP for p, _ in experiment.groups())


def open_plate(url: str | os.PathLike[str], experiment: str, plate: str | int,
               storage_options: dict | None = None) -> xr.Dataset:
    """One plate as an xarray Dataset (`plate` may be the group name `Plate1` or the plate number 1)."""
    root, output, attrs = open_root(url, storage_options)
    name = plate if isinstance(plate, str) else _plate_group(attrs, plate)
    group = f"{experiment}/{name}"
    if group not in root:
        raise StoreError(f"{url}: no plate {group}; `platezarr info {url}` lists the plates")
    return xr.open_zarr(output.store, group=group, consolidated=True, zarr_format=3)


def _plate_group(attrs: dict[str, Any], plate: int) -> str:
    from converters.schema import load_schema

    return load_schema(attrs["dataset"]).plate_name(plate)


def open_store(url: str | os.PathLike[str], storage_options: dict | None = None) -> xr.DataTree:
    """The whole store as an xarray DataTree: experiments, plates, and the `index` group."""
    _, output, _ = open_root(url, storage_options)
    return xr.open_datatree(output.store, engine="zarr", consolidated=True, zarr_format=3)  # type: ignore[arg-type]


def open_index(url: str | os.PathLike[str], storage_options: dict | None = None) -> xr.Dataset:
    """The one-row-per-site table of the whole store (dim `sample`), loaded in memory."""
    output, _ = checked_root(url, storage_options)
    return read_index(output.store)


def read_index(store: Store) -> xr.Dataset:
    """The `index` group, from its own consolidated metadata: two small reads and one per column."""
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
    """Array-like view of every site as (sample, channel, y, x), each site read by the store's site reader."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, attrs: dict[str, Any], groups: np.ndarray,
                 wells: np.ndarray, sites: np.ndarray) -> None:
        self.url, self.storage_options = url, storage_options
        self.groups, self.wells, self.sites = groups, wells, sites
        self._reader: SiteReader | None = None  # made at the first read: opening reads no array metadata
        self.shape = (len(groups), len(attrs["channels"]), *attrs["image_shape"])
        self.dtype = np.dtype(attrs["dtype"])
        self.ndim = 4

    def __getitem__(self, key: tuple[Any, ...] | Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        picked = np.arange(self.shape[0])[key[0]]
        if self._reader is None:
            self._reader = SiteReader(self.url, str(self.groups[0]), self.storage_options)
        window, rest = _window(key[1:], self.shape[2:])
        read = [self._reader.read_window(str(self.groups[i]), int(self.wells[i]), int(self.sites[i]), window)[rest]
                for i in np.atleast_1d(picked)]
        return read[0] if np.ndim(picked) == 0 else np.stack(read)


def _window(key: tuple[Any, ...], image_shape: tuple[int, ...]) -> tuple[tuple[slice, slice], tuple[Any, ...]]:
    """The (y, x) window of a site that a (channel, y, x) key reaches into, and the key to apply to that window:
    a crop sliced from `open_sites` (dask hands the slice down to here) reads only the tiles it intersects."""
    if any(k is Ellipsis for k in key):
        return (slice(0, image_shape[0]), slice(0, image_shape[1])), key
    key = key + (slice(None),) * (3 - len(key))
    window, rest = [], [key[0]]
    for k, size in zip(key[1:], image_shape):
        start, stop, step = k.indices(size) if isinstance(k, slice) else (0, 0, 0)
        if step == 1 and start < stop:
            window.append(slice(start, stop))
            rest.append(slice(None))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool) and -size <= k < size:  # a row or column
            row = int(k) % size
            window.append(slice(row, row + 1))
            rest.append(0)
        else:  # a stride, an empty range, a list: read across the site, then pick
            window.append(slice(0, size))
            rest.append(k)
    return (window[0], window[1]), tuple(rest)


def open_sites(url: str | os.PathLike[str], storage_options: dict | None = None) -> xr.Dataset:
    """Every site of every plate as one lazy Dataset (dim `sample`), every metadata column a coordinate.

    Built from the root attributes and the `index` group alone, so opening costs the same few reads
    however many plates the store holds; a plate's array metadata is read when its pixels are.
    """
    output, attrs = checked_root(url, storage_options)
    index = read_index(output.store)
    if index.sizes.get("sample", 0) == 0:
        raise StoreError(f"{url}: the store holds no sites")
    view = _Sites(os.fspath(url), storage_options, attrs, index["group"].values, index["well_index"].values,
                  index["site_index"].values)
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
