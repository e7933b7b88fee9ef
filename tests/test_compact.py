"""The compact profile (`--compression compact`): JPEG-LS chunks, pixel-exact, found by plain zarr.

Inputs are real: the six channels of a real RxRx1 site (uint8), six real CPJUMP1 fields (uint16),
the real RxRx1 and CPJUMP1 samples converted whole; plus noise, the worst case for any image codec.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec
from zarr.storage import LocalStore, MemoryStore

import converters as pz
from conftest import shared
from converters.errors import StoreError
from converters.jpegls import NAME, JpeglsCodec, decode_planes, encode_planes
from converters.output import Output
from converters.verify import verify
from sources import real_channels, real_u16_channels
from test_convert_rxrx1_real import check_every_pixel
from test_cpjump1 import check_every_pixel as check_every_tiff

NOISE = np.random.default_rng(0)


@pytest.mark.parametrize("array", [
    pytest.param(real_channels()[np.newaxis, np.newaxis], id="real RxRx1 site uint8 (1,1,6,512,512)"),
    pytest.param(real_u16_channels()[:, :512, :384], id="real CPJUMP1 fields uint16 (6,512,384)"),
    pytest.param(NOISE.integers(0, 256, (2, 3, 64, 64), dtype=np.uint8), id="noise uint8"),
    pytest.param(NOISE.integers(0, 65536, (2, 128, 96), dtype=np.uint16), id="noise uint16"),
    pytest.param(np.zeros((1, 1, 6, 32, 32), dtype=np.uint8), id="zeros (a missing site)"),
    pytest.param(np.arange(35, dtype=np.uint16).reshape(7, 5) * 1000, id="2-D, odd sizes"),
    pytest.param(np.full((1, 1), 255, dtype=np.uint8), id="one pixel"),
])
def test_planes_round_trip_exactly(array: np.ndarray) -> None:
    decoded = decode_planes(encode_planes(array), array.shape, array.dtype)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_input_round_trips() -> None:
    array = real_u16_channels()[:2, :64, :64]
    assert encode_planes(array.astype(">u2")) == encode_planes(array)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-3], "bytes|JPEG|jpegls|Jpegls|buffer"),
    (lambda data: data + b"\0", "after its last plane"),
    (lambda data: (5).to_bytes(4, "little") + data[4:], "holds 5 planes, expected 6"),
])
def test_a_damaged_chunk_fails_loudly(damage, message: str) -> None:
    array = real_channels()[:, :64, :64]
    with pytest.raises(Exception, match=message):
        decode_planes(damage(encode_planes(array)), array.shape, array.dtype)


def test_plain_zarr_finds_the_codec_through_the_entry_point() -> None:
    """In a fresh interpreter that imports only zarr: the name resolves to our class, and an array written
    and read with it is exact. A zarr upgrade that changes how codecs are registered fails here."""
    script = """
import json, numpy as np, zarr
from importlib.metadata import entry_points
from zarr.registry import get_codec_class
from zarr.storage import MemoryStore
assert [e.value for e in entry_points(group="zarr.codecs", name="platezarr.jpegls")] == ["converters.jpegls:JpeglsCodec"]
cls = get_codec_class("platezarr.jpegls")
x = (np.arange(6 * 40 * 30) % 251).astype("uint8").reshape(2, 3, 40, 30)
store = MemoryStore()
a = zarr.create_array(store, shape=x.shape, chunks=(1, 3, 40, 30), dtype="uint8",
                      serializer={"name": "platezarr.jpegls"}, compressors=None)
a[:] = x
b = zarr.open_array(store, mode="r")
assert np.array_equal(b[:], x)
print(json.dumps([cls.__module__, cls.__name__, b.metadata.to_dict()["codecs"]]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    module, name, codecs = json.loads(done.stdout.strip().splitlines()[-1])
    assert (module, name) == ("converters.jpegls", "JpeglsCodec")
    assert codecs == [{"name": NAME}]


@pytest.mark.parametrize("dtype", ["float32", "int16", "uint32"])
def test_other_dtypes_are_refused_when_the_array_is_created(dtype: str) -> None:
    with pytest.raises(ValueError, match=f"{NAME} stores uint8 or uint16 images, not {dtype}"):
        zarr.create_array(MemoryStore(), shape=(2, 8, 8), chunks=(1, 8, 8), dtype=dtype,
                          serializer=JpeglsCodec(), compressors=None)


def test_a_flipped_byte_in_a_compact_store_fails_on_read(tmp_path: Path) -> None:
    array = zarr.create_array(LocalStore(tmp_path / "s.zarr"), shape=(1, 6, 64, 64), chunks=(1, 6, 64, 64),
                              dtype="uint8", serializer=JpeglsCodec(), compressors=[Crc32cCodec()])
    array[:] = real_channels()[np.newaxis, :, :64, :64]
    chunk = next(p for p in (tmp_path / "s.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        zarr.open_array(tmp_path / "s.zarr", mode="r")[:]


def test_real_rxrx1_converts_compact_through_the_cli(rxrx1_dir: Path, tmp_path: Path) -> None:
    """Every real PNG equals the compact store through plain zarr and xarray; smaller than the default store."""
    compact, default = tmp_path / "compact.zarr", tmp_path / "default.zarr"
    cli = [sys.executable, "-m", "converters.cli", "convert", str(rxrx1_dir / "images"), str(compact),
           "--dataset", "rxrx1", "--compression", "compact", "--no-progress", "--json"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert check_every_pixel(rxrx1_dir / "images", compact) == 100
    pz.convert(rxrx1_dir / "images", default, "rxrx1")
    assert summary["bytes_out"] < 0.7 * Output.open(default).nbytes()
    attrs = zarr.open_group(compact, mode="r").attrs["platezarr"]
    assert (attrs["compression"], attrs["codec"]) == ("compact", NAME)
    stored = json.loads((compact / "HUVEC-01" / "Plate1" / "images" / "zarr.json").read_text())
    assert stored["codecs"][0]["configuration"]["codecs"] == [{"name": NAME}, {"name": "crc32c"}]
    for a, b in zip(pz.SiteDataset(compact), pz.SiteDataset(default), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_equal(a[1], b[1])  # NaN statistics of absent channels are equal
    plate = xr.open_zarr(compact, group="RPE-01/Plate3")
    np.testing.assert_array_equal(plate.images.values, xr.open_zarr(default, group="RPE-01/Plate3").images.values)
    assert verify(rxrx1_dir / "images", compact).ok


def test_real_cpjump1_fields_convert_compact_as_uint16(tmp_path: Path) -> None:
    fields = shared("cpjump1", "example_images", "DMSO")
    out = tmp_path / "o.zarr"
    pz.convert(fields, out, experiment="2020_11_04_CPJUMP1", plate="BR00117010", compression="compact")
    assert check_every_tiff(fields, out, "2020_11_04_CPJUMP1/BR00117010") == 8


def test_resuming_with_another_compression_is_refused(tmp_path: Path) -> None:
    """A run stopped after its template, then re-run compact: the store says which codec it was started with."""
    src = shared("rxrx1", "images")

    class Stop(Exception):
        pass

    def stop_at_write(event) -> None:
        if event.stage == "write":
            raise Stop

    with pytest.raises(Stop):
        pz.convert(src, tmp_path / "o.zarr", "rxrx1", progress=stop_at_write)
    with pytest.raises(StoreError, match=f"different plan \\(codec: 'zstd-3' before, '{NAME}' now\\)"):
        pz.convert(src, tmp_path / "o.zarr", "rxrx1", compression="compact")


def test_an_unknown_compression_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression must be one of default, compact, not 'tiny'"):
        pz.convert(tmp_path / "nowhere", tmp_path / "o.zarr", compression="tiny")
    done = subprocess.run([sys.executable, "-m", "converters.cli", "convert", str(tmp_path), str(tmp_path / "o.zarr"),
                           "--compression", "tiny"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "'tiny' is not one of 'default', 'compact'" in done.stderr
