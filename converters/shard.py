"""One shard of a sharded Zarr v3 array, both ways: encode a whole shard in one call, and locate, check
and decode a chunk inside one. The shard writer and every reader of sites share this module.

Through zarr-python's `array[well] = block` a conversion costs 2.5x the CPU time of just decoding
its PNGs; encoding here, in the worker that decoded the block, 1.8x (benchmarks/run.py, RxRx1). The
bytes are the `sharding_indexed` codec of the Zarr v3 specification, as zarr-python writes them:

- each inner chunk goes through its profile's codecs (converters/profiles.py), then `crc32c`;
- chunks follow each other in Morton order, as zarr-python lays them out;
- the shard index — one (offset, nbytes) pair of little-endian uint64 per chunk, in C order of the
  chunk grid — goes through `bytes` → `crc32c` and is appended at the end (`index_location: end`).

tests/test_write_fast.py checks that the bytes equal zarr-python's own and decode through plain zarr.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

import google_crc32c
import numpy as np

from converters.errors import StoreError
from converters.profiles import Profile, normal_chain, profile_of_chain

EMPTY = 2**64 - 1  # offset and nbytes of a chunk that is not in the shard
CRC_RESIDUE = 0x48674BC7  # CRC32C's residue: the checksum of any bytes followed by their checksum
INDEX_CODECS: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
SEPARATOR = "."  # the `default` chunk key encoding's separator in platezarr stores: `c.3.0.0.0.0`


@dataclass(frozen=True)
class ShardLayout:
    """How one sharded array's shards are cut into chunks and encoded: plain data, the same for writers and readers."""

    shard_shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype  # little endian, as the chunks store it
    profile: Profile
    separator: str = SEPARATOR

    def __post_init__(self) -> None:
        if len(self.chunk_shape) != len(self.shard_shape) or any(
                s % c for s, c in zip(self.shard_shape, self.chunk_shape)):
            raise StoreError(f"chunks {self.chunk_shape} do not tile shards {self.shard_shape}")

    @classmethod
    def of(cls, meta: dict[str, Any], where: str) -> ShardLayout:
        """The layout described by an array's zarr.json; a StoreError if platezarr did not write it so."""
        codecs = meta.get("codecs", [])
        sharding = codecs[0] if len(codecs) == 1 else {}
        config = sharding.get("configuration", {})
        profile = profile_of_chain(config.get("codecs", [])) if sharding.get("name") == "sharding_indexed" else None
        keys = meta.get("chunk_key_encoding", {})
        plain = (meta.get("zarr_format") == 3 and not meta.get("storage_transformers")
                 and meta.get("chunk_grid", {}).get("name") == "regular" and keys.get("name") == "default"
                 and normal_chain(config.get("index_codecs", [])) == normal_chain(INDEX_CODECS) and config.get("index_location", "end") == "end")
        if profile is None or not plain:
            raise StoreError(f"{where}: not an array of whole-well shards with a platezarr codec chain; "
                             "read it with plain zarr or open_sites instead")
        return cls(
            shard_shape=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            chunk_shape=tuple(config["chunk_shape"]),
            dtype=np.dtype(meta["data_type"]).newbyteorder("<"),
            profile=profile,
            separator=keys.get("configuration", {}).get("separator", "/"),
        )

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard_shape, self.chunk_shape))

    @property
    def index_nbytes(self) -> int:
        """Bytes of the shard index at the end of every shard: 16 per chunk and the CRC32C."""
        return 16 * int(np.prod(self.chunks_per_shard)) + 4

    def key(self, shard_coords: tuple[int, ...]) -> str:
        """The shard's store key under the `default` chunk key encoding, e.g. `c.3.0.0.0.0`."""
        return self.separator.join(["c", *map(str, shard_coords)])

    def encode(self, block: np.ndarray) -> list[bytes]:
        """The bytes of one full shard as pieces (chunks in Morton order, then the index); joined, the shard.

        A block smaller than the shard (an image that its tiles do not divide) is padded with the fill value 0,
        as Zarr pads the edge chunks of an array."""
        if block.ndim != len(self.shard_shape) or any(b > s for b, s in zip(block.shape, self.shard_shape)):
            raise ValueError(f"block of shape {block.shape} does not fit in one shard {self.shard_shape}")
        index = np.full((*self.chunks_per_shard, 2), EMPTY, dtype="<u8")
        pieces: list[bytes] = []
        offset = 0
        for coords, data in self._encode_chunks(np.asarray(block, dtype=self.dtype)):
            index[coords] = (offset, len(data))
            pieces.append(data)
            offset += len(data)
        pieces.extend(_with_crc(index.tobytes()))
        return pieces

    def _encode_chunks(self, block: np.ndarray) -> Iterator[tuple[tuple[int, ...], bytes]]:
        for coords in morton_order(self.chunks_per_shard):
            chunk = block[tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, self.chunk_shape))]
            if chunk.shape != self.chunk_shape:
                chunk = np.pad(chunk, [(0, n - m) for m, n in zip(chunk.shape, self.chunk_shape)])
            yield coords, b"".join(_with_crc(self.profile.encode(np.ascontiguousarray(chunk))))

    def parse_index(self, data: bytes, where: str) -> np.ndarray:
        """The (offset, nbytes) of every chunk, shaped as the chunk grid, from a shard's last `index_nbytes` bytes."""
        payload = checked(data, f"{where} (shard index)")
        return np.frombuffer(payload, dtype="<u8").reshape(*self.chunks_per_shard, 2)

    def decode_chunk(self, data: bytes, where: str) -> np.ndarray:
        """One chunk's pixels from its stored bytes, its CRC32C checked first."""
        payload = checked(data, where)
        try:
            return self.profile.decode(payload, self.chunk_shape, self.dtype)
        except (ValueError, RuntimeError) as exc:  # the codecs raise their own errors for bytes that do not decode
            raise StoreError(f"{where}: the stored chunk does not decode ({exc}); re-convert this well") from exc

    def decode_shard(self, data: bytes, where: str) -> np.ndarray:
        """A whole shard's pixels (fill value 0 where a chunk is absent), every checksum checked."""
        index = self.parse_index(data[-self.index_nbytes:], where)
        block = np.zeros(self.shard_shape, dtype=self.dtype)
        for coords in product(*(range(n) for n in self.chunks_per_shard)):
            offset, nbytes = (int(v) for v in index[coords])
            if offset != EMPTY:
                region = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, self.chunk_shape))
                block[region] = self.decode_chunk(data[offset:offset + nbytes], where)
        return block


def checked(data: bytes, where: str) -> memoryview:
    """The payload of `data` whose last 4 bytes are its CRC32C (a view: no copy); a mismatch means corrupted bytes.

    The CRC32C of a payload followed by its own CRC32C (little-endian) is always CRC_RESIDUE, so the whole of
    `data` is checked at once, without first copying the payload out.
    """
    if len(data) < 4:
        raise StoreError(f"{where}: {len(data)} bytes where a checksummed chunk was expected; re-convert this well")
    if google_crc32c.value(data) != CRC_RESIDUE:
        raise StoreError(f"{where}: checksum mismatch, the stored bytes are corrupted; re-convert this well")
    return memoryview(data)[:-4]


def morton_order(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
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

    return sorted(product(*(range(n) for n in shape)), key=code)


def _with_crc(data: bytes) -> tuple[bytes, bytes]:
    """`data` and its CRC32C as 4 little-endian bytes: the `crc32c` codec's output is their concatenation."""
    return data, struct.pack("<I", google_crc32c.value(data))
