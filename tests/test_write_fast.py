"""The direct shard writer (converters/shard.py) against zarr-python: same bytes, same pixels, same checks.

A shard written by platezarr's fast path must be exactly what zarr-python writes for the same block,
decode through plain zarr to the same pixels, and fail loudly on a flipped byte (chunk CRC32C and
index CRC32C). Anything the fast path does not encode must fall back to zarr-python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, GzipCodec, ZstdCodec
from zarr.core.indexing import _morton_order
from zarr.storage import LocalStore, MemoryStore

import converters as pz
import converters.output as output_module
import converters.write as write_module
from converters.jpegls import JpeglsCodec
from converters.output import Output
from converters.shard import ShardLayout, encode_shard, morton_order, write_shard
from sources import tile, write_rxrx_source

SITES, CHANNELS, SIZE = 2, 6, 64


def make_array(store, dtype: str = "uint8", chunks=(1, 1, CHANNELS, SIZE, SIZE), compressors=None, wells: int = 3,
               separator: str = ".", group: str = "", serializer="auto") -> zarr.Array:
    """An images array as template.create_images makes it: a chunk per site, a shard per well."""
    root = zarr.open_group(store, path=group, mode="a", zarr_format=3)
    return root.create_array(
        "images",
        shape=(wells, SITES, CHANNELS, SIZE, SIZE),
        dtype=dtype,
        chunks=chunks,
        shards=(1, SITES, CHANNELS, SIZE, SIZE),
        serializer=serializer,
        compressors=compressors or [ZstdCodec(level=3), Crc32cCodec()],
        fill_value=0,
        chunk_key_encoding={"name": "default", "separator": separator},
        config={"write_empty_chunks": True},
    )


def well_block(index: int, dtype: str = "uint8", empty_site: bool = False) -> np.ndarray:
    """(site, channel, y, x) of real RxRx1 tiles; optionally a whole site of zeros (all images missing)."""
    block = np.stack([np.stack([tile(c, index * 10 + s, SIZE, np.dtype(dtype)) for c in range(CHANNELS)])
                      for s in range(SITES)])
    if empty_site:
        block[1] = 0
    return block


def shard_file(array: zarr.Array, well: int) -> Path:
    return Path(array.store.root) / array.path / array.metadata.encode_chunk_key((well, 0, 0, 0, 0))


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("empty_site", [False, True])
@pytest.mark.parametrize("codec", ["zstd-3", "platezarr.jpegls"])
def test_shard_bytes_equal_zarr_python_and_read_back_through_plain_zarr(tmp_path: Path, dtype: str, empty_site: bool,
                                                                        codec: str) -> None:
    compact = codec == "platezarr.jpegls"
    array = make_array(LocalStore(tmp_path / "s.zarr"), dtype, serializer=JpeglsCodec() if compact else "auto",
                       compressors=[Crc32cCodec()] if compact else None)
    block = well_block(1, dtype, empty_site)
    array[0] = block  # zarr-python's own path
    layout = ShardLayout.of(array)
    assert layout is not None and layout.codec == codec
    write_shard(layout, (1, 0, 0, 0, 0), block[np.newaxis])
    assert shard_file(array, 1).read_bytes() == shard_file(array, 0).read_bytes()
    fresh = zarr.open_array(tmp_path / "s.zarr", path="images", mode="r")
    np.testing.assert_array_equal(fresh[1], block)
    assert fresh[1].dtype == np.dtype(dtype)
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_big_endian_input_is_stored_little_endian(tmp_path: Path) -> None:
    array = make_array(LocalStore(tmp_path / "s.zarr"), "uint16")
    block = well_block(2, "uint16")
    array[0] = block
    write_shard(ShardLayout.of(array), (1, 0, 0, 0, 0), block.astype(">u2")[np.newaxis])
    assert shard_file(array, 1).read_bytes() == shard_file(array, 0).read_bytes()


def test_slash_separator_and_per_channel_chunks_match_zarr_python(tmp_path: Path) -> None:
    """Several chunks per shard along two axes: the Morton layout must still equal zarr-python's."""
    array = make_array(LocalStore(tmp_path / "s.zarr"), chunks=(1, 1, 1, SIZE // 2, SIZE), separator="/")
    block = well_block(3)
    array[0] = block
    write_shard(ShardLayout.of(array), (1, 0, 0, 0, 0), block[np.newaxis])
    assert shard_file(array, 1).read_bytes() == shard_file(array, 0).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr", path="images", mode="r")[1], block)


@pytest.mark.parametrize("shape", [(1, 2, 1, 1, 1), (1, 2, 6, 1, 1), (3, 5, 2), (4, 4), (1, 1, 1), (2, 3, 4, 2)])
def test_morton_order_is_zarr_pythons(shape: tuple[int, ...]) -> None:
    assert list(morton_order(shape)) == [tuple(int(v) for v in row) for row in _morton_order(shape)]


@pytest.mark.parametrize("where", ["chunk", "index"])
def test_a_flipped_byte_in_a_fast_written_shard_fails_on_read(tmp_path: Path, where: str) -> None:
    array = make_array(LocalStore(tmp_path / "s.zarr"))
    write_shard(ShardLayout.of(array), (0, 0, 0, 0, 0), well_block(4)[np.newaxis])
    path = shard_file(array, 0)
    data = bytearray(path.read_bytes())
    data[200 if where == "chunk" else len(data) - 10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        zarr.open_array(tmp_path / "s.zarr", path="images", mode="r")[0]


def test_shard_index_is_offsets_and_sizes_then_crc32c(tmp_path: Path) -> None:
    """The layout of the sharding spec, checked by hand: chunks, then (offset, nbytes) <u8 pairs, then CRC32C."""
    import google_crc32c

    array = make_array(LocalStore(tmp_path / "s.zarr"))
    data = b"".join(encode_shard(well_block(5)[np.newaxis], ShardLayout.of(array)))
    index_bytes = data[-(SITES * 16 + 4):]
    index = np.frombuffer(index_bytes[:-4], dtype="<u8").reshape(SITES, 2)
    assert int.from_bytes(index_bytes[-4:], "little") == google_crc32c.value(index_bytes[:-4])
    assert index[0, 0] == 0 and index[1, 0] == index[0, 1]
    assert index[1, 0] + index[1, 1] == len(data) - len(index_bytes)


def test_other_codecs_and_stores_are_not_written_directly() -> None:
    assert ShardLayout.of(make_array(MemoryStore())) is None
    assert ShardLayout.of(make_array(MemoryStore(), compressors=[GzipCodec(), Crc32cCodec()])) is None


def test_fallback_writes_through_zarr_python(tmp_path: Path) -> None:
    """A codec the fast path does not encode (gzip) still gets written, by zarr-python."""
    store = LocalStore(tmp_path / "s.zarr")
    make_array(store, compressors=[GzipCodec(), Crc32cCodec()], group="EXP/Plate1")
    output = Output(store, str(tmp_path / "s.zarr"))
    block = well_block(6)
    write_module.write_block(output, "EXP/Plate1", 2, block)
    assert write_module._layout(output, "EXP/Plate1") is None
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr", path="EXP/Plate1/images", mode="r")[2], block)


def test_an_interrupted_write_leaves_the_old_shard_and_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    array = make_array(LocalStore(tmp_path / "s.zarr"))
    layout = ShardLayout.of(array)
    write_shard(layout, (0, 0, 0, 0, 0), well_block(7)[np.newaxis])
    before = shard_file(array, 0).read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_shard(layout, (0, 0, 0, 0, 0), well_block(8)[np.newaxis])
    assert shard_file(array, 0).read_bytes() == before
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_a_whole_conversion_writes_the_same_bytes_as_zarr_python(tmp_path: Path, monkeypatch) -> None:
    """Convert one source twice, fast path on and off: every shard file is byte-identical, pixels exact."""
    plates = {("HUVEC-01", 1): ["B02", "B03", "C02"], ("RPE-01", 2): ["B02", "D05"]}
    written = write_rxrx_source(tmp_path / "src", plates, size=128, skip=frozenset({"RPE-01/Plate2/D05_s2_w6.png"}))
    calls = []
    monkeypatch.setattr(write_module, "write_shard", lambda *args: calls.append(args[1]) or write_shard(*args))
    fast = pz.convert(tmp_path / "src", tmp_path / "fast.zarr", dataset="rxrx1_demo", workers=2)
    assert len(calls) == 5  # every well went through the direct writer
    monkeypatch.setattr(write_module, "_layout", lambda output, group: None)
    plain = pz.convert(tmp_path / "src", tmp_path / "plain.zarr", dataset="rxrx1_demo", workers=2)
    shards = sorted(p.relative_to(fast.out) for p in Path(fast.out).glob("*/*/images/c.*"))
    assert len(shards) == 5
    for rel in shards:
        assert (Path(fast.out) / rel).read_bytes() == (Path(plain.out) / rel).read_bytes(), rel
    assert not list(Path(fast.out).rglob("*.partial"))
    for rel, pixels in written.items():
        experiment, plate, name = rel.split("/")
        well, site, channel = name.removesuffix(".png").split("_")
        ds = xr.open_zarr(fast.out, group=f"{experiment}/{plate}")
        got = ds.images.sel(well=well, site=int(site[1:]), channel=channel).values
        np.testing.assert_array_equal(got, pixels)

