"""No state outlives the conversion that made it: several conversions into one path, in one process (a
notebook) or on one long-lived dask.distributed worker, each read back exactly through plain zarr.

A store converted before the seams refactor and after it, from the same input, holds byte-identical image
and present arrays: the digests below were taken of stores written by the code of commit 6500806 (this
file's `store_digest`, over the demo dataset and a generated RxRx3 tar source). The whole stores were
byte-identical (but for the creation time) until pixel statistics were added.

Sources are tiles of the real RxRx1 PNGs (tests/sources.py) at two sizes, as 8-bit files and as 16-bit
RxRx3 tars, so that compression, chunk shape, dtype and dataset all change between conversions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

import converters as pz
import converters.profiles as profiles
from converters.demo_data import write_demo_dataset
from converters.schema import load_schema
from sources import write_rxrx3_source, write_rxrx_source

PLATES = {("HUVEC-01", 1): ["B02", "B03"], ("RPE-01", 2): ["C04"]}
TAR_PLATES = {("gene-001", 1): ["A02", "A03", "B02"], ("gene-001", 2): ["A02"]}
BEFORE = {  # store_digest of stores written by commit 6500806, before the refactor
    "default": "62b797921d5e4d96a2fbc380fb1241f5a040e4f516128ebcb74ce719e013b364",
    "compact": "4f388a8276c6d471770e4981e13fe8c793fb57eb05774da01dd654c24aeb86e0",
    "tars": "646b2e30999e33bae046e5ecfe8e54e8e3cb4172ffbca7bb2500941dbd2c1832",
}


def store_digest(root: Path) -> str:
    """Every file of every plate's `images` and `present` arrays (their zarr.json and shards), by path and bytes:
    what the write path produces. Coordinates, the index and attributes gained pixel statistics later (issue 13)."""
    digest = hashlib.sha256()
    files = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[2:3] in (("images",), ("present",))]
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def assert_exact(out: Path, written: dict[str, np.ndarray]) -> None:
    """Every written image, through plain zarr, at its well, site and channel."""
    for rel, pixels in written.items():
        experiment, plate, name = rel.split("/")
        well, site, channel = name.removesuffix(".png").split("_")
        group = zarr.open_group(out, path=f"{experiment}/{plate}", mode="r")
        w = list(group["well"][...]).index(well)
        s = list(group["site"][...]).index(int(site[1:]))
        c = list(group["channel"][...]).index(channel)
        np.testing.assert_array_equal(group["images"][w, s, c], pixels)
        assert group["present"][w, s, c]


@pytest.mark.parametrize("compression", ["default", "compact"])
def test_the_demo_store_is_byte_identical_to_the_one_before_the_refactor(tmp_path: Path, compression: str) -> None:
    images, metadata = write_demo_dataset(tmp_path / "src")
    pz.convert(images, tmp_path / "o.zarr", "rxrx1_demo", metadata, compression=compression, workers=1)
    assert store_digest(tmp_path / "o.zarr") == BEFORE[compression]


def test_a_tar_store_is_byte_identical_to_the_one_before_the_refactor(tmp_path: Path, monkeypatch) -> None:
    """16-bit images: with the profile table of that commit (zstd-3 for every depth; Blosc came later for 16 bits)."""
    monkeypatch.setattr(profiles, "BY_DEPTH", {})
    write_rxrx3_source(tmp_path / "tars", TAR_PLATES, skip=frozenset({"gene-001/1/A03_s1_w4.png"}), shuffle=True)
    schema = dataclasses.replace(load_schema("rxrx3"), image_shape=(64, 64))
    pz.convert(tmp_path / "tars", tmp_path / "tars.zarr", schema, workers=1)
    assert store_digest(tmp_path / "tars.zarr") == BEFORE["tars"]


def test_one_process_overwrites_with_other_compression_chunks_dtype_and_dataset(tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    big = write_rxrx_source(tmp_path / "big", PLATES, size=128)
    small = write_rxrx_source(tmp_path / "small", PLATES, size=64)
    write_rxrx3_source(tmp_path / "tars", TAR_PLATES)
    rxrx3 = dataclasses.replace(load_schema("rxrx3"), image_shape=(64, 64))
    small_rxrx1 = dataclasses.replace(load_schema("rxrx1_demo"), image_shape=(64, 64))
    runs = [
        (tmp_path / "big", "rxrx1_demo", "default", big),
        (tmp_path / "big", "rxrx1_demo", "compact", big),  # another codec
        (tmp_path / "small", small_rxrx1, "compact", small),  # another chunk shape
        (tmp_path / "tars", rxrx3, "default", None),  # another dataset and dtype
        (tmp_path / "big", "rxrx1_demo", "default", big),
    ]
    for src, dataset, compression, written in runs:
        pz.convert(src, out, dataset, compression=compression, overwrite=out.exists(), workers=2)
        if written is None:
            ds = pz.open_sites(out)
            assert ds["images"].dtype == np.uint16 and len(ds["sample"]) == 4
            np.testing.assert_array_equal(pz.SiteDataset(out)[0][0], ds["images"][0].values)
        else:
            assert_exact(out, written)
            np.testing.assert_array_equal(pz.SiteDataset(out)[0][0], pz.open_sites(out)["images"][0].values)


def test_two_conversions_on_one_long_lived_worker(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "o.zarr"
    written = write_rxrx_source(tmp_path / "src", PLATES, size=128)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        for compression in ("default", "compact", "default"):
            pz.convert(tmp_path / "src", out, "rxrx1_demo", compression=compression, overwrite=out.exists(),
                       scheduler=cluster.scheduler_address)
            assert zarr.open_group(out, mode="r").attrs["platezarr"]["compression"] == compression
            assert_exact(out, written)


def test_metadata_columns_stay_coordinates_beside_the_statistics(tmp_path: Path) -> None:
    """SPEC: every metadata column is a coordinate of its plate, through plain xarray; statistics are variables."""
    import xarray as xr

    images, metadata = write_demo_dataset(tmp_path / "src")
    pz.convert(images, tmp_path / "o.zarr", "rxrx1_demo", metadata, workers=1)
    ds = xr.open_zarr(tmp_path / "o.zarr", group="HUVEC-01/Plate1")
    assert {"well_type", "sirna", "sirna_id", "cell_type", "row", "column"} <= set(ds.coords)
    assert {"images", "present", "pixel_stats"} <= set(ds.data_vars) and "well_type" not in ds.data_vars
