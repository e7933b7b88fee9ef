"""Encode one whole shard of a sharded Zarr v3 array in one call, and write it to a local store atomically.

Through zarr-python's `array[well] = block` a conversion costs 2.5x the CPU time of just decoding
its PNGs; with this module 1.8x, of which zstd-3 itself is 1.6x (benchmarks/run.py, RxRx1). It
produces the same bytes directly, in the worker that decoded the block, with a handful of Python
calls per chunk and one file write per shard:

- each inner chunk goes through the chunk codecs `bytes` (little endian) → `zstd` → `crc32c`, or for
  the compact profile `platezarr.jpegls` → `crc32c`;
- chunks follow each other in Morton order, as zarr-python lays them out;
- the shard index — one (offset, nbytes) pair of little-endian uint64 per chunk, in C order of the
  chunk grid — goes through `bytes` → `crc32c` and is appended at the end (`index_location: end`).

That is the `sharding_indexed` codec of the Zarr v3 specification, and tests/test_write_fast.py
checks that the bytes equal zarr-python's own and decode through plain zarr. Only this codec chain is
encoded here: `ShardLayout.of(array)` returns None for anything else (another codec, a remote store,
zarr format 2), and the caller then writes through zarr-python.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from itertools import product
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import Zstd
from zarr.storage import LocalStore

from converters.jpegls import NAME as JPEGLS
from converters.jpegls import encode_planes
from converters.output import write_atomic

EMPTY = 2**64 - 1  # offset and nbytes of a chunk that is not in the shard


@dataclass(frozen=True)
class ShardLayout:
    """Where and how one sharded array's shards are written: what `ShardLayout.of` found in its metadata."""

    folder: Path  # the array's folder in the local store
    shard_shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype  # little endian, as the bytes codec stores it
    codec: str  # the chunk codec: `zstd-N` or `platezarr.jpegls` (each followed by crc32c)
    separator: str

    @classmethod
    def of(cls, array: zarr.Array) -> ShardLayout | None:
        """The layout of `array` if its shards can be written here, else None (write through zarr-python)."""
        store = array.store
        if not isinstance(store, LocalStore) or store.read_only:
            return None
        meta = array.metadata.to_dict()
        if meta.get("zarr_format") != 3 or meta.get("storage_transformers"):
            return None
        grid, keys = meta["chunk_grid"], meta["chunk_key_encoding"]
        if grid.get("name") != "regular" or keys.get("name") != "default" or len(meta["codecs"]) != 1:
            return None
        sharding = meta["codecs"][0]
        if sharding.get("name") != "sharding_indexed":
            return None
        config = sharding["configuration"]
        codec = chunk_codec(config["codecs"])
        index_ok = _names(config["index_codecs"]) == ["bytes", "crc32c"] and _little(config["index_codecs"][0])
        if codec is None or not index_ok or config.get("index_location", "end") != "end":
            return None
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf":
            return None
        shard_shape = tuple(grid["configuration"]["chunk_shape"])
        chunk_shape = tuple(config["chunk_shape"])
        if len(chunk_shape) != len(shard_shape) or any(s % c for s, c in zip(shard_shape, chunk_shape)):
            return None
        return cls(
            folder=Path(store.root) / array.path,
            shard_shape=shard_shape,
            chunk_shape=chunk_shape,
            dtype=dtype.newbyteorder("<"),
            codec=codec,
            separator=keys.get("configuration", {}).get("separator", "/"),
        )

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard_shape, self.chunk_shape))

    def key(self, shard_coords: tuple[int, ...]) -> str:
        """The shard's store key under the `default` chunk key encoding, e.g. `c.3.0.0.0.0`."""
        return self.separator.join(["c", *map(str, shard_coords)])


def _names(codecs: list[dict]) -> list[str]:
    return [c.get("name") for c in codecs]


def _little(codec: dict) -> bool:
    return codec.get("configuration", {}).get("endian", "little") == "little"


def chunk_codec(codecs: list[dict]) -> str | None:
    """`zstd-N` for the chunk codecs `bytes` → `zstd` (no frame checksum) → `crc32c`, `platezarr.jpegls` for
    `platezarr.jpegls` → `crc32c`, else None."""
    if _names(codecs) == [JPEGLS, "crc32c"]:
        return JPEGLS
    if _names(codecs) != ["bytes", "zstd", "crc32c"] or not _little(codecs[0]):
        return None
    zstd = codecs[1].get("configuration", {})
    if zstd.get("checksum", False):
        return None
    return f"zstd-{int(zstd.get('level', 0))}"


def chunk_encoder(codec: str) -> Callable[[np.ndarray], bytes]:
    """The function that encodes one chunk (before its CRC32C) with the chunk codec named `codec`."""
    if codec == JPEGLS:
        return encode_planes
    return Zstd(level=int(codec.removeprefix("zstd-"))).encode


@cache
def morton_order(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Every chunk position of a shard, in the Morton (Z) order zarr-python uses to lay chunks out.

    The order only affects where chunk bytes sit in the shard (the index locates them); following
    zarr-python's keeps our shards byte-identical to its own.
    """
    bits = [(n - 1).bit_length() for n in shape]

    def code(coords: tuple[int, ...]) -> int:
        out, position = 0, 0
        for bit in range(max(bits, default=0)):
            for dim, value in enumerate(coords):
                if bit < bits[dim]:
                    out |= ((value >> bit) & 1) << position
                    position += 1
        return out

    return tuple(sorted(product(*(range(n) for n in shape)), key=code))


def _with_crc(data: bytes) -> tuple[bytes, bytes]:
    """`data` and its CRC32C as 4 little-endian bytes: the `crc32c` codec's output is their concatenation."""
    return data, struct.pack("<I", google_crc32c.value(data))


def encode_chunks(block: np.ndarray, layout: ShardLayout) -> Iterator[tuple[tuple[int, ...], bytes]]:
    """(chunk position, encoded chunk) for every chunk of a full shard, in Morton order."""
    encode = chunk_encoder(layout.codec)
    block = np.asarray(block, dtype=layout.dtype)
    for coords in morton_order(layout.chunks_per_shard):
        chunk = block[tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, layout.chunk_shape))]
        compressed = encode(np.ascontiguousarray(chunk))
        yield coords, b"".join(_with_crc(compressed))


def encode_shard(block: np.ndarray, layout: ShardLayout) -> list[bytes]:
    """The bytes of one full shard as a list of pieces (chunks, then the index); join them to get the shard."""
    if block.shape != layout.shard_shape:
        raise ValueError(f"block of shape {block.shape} is not one full shard {layout.shard_shape}")
    index = np.full((*layout.chunks_per_shard, 2), EMPTY, dtype="<u8")
    pieces: list[bytes] = []
    offset = 0
    for coords, data in encode_chunks(block, layout):
        index[coords] = (offset, len(data))
        pieces.append(data)
        offset += len(data)
    pieces.extend(_with_crc(index.tobytes()))
    return pieces


def write_shard(layout: ShardLayout, shard_coords: tuple[int, ...], block: np.ndarray) -> int:
    """Encode `block` as the shard at `shard_coords` and replace that shard file atomically; returns its bytes.

    The shard is written to a unique `.partial` file beside its final name and renamed over it, so
    a reader (or an interrupted run) sees the old shard or the new one, never a part.
    """
    pieces = encode_shard(block, layout)
    write_atomic(layout.folder / layout.key(shard_coords), pieces)
    return sum(len(p) for p in pieces)
