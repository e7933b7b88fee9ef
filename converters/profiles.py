"""Compression profiles: the one table of how a store's chunks are encoded.

Each profile names its zarr codec chain (what the template creates), encodes a chunk (what the shard
writer does) and decodes one (what the site reader does), and says what a reader must install. The
CLI's choices, the plan, the template, the shard writer and the readers all read `PROFILES`: a new
profile is one entry here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.errors import OptionError

if TYPE_CHECKING:  # codecs are imported where a chunk is encoded or a chain made: a dry run loads no zarr
    from zarr.abc.codec import ArrayBytesCodec, BytesBytesCodec

DEFAULT = "default"
JPEGLS = "platezarr.jpegls"  # the compact profile's codec (converters/jpegls.py), as zarr finds it


@dataclass(frozen=True)
class Profile(ABC):
    """A named chunk encoding: every chunk goes through `codec` and then a CRC32C checksum."""

    name: str
    codec: str  # how the plan and the store's attributes name the chunk codec, e.g. `zstd-3`
    help: str
    size_ratio: float  # output bytes / source PNG bytes, measured on RxRx1
    reader_needs: str  # what a reader must install to decode it: "zarr" or "platezarr"

    def serializer(self) -> ArrayBytesCodec:
        """The array → bytes codec of the chain."""
        from zarr.codecs import BytesCodec

        return BytesCodec()

    def compressors(self) -> list[BytesBytesCodec]:
        """The bytes → bytes codecs after the serializer; the CRC32C is always last."""
        from zarr.codecs import Crc32cCodec

        return [Crc32cCodec()]

    def chain(self) -> list[dict[str, Any]]:
        """The chunk codecs as zarr writes them in an array's metadata, normalised (see `normal_chain`)."""
        return normal_chain([self.serializer().to_dict(), *(c.to_dict() for c in self.compressors())])

    @abstractmethod
    def encode(self, chunk: np.ndarray) -> bytes:
        """One chunk's bytes before its CRC32C."""

    @abstractmethod
    def decode(self, payload: bytes | memoryview, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The chunk of `shape` and (little-endian) `dtype` that `encode` encoded as `payload` (CRC32C removed)."""


@dataclass(frozen=True)
class ZstdProfile(Profile):
    """Little-endian bytes, then zstd at `level` without zstd's own checksum: a standard Zarr v3 chain."""

    level: int = 3

    def compressors(self) -> list[BytesBytesCodec]:
        from zarr.codecs import Crc32cCodec, ZstdCodec

        return [ZstdCodec(level=self.level), Crc32cCodec()]

    def encode(self, chunk: np.ndarray) -> bytes:
        from numcodecs import Zstd

        return bytes(Zstd(level=self.level).encode(np.ascontiguousarray(chunk)))

    def decode(self, payload: bytes | memoryview, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        from numcodecs import Zstd

        return np.frombuffer(Zstd().decode(payload), dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class BloscProfile(Profile):
    """Little-endian bytes, bit-shuffled (the sample size from the dtype), then Blosc's zstd at `level`: a standard
    Zarr v3 chain. On 16-bit CPJUMP1 fields 0.94x the PNG bytes where zstd-3 gives 1.07x, and 2.6x cheaper to encode."""

    level: int = 1

    def compressors(self) -> list[BytesBytesCodec]:
        from zarr.codecs import BloscCodec, Crc32cCodec

        return [BloscCodec(cname="zstd", clevel=self.level, shuffle="bitshuffle"), Crc32cCodec()]

    def encode(self, chunk: np.ndarray) -> bytes:
        from numcodecs import Blosc

        return bytes(Blosc(cname="zstd", clevel=self.level, shuffle=Blosc.BITSHUFFLE).encode(np.ascontiguousarray(chunk)))

    def decode(self, payload: bytes | memoryview, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        from numcodecs import Blosc

        return np.frombuffer(Blosc().decode(payload), dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class JpeglsProfile(Profile):
    """JPEG-LS lossless, one code stream per image plane (converters/jpegls.py)."""

    def serializer(self) -> ArrayBytesCodec:
        from converters.jpegls import JpeglsCodec

        return JpeglsCodec()

    def encode(self, chunk: np.ndarray) -> bytes:
        from converters.jpegls import encode_planes

        return encode_planes(chunk)

    def decode(self, payload: bytes | memoryview, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        from converters.jpegls import decode_planes

        return decode_planes(payload, shape, dtype)


PROFILES: dict[str, Profile] = {
    DEFAULT: ZstdProfile(DEFAULT, "zstd-3", "zstd (Blosc-zstd with bit shuffling for 16-bit images), read by plain "
                         "zarr", 1.25, "zarr", level=3),
    "compact": JpeglsProfile("compact", JPEGLS, "JPEG-LS lossless, about 0.6x the bytes, read where platezarr "
                             "is installed", 0.85, "platezarr"),
}
# Where a profile encodes images of one sample size (bytes) with another chain than its own.
BY_DEPTH: dict[tuple[str, int], Profile] = {
    (DEFAULT, 2): BloscProfile(DEFAULT, "blosc-zstd-1-bitshuffle", "", 0.95, "zarr", level=1),
}


def parse_profile(name: str) -> Profile:
    """The profile called `name`, or an OptionError listing the profiles."""
    if name not in PROFILES:
        raise OptionError(f"compression must be one of {', '.join(PROFILES)}, not {name!r}")
    return PROFILES[name]


def profile_for(name: str, dtype: np.dtype) -> Profile:
    """The chain profile `name` encodes images of `dtype` with."""
    return BY_DEPTH.get((name, np.dtype(dtype).itemsize), parse_profile(name))


def chains_of(name: str) -> dict[str, Profile]:
    """Every chain profile `name` uses, by codec label: what a store begun under this name may hold."""
    return {p.codec: p for p in (PROFILES[name], *(p for (n, _), p in BY_DEPTH.items() if n == name))}


def normal_chain(codecs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Codec JSON with defaults and what follows from the dtype dropped (little endian, Blosc's sample size, empty
    configurations), so equal chains compare equal."""
    out = []
    for codec in codecs:
        config = {k: v for k, v in codec.get("configuration", {}).items()
                  if (k, v) != ("endian", "little") and k != "typesize"}
        out.append({"name": codec["name"], **({"configuration": config} if config else {})})
    return out


def profile_of_chain(codecs: list[dict[str, Any]]) -> Profile | None:
    """The profile whose chunk codecs are `codecs` (as in an array's metadata), or None."""
    chain = normal_chain(codecs)
    return next((p for p in (*PROFILES.values(), *BY_DEPTH.values()) if p.chain() == chain), None)
