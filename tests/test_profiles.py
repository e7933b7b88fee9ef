"""Compression profiles by pixel depth: 16-bit images take Blosc-zstd with bit shuffling under the default
profile, 8-bit ones zstd-3; a 16-bit store an earlier version began with zstd-3 resumes with zstd-3.

Sources are RxRx3-layout tars of 16-bit 64x64 tiles of the real RxRx1 PNGs (tests/sources.py: tile16).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import zarr

import converters as pz
import converters.profiles as profiles
from converters.schema import load_schema
from sources import write_rxrx3_source

PLATES = {("gene-001", 1): ["A02", "A03", "B02"], ("gene-001", 2): ["A02", "B04"]}
SCHEMA = dataclasses.replace(load_schema("rxrx3"), image_shape=(64, 64))


def assert_exact(out: Path, written: dict[str, np.ndarray]) -> None:
    """Every written image through plain zarr, and the store's sites through SiteDataset."""
    for rel, pixels in written.items():
        experiment, plate, name = rel.split("/")
        group = zarr.open_group(out, path=f"{experiment}/Plate{plate}", mode="r")
        well, _, channel = name.removesuffix(".png").split("_")
        w, c = list(group["well"][...]).index(well), list(group["channel"][...]).index(channel)
        np.testing.assert_array_equal(group["images"][w, 0, c], pixels)
    sites = pz.SiteDataset(out)
    for i in range(len(sites)):
        np.testing.assert_array_equal(sites[i][0], pz.open_sites(out)["images"][i].values)


def codecs(out: Path) -> list[str]:
    array = zarr.open_array(out, path="gene-001/Plate1/images", mode="r")
    return [c["name"] for c in array.metadata.to_dict()["codecs"][0]["configuration"]["codecs"]]


def test_16_bit_images_take_blosc_by_default(tmp_path: Path) -> None:
    written = write_rxrx3_source(tmp_path / "tars", PLATES)
    pz.convert(tmp_path / "tars", tmp_path / "o.zarr", SCHEMA, workers=2)
    assert codecs(tmp_path / "o.zarr") == ["bytes", "blosc", "crc32c"]
    assert pz.open_sites(tmp_path / "o.zarr").attrs["codec"] == "blosc-zstd-1-bitshuffle"
    assert_exact(tmp_path / "o.zarr", written)


def test_a_16_bit_store_begun_with_zstd_resumes_with_zstd(tmp_path: Path, monkeypatch) -> None:
    written = write_rxrx3_source(tmp_path / "tars", PLATES, corrupt=frozenset({"gene-001/2/B04_s1_w3.png"}))
    with monkeypatch.context() as old:  # the profile table of an earlier platezarr: zstd-3 for every depth
        old.setattr(profiles, "BY_DEPTH", {})
        with pytest.raises(pz.SourceError, match="B04_s1_w3.png"):
            pz.convert(tmp_path / "tars", tmp_path / "o.zarr", SCHEMA, workers=1)
    assert codecs(tmp_path / "o.zarr") == ["bytes", "zstd", "crc32c"]
    written = write_rxrx3_source(tmp_path / "tars", PLATES)  # the tar downloaded again
    summary = pz.convert(tmp_path / "tars", tmp_path / "o.zarr", SCHEMA, workers=1).as_dict()
    assert summary["resumed_wells"] >= 1
    assert codecs(tmp_path / "o.zarr") == ["bytes", "zstd", "crc32c"]
    assert pz.open_sites(tmp_path / "o.zarr").attrs["codec"] == "zstd-3"
    assert_exact(tmp_path / "o.zarr", written)
