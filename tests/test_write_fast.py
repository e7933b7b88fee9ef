"""The shard codec (converters/shard.py) against zarr-python: same bytes, same pixels, same checks.

A shard platezarr writes must be exactly what zarr-python writes for the same block, on a local disk
and on any other store, decode through plain zarr to the same pixels, and fail loudly on a flipped
byte (chunk CRC32C and index CRC32C). The site reader decodes what zarr-python wrote, tiled or not.
Blocks are 64x64 tiles of the real RxRx1 PNGs (tests/sources.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.core.indexing import _morton_order
from zarr.storage import LocalStore, MemoryStore

import converters as pz
import converters.output as output_module
from converters.errors import StoreError
from converters.jpegls import JpeglsCodec
from converters.output import Output
from converters.shard import ShardLayout, morton_order
from converters.sitereader import SiteReader
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


def layout_of(array: zarr.Array) -> ShardLayout:
    return ShardLayout.of(array.metadata.to_dict(), array.path)


def write_shard(array: zarr.Array, well: int, block: np.ndarray) -> None:
    """Write one well's block as platezarr does: encoded here, one object written whole."""
    layout = layout_of(array)
    Output(array.store, "test").write_bytes(f"{array.path}/{layout.key((well, 0, 0, 0, 0))}", layout.encode(block[np.newaxis]))


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("empty_site", [False, True])
@pytest.mark.parametrize("codec", ["zstd-3", "platezarr.jpegls", "blosc-zstd-1-bitshuffle"])
def test_shard_bytes_equal_zarr_python_and_read_back_through_plain_zarr(tmp_path: Path, dtype: str, empty_site: bool,
                                                                        codec: str) -> None:
    compact = codec == "platezarr.jpegls"
    blosc = [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), Crc32cCodec()]
    array = make_array(LocalStore(tmp_path / "s.zarr"), dtype, serializer=JpeglsCodec() if compact else "auto",
                       compressors=[Crc32cCodec()] if compact else blosc if codec.startswith("blosc") else None)
    block = well_block(1, dtype, empty_site)
    array[0] = block  # zarr-python's own path
    assert layout_of(array).profile.codec == codec
    write_shard(array, 1, block)
    assert shard_file(array, 1).read_bytes() == shard_file(array, 0).read_bytes()
    fresh = zarr.open_array(tmp_path / "s.zarr", path="images", mode="r")
    np.testing.assert_array_equal(fresh[1], block)
    assert fresh[1].dtype == np.dtype(dtype)
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_big_endian_input_is_stored_little_endian(tmp_path: Path) -> None:
    array = make_array(LocalStore(tmp_path / "s.zarr"), "uint16")
    block = well_block(2, "uint16")
    array[0] = block
    write_shard(array, 1, block.astype(">u2"))
    assert shard_file(array, 1).read_bytes() == shard_file(array, 0).read_bytes()


def test_slash_separator_and_per_channel_chunks_match_zarr_python(tmp_path: Path) -> None:
    """Several chunks per shard along two axes: the Morton layout must still equal zarr-python's."""
    array = make_array(LocalStore(tmp_path / "s.zarr"), chunks=(1, 1, 1, SIZE // 2, SIZE), separator="/")
    block = well_block(3)
    array[0] = block
    write_shard(array, 1, block)
    assert shard_file(array, 1).read_bytes() == shard_file(array, 0).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr", path="images", mode="r")[1], block)


def test_shards_written_to_another_store_are_zarr_pythons_too() -> None:
    """Off a local disk (a bucket, here a MemoryStore) the shard is one `set` of the same bytes."""
    array = make_array(MemoryStore(), "uint16")
    block = well_block(9, "uint16")
    array[0] = block
    write_shard(array, 1, block)
    stored = {k: zarr.core.sync.sync(array.store.get(f"images/c.{k}.0.0.0.0", zarr.core.buffer.default_buffer_prototype()))
              for k in (0, 1)}
    assert stored[0].to_bytes() == stored[1].to_bytes()


@pytest.mark.parametrize("chunks", [(1, 1, CHANNELS, SIZE, SIZE), (1, 1, 1, SIZE // 2, SIZE // 4)])
def test_the_site_reader_reads_zarr_pythons_shards(tmp_path: Path, chunks: tuple[int, ...]) -> None:
    """Every site and well that zarr-python wrote, whole-site chunks or tiles, read back exactly."""
    array = make_array(LocalStore(tmp_path / "s.zarr"), "uint16", chunks=chunks, group="EXP/Plate1")
    blocks = [well_block(w, "uint16") for w in range(3)]
    for w, block in enumerate(blocks[:2]):
        array[w] = block
    reader = SiteReader(tmp_path / "s.zarr", "EXP/Plate1")
    for w, block in enumerate(blocks[:2]):
        np.testing.assert_array_equal(reader.read_well("EXP/Plate1", w), block)
        for s in range(SITES):
            np.testing.assert_array_equal(reader.read_site("EXP/Plate1", w, s), block[s])
    with pytest.raises(StoreError, match="well EXP/Plate1/C03 has no shard"):
        reader.read_site("EXP/Plate1", 2, 0, "C03")


@pytest.mark.parametrize("shape", [(1, 2, 1, 1, 1), (1, 2, 6, 1, 1), (3, 5, 2), (4, 4), (1, 1, 1), (2, 3, 4, 2)])
def test_morton_order_is_zarr_pythons(shape: tuple[int, ...]) -> None:
    assert list(morton_order(shape)) == [tuple(int(v) for v in row) for row in _morton_order(shape)]


@pytest.mark.parametrize("where", ["chunk", "index"])
def test_a_flipped_byte_in_a_fast_written_shard_fails_on_read(tmp_path: Path, where: str) -> None:
    array = make_array(LocalStore(tmp_path / "s.zarr"))
    write_shard(array, 0, well_block(4))
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
    data = b"".join(layout_of(array).encode(well_block(5)[np.newaxis]))
    index_bytes = data[-(SITES * 16 + 4):]
    index = np.frombuffer(index_bytes[:-4], dtype="<u8").reshape(SITES, 2)
    assert int.from_bytes(index_bytes[-4:], "little") == google_crc32c.value(index_bytes[:-4])
    assert index[0, 0] == 0 and index[1, 0] == index[0, 1]
    assert index[1, 0] + index[1, 1] == len(data) - len(index_bytes)


def test_arrays_platezarr_did_not_write_are_refused_naming_them() -> None:
    for array in (make_array(MemoryStore(), compressors=[GzipCodec(), Crc32cCodec()]),
                  make_array(MemoryStore(), compressors=[ZstdCodec(level=3, checksum=True), Crc32cCodec()])):
        with pytest.raises(StoreError, match="images: not an array of whole-well shards"):
            layout_of(array)


def test_an_interrupted_write_leaves_the_old_shard_and_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    array = make_array(LocalStore(tmp_path / "s.zarr"))
    write_shard(array, 0, well_block(7))
    before = shard_file(array, 0).read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_shard(array, 0, well_block(8))
    assert shard_file(array, 0).read_bytes() == before
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_a_whole_conversion_writes_the_same_bytes_as_zarr_python(tmp_path: Path) -> None:
    """Convert a source, then write each well's pixels again through zarr-python into an array of the same
    metadata: every shard file is byte-identical, and every pixel exact."""
    plates = {("HUVEC-01", 1): ["B02", "B03", "C02"], ("RPE-01", 2): ["B02", "D05"]}
    written = write_rxrx_source(tmp_path / "src", plates, size=128, skip=frozenset({"RPE-01/Plate2/D05_s2_w6.png"}))
    fast = pz.convert(tmp_path / "src", tmp_path / "fast.zarr", dataset="rxrx1_demo", workers=2)
    shards = sorted(p.relative_to(fast.out) for p in Path(fast.out).glob("*/*/images/c.*"))
    assert len(shards) == 5 and not list(Path(fast.out).rglob("*.partial"))
    for group in ("HUVEC-01/Plate1", "RPE-01/Plate2"):
        ours = zarr.open_array(fast.out, path=f"{group}/images", mode="r")
        theirs = zarr.create_array(LocalStore(tmp_path / "plain.zarr"), name=f"{group}/images", shape=ours.shape,
                                   dtype=ours.dtype, chunks=ours.chunks, shards=ours.shards, fill_value=0,
                                   serializer=ours.serializer, compressors=ours.compressors,
                                   chunk_key_encoding={"name": "default", "separator": "."},
                                   dimension_names=ours.metadata.dimension_names, attributes=dict(ours.attrs),
                                   config={"write_empty_chunks": True})
        theirs[...] = ours[...]
    for rel in shards:
        assert (Path(fast.out) / rel).read_bytes() == (tmp_path / "plain.zarr" / rel).read_bytes(), rel
    for rel, pixels in written.items():
        experiment, plate, name = rel.split("/")
        well, site, channel = name.removesuffix(".png").split("_")
        ds = xr.open_zarr(fast.out, group=f"{experiment}/{plate}")
        got = ds.images.sel(well=well, site=int(site[1:]), channel=channel).values
        np.testing.assert_array_equal(got, pixels)
