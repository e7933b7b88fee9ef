"""`SiteDataset`: a map-style dataset of whole sites for training loops, one ranged read per site.

Pixels come through the store's one site reader (converters/sitereader.py): after a shard's index is
known, a site costs one ranged GET on a bucket (one `pread` locally), its CRC32C checked; a crop of
a store of tiled chunks reads only the tiles it intersects. Safe in
PyTorch DataLoader workers with fork or spawn; torch itself is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from zarr.storage import LocalStore

from converters.errors import OptionError
from converters.location import parse_location
from converters.normalize import SiteTransform
from converters.readers import checked_root, read_index
from converters.sitereader import SiteReader


class SiteDataset:
    """Sites of a platezarr store, optionally filtered by metadata: `ds[i]` → (C x Y x X array, metadata dict).

    `where` is a dict of column → value (or list of values), or a pandas query string on the index;
    `channels` picks channels by id (`w1`) or name (`Hoechst`). `normalize` returns float32
    `(x - mean) / std` per channel with the statistics of the image itself ("sample"), its plate,
    experiment, plate's negative controls ("plate_controls") or the whole store ("global");
    `crop` returns a square of that size, placed at random (drawn from `seed` and the index alone)
    or at the centre (`crop_mode="center"`). Order, shuffling and batching stay with the caller's loader.
    """

    def __init__(self, url: str | os.PathLike[str], where: Mapping[str, Any] | str | None = None,
                 channels: Sequence[str] | None = None, storage_options: dict[str, Any] | None = None, *,
                 normalize: str | None = None, crop: int | None = None, crop_mode: str = "random",
                 seed: int = 0) -> None:
        location = parse_location(url, storage_options)
        output, attrs = checked_root(LocalStore(location.path, read_only=True) if location.path else location.zarr_fsspec_store())
        self.url, self.storage_options = os.fspath(url), storage_options
        self.table = _filter(read_index(output.store).to_dataframe().reset_index(drop=True), where)
        self.channels = _channel_indices(attrs["channels"], channels)
        self.dtype = np.dtype(attrs["dtype"])
        self.shape = (len(self.channels), *attrs["image_shape"])
        first = str(self.table["group"].iloc[0]) if len(self.table) else None
        self._reader = SiteReader(url, first, storage_options) if first else None
        ids = [attrs["channels"][c]["id"] for c in self.channels]
        self.transform = SiteTransform.for_table(url, self.table, ids, attrs["image_shape"], normalize, crop, crop_mode,
                                                 seed, storage_options)
        if crop is not None:
            self.shape = (len(self.channels), crop, crop)
        if normalize is not None:
            self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def reader(self) -> SiteReader | None:
        """The site reader `ds[i]` reads through (None without sites): `SiteStream` warms its shard-index cache."""
        return self._reader

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        i = i + len(self) if i < 0 else i
        row = self.table.iloc[i]
        assert self._reader is not None  # a dataset with rows has a reader
        # A crop reads only the chunks it intersects (the tiles of a tiled store; a whole-site chunk otherwise); the
        # transform's window of pixels already cropped is all of them, so it only normalizes.
        window = self.transform.window(i, self._reader.image_shape)
        pixels = self._reader.read_window(str(row["group"]), int(row["well_index"]), int(row["site_index"]), window,
                                          str(row["well"]))
        return self.transform(pixels[self.channels], i), _metadata(row)


def _filter(table: pd.DataFrame, where: Mapping[str, Any] | str | None) -> pd.DataFrame:
    if where is None:
        return table
    if isinstance(where, str):
        return table.query(where).reset_index(drop=True)
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        if column not in table:
            raise OptionError(f"no metadata column {column!r}; columns: {', '.join(table.columns)}")
        values = value if isinstance(value, (list, tuple, set)) else [value]
        mask &= table[column].isin(list(values)).to_numpy()
    return table[mask].reset_index(drop=True)


def _channel_indices(channels: list[dict], wanted: Sequence[str] | None) -> list[int]:
    if wanted is None:
        return list(range(len(channels)))
    lookup = {c["id"]: i for i, c in enumerate(channels)} | {c["name"]: i for i, c in enumerate(channels)}
    missing = [w for w in wanted if w not in lookup]
    if missing:
        raise OptionError(f"unknown channels {missing}; the store has {[c['id'] for c in channels]}")
    return [lookup[w] for w in wanted]


def _metadata(row: pd.Series) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
