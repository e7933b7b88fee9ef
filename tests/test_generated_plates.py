"""Full generated plates (308 wells x 2 sites x 6 channels, tiles cut from real RxRx1 PNGs; see sources.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import converters as pz
from sources import full_plate_wells, small_rxrx1, write_metadata, write_rxrx_source


@pytest.fixture(scope="module")
def full_plate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], list[dict]]:
    """One full RxRx1 plate of 64x64 tiles in the 2019 layout, converted once for the tests below."""
    root = tmp_path_factory.mktemp("plate")
    # Shuffle the well order in the table so ordering must come from the plate, not the file.
    wells = full_plate_wells()
    rng = np.random.default_rng(1)
    plates = {("HUVEC-07", 3): list(rng.permutation(wells))}
    written = write_rxrx_source(root / "images", plates, split="train")
    rows = write_metadata(root / "metadata.csv", plates)
    out = root / "plate.zarr"
    pz.convert(root / "images", out, small_rxrx1(), root / "metadata.csv", workers=2)
    return out, written, rows


def test_every_pixel_through_xarray(full_plate) -> None:
    out, written, _ = full_plate
    images = xr.open_zarr(out, group="HUVEC-07/Plate3")["images"]
    loaded = images.values  # one read of the whole plate through xarray + dask
    wells = list(xr.open_zarr(out, group="HUVEC-07/Plate3")["well"].values)
    for rel, pixels in written.items():
        name = rel.rsplit("/", 1)[1].removesuffix(".png")
        well, site, channel = name.split("_")
        assert np.array_equal(loaded[wells.index(well), int(site[1:]) - 1, int(channel[1:]) - 1], pixels), rel
    assert len(written) == 308 * 2 * 6


def test_ordering_shapes_chunks_and_shards(full_plate) -> None:
    out, _, _ = full_plate
    ds = xr.open_zarr(out, group="HUVEC-07/Plate3")
    assert ds["images"].dims == ("well", "site", "channel", "y", "x")
    assert ds["images"].shape == (308, 2, 6, 64, 64)
    assert ds["well"].values.tolist() == full_plate_wells()  # row by row, then column
    assert ds["row"].values[:23].tolist() == ["B"] * 22 + ["C"]
    assert ds["column"].values[:3].tolist() == [2, 3, 4]
    assert ds["site"].values.tolist() == [1, 2]
    assert ds["channel"].values.tolist() == ["w1", "w2", "w3", "w4", "w5", "w6"]
    assert ds["images"].data.chunksize == (1, 1, 6, 64, 64)  # Dask chunks = one site
    array = zarr.open_array(out, path="HUVEC-07/Plate3/images", mode="r")
    assert array.chunks == (1, 1, 6, 64, 64) and array.shards == (1, 2, 6, 64, 64)
    # One object per well: 308 shard files, nothing else in the array's folder but its metadata.
    files = sorted(p.name for p in (out / "HUVEC-07" / "Plate3" / "images").iterdir())
    assert len(files) == 309 and files[-1] == "zarr.json"


def test_metadata_coordinates_follow_the_plate_order(full_plate) -> None:
    out, _, rows = full_plate
    ds = xr.open_zarr(out, group="HUVEC-07/Plate3")
    by_site = {(r["well"], r["site"]): r for r in rows}
    site_ids = ds["site_id"].values
    sirna_ids = ds["sirna_id"].values
    for w, well in enumerate(ds["well"].values):
        assert sirna_ids[w] == by_site[(well, 1)]["sirna_id"]
        for s, site in enumerate(ds["site"].values):
            assert site_ids[w, s] == by_site[(well, int(site))]["site_id"]
    assert ds["sirna_id"].dtype == np.int64 and ds["site_id"].dims == ("well", "site")
    assert ds["well_type"].dims == ("well",)


def test_sixteen_bit_png_stays_sixteen_bit(tmp_path: Path) -> None:
    plates = {("HUVEC-01", 1): ["B02", "B03"]}
    written = write_rxrx_source(tmp_path / "images", plates, dtype=np.dtype("uint16"))
    out = tmp_path / "u16.zarr"
    pz.convert(tmp_path / "images", out, small_rxrx1())
    array = zarr.open_array(out, path="HUVEC-01/Plate1/images", mode="r")
    assert array.dtype == np.uint16
    stored = array[...]
    assert stored.max() > 255, "values above 8 bits must survive"
    for rel, pixels in written.items():
        well, site, channel = rel.rsplit("/", 1)[1].removesuffix(".png").split("_")
        assert np.array_equal(stored[["B02", "B03"].index(well), int(site[1:]) - 1, int(channel[1:]) - 1], pixels)


def test_images_without_rows_and_rows_without_images_are_reported(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "images", {("HUVEC-01", 1): ["B02", "B03"]})
    write_metadata(tmp_path / "metadata.csv", {("HUVEC-01", 1): ["B02", "C05"]})
    summary = pz.convert(tmp_path / "images", tmp_path / "o.zarr", small_rxrx1(), tmp_path / "metadata.csv").as_dict()
    assert summary["images_without_metadata"] == {"count": 2, "examples": ["HUVEC-01/Plate1/B03 site 1", "HUVEC-01/Plate1/B03 site 2"]}
    assert summary["metadata_without_images"]["count"] == 2
    ds = xr.open_zarr(tmp_path / "o.zarr", group="HUVEC-01/Plate1")
    assert ds["well"].values.tolist() == ["B02", "B03", "C05"]
    assert not ds["present"].sel(well="C05").values.any()
    assert ds["site_id"].sel(well="B03").values.tolist() == ["", ""]  # blank, not "nan"
    assert np.isnan(ds["sirna_id"].values[1])  # an int column with a gap becomes float with NaN
