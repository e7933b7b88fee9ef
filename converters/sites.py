"""`SiteDataset`: a map-style dataset of whole sites for training loops, one ranged read per site.

A site is one chunk inside its well's shard. The shard's index (where each chunk sits) is read once
and cached, so after warm-up a site costs exactly one ranged GET on a bucket (one `pread` locally),
then its CRC32C is checked and it is decoded (zstd, or JPEG-LS in a compact store). Connections are opened lazily in each process, so the
dataset is safe in PyTorch DataLoader workers with fork or spawn; torch itself is not needed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import google_crc32c
import numpy as np
import pandas as pd
import zarr
from numcodecs import Zstd
from zarr.storage import LocalStore

from converters.errors import StoreError
from converters.jpegls import NAME as JPEGLS
from converters.jpegls import decode_planes
from converters.location import parse_location
from converters.readers import checked_root, read_index
from converters.shard import EMPTY, chunk_codec


class _Reader:
    """Ranged reads of one store: `pread` on local files, fsspec `cat_file` ranges on buckets.

    fsspec rather than obstore here: obstore's tokio runtime hangs in a process forked after it
    started (obstore's own maintainers call it not fork-safe), and DataLoader workers fork.
    """

    def __init__(self, url: str, storage_options: dict | None) -> None:
        location = parse_location(url, storage_options)
        self.path = location.path
        self.fs, self.root = (None, "") if self.path is not None else location.fsspec()

    def read(self, key: str, start: int, length: int) -> bytes:
        if self.path is not None:
            with open(self.path / key, "rb") as f:
                return os.pread(f.fileno(), length, start)
        return self.fs.cat_file(f"{self.root}/{key}", start=start, end=start + length)

    def tail(self, key: str, length: int) -> bytes:
        if self.path is not None:
            with open(self.path / key, "rb") as f:
                return os.pread(f.fileno(), length, os.fstat(f.fileno()).st_size - length)
        return self.fs.cat_file(f"{self.root}/{key}", start=-length)


def _checked(data: bytes, where: str) -> bytes:
    """The payload of `data` whose last 4 bytes are its CRC32C; a mismatch means corrupted bytes."""
    payload, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if google_crc32c.value(payload) != crc:
        raise StoreError(f"{where}: checksum mismatch, the stored bytes are corrupted; re-convert this well")
    return payload


class SiteDataset:
    """Sites of a platezarr store, optionally filtered by metadata: `ds[i]` → (C x Y x X array, metadata dict).

    `where` is a dict of column → value (or list of values), or a pandas query string on the index;
    `channels` picks channels by id (`w1`) or name (`Hoechst`). Order, shuffling and batching stay
    with the caller's loader.
    """

    def __init__(self, url: str | os.PathLike[str], where: Mapping[str, Any] | str | None = None,
                 channels: Sequence[str] | None = None, storage_options: dict | None = None) -> None:
        location = parse_location(url, storage_options)
        output, attrs = checked_root(LocalStore(location.path, read_only=True) if location.path else location.zarr_fsspec_store())
        self.url, self.storage_options = os.fspath(url), storage_options
        self.table = _filter(read_index(output.store).to_dataframe().reset_index(drop=True), where)
        self.channels = _channel_indices(attrs["channels"], channels)
        self.dtype = np.dtype(attrs["dtype"])
        self.shape = (len(self.channels), *attrs["image_shape"])
        # Every plate's images array has the same codecs and chunks: one plate's metadata describes all.
        first = str(self.table["group"].iloc[0]) if len(self.table) else None
        self._layout = _site_layout(zarr.open_array(output.store, path=f"{first}/images", mode="r")) if first else {}
        self._pid: int | None = None
        self._reader: _Reader | None = None
        self._indexes: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        row = self.table.iloc[i]
        group, well, site = str(row["group"]), int(row["well_index"]), int(row["site_index"])
        layout = self._layout
        key = f"{group}/images/" + layout["key"].format(well=well)
        offset, nbytes = self._shard_index(key)[site]
        if offset == EMPTY:
            pixels = np.zeros(layout["chunk"], dtype=self.dtype)
        else:
            payload = _checked(self._io().read(key, int(offset), int(nbytes)), f"{self.url}/{key}")
            pixels = _decode(layout, payload)
        return pixels[self.channels].astype(self.dtype, copy=False), _metadata(row)

    def _io(self) -> _Reader:
        """The reader of this process: re-created after a fork, never shared across one."""
        if self._pid != os.getpid():
            self._reader, self._indexes, self._pid = _Reader(self.url, self.storage_options), {}, os.getpid()
        assert self._reader is not None
        return self._reader

    def _shard_index(self, key: str) -> np.ndarray:
        reader = self._io()
        if key not in self._indexes:
            n = self._layout["sites"]
            index = _checked(reader.tail(key, 16 * n + 4), f"{self.url}/{key} (shard index)")
            self._indexes[key] = np.frombuffer(index, dtype="<u8").reshape(n, 2)
        return self._indexes[key]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_reader", "_indexes", "_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _reader=None, _indexes={}, _pid=None)


def _filter(table: pd.DataFrame, where: Mapping[str, Any] | str | None) -> pd.DataFrame:
    if where is None:
        return table
    if isinstance(where, str):
        return table.query(where).reset_index(drop=True)
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        if column not in table:
            raise KeyError(f"no metadata column {column!r}; columns: {', '.join(table.columns)}")
        values = value if isinstance(value, (list, tuple, set)) else [value]
        mask &= table[column].isin(list(values)).to_numpy()
    return table[mask].reset_index(drop=True)


def _channel_indices(channels: list[dict], wanted: Sequence[str] | None) -> list[int]:
    if wanted is None:
        return list(range(len(channels)))
    lookup = {c["id"]: i for i, c in enumerate(channels)} | {c["name"]: i for i, c in enumerate(channels)}
    missing = [w for w in wanted if w not in lookup]
    if missing:
        raise KeyError(f"unknown channels {missing}; the store has {[c['id'] for c in channels]}")
    return [lookup[w] for w in wanted]


def _site_layout(array) -> dict[str, Any]:
    """Where a site's chunk sits: the shard key pattern, sites per shard, chunk shape, stored dtype."""
    meta = array.metadata.to_dict()
    sharding = meta["codecs"][0]
    codec = chunk_codec(sharding["configuration"]["codecs"]) if sharding["name"] == "sharding_indexed" else None
    if codec is None:
        raise StoreError(f"{array.path}: not the default chunk-per-site layout; read it with open_sites instead")
    config = sharding["configuration"]
    separator = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    shard, chunk = list(meta["chunk_grid"]["configuration"]["chunk_shape"]), list(config["chunk_shape"])
    if shard[0] != 1 or chunk[:2] != [1, 1] or chunk[2:] != shard[2:]:
        raise StoreError(f"{array.path}: chunks are not whole sites; read it with open_sites instead")
    key = separator.join(["c", "{well}", "0", "0", "0", "0"])
    return {"key": key, "sites": shard[1], "chunk": tuple(chunk[2:]), "codec": codec,
            "dtype": np.dtype(array.dtype).newbyteorder("<")}


def _decode(layout: dict[str, Any], payload: bytes) -> np.ndarray:
    """A site's (channel, y, x) pixels from its chunk's bytes (CRC32C already checked and removed)."""
    if layout["codec"] == JPEGLS:
        return decode_planes(payload, layout["chunk"], layout["dtype"])
    return np.frombuffer(Zstd().decode(payload), dtype=layout["dtype"]).reshape(layout["chunk"])


def _metadata(row: pd.Series) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
