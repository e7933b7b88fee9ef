"""The real RxRx1 sample converts pixel-exact, checked through plain zarr and xarray, not our readers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import converters as pz

NAME = re.compile(r"(?P<well>[A-Z]\d\d)_s(?P<site>\d)_w(?P<channel>\d)\.png")


def check_every_pixel(images_dir: Path, out: Path) -> int:
    """Compare every source PNG (decoded by imageio, not our decoder) with the store read by plain zarr."""
    root = zarr.open_group(out, mode="r")
    checked = 0
    pngs = [Path(d, f) for d, _, files in os.walk(images_dir, followlinks=True) for f in files if f.endswith(".png")]
    for png in sorted(pngs):
        experiment, plate = png.parts[-3], png.parts[-2]
        m = NAME.fullmatch(png.name)
        ds = xr.open_zarr(out, group=f"{experiment}/{plate}")
        w = list(ds["well"].values).index(m["well"])
        s = list(ds["site"].values).index(int(m["site"]))
        c = list(ds["channel"].values).index(f"w{m['channel']}")
        expected = iio.imread(png)
        stored = root[f"{experiment}/{plate}/images"][w, s, c]
        assert stored.dtype == expected.dtype == np.uint8
        assert np.array_equal(stored, expected), png
        assert bool(root[f"{experiment}/{plate}/present"][w, s, c])
        checked += 1
    return checked


def test_real_rxrx1_with_official_metadata(rxrx1_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rxrx1.zarr"
    summary = pz.convert(rxrx1_dir / "images", out, metadata=rxrx1_dir / "metadata.csv").as_dict()
    assert check_every_pixel(rxrx1_dir / "images", out) == 100
    assert (summary["experiments"], summary["plates"], summary["wells"], summary["sites"]) == (3, 10, 10, 20)
    # The real site-2 files lack w5/w6: not invented, reported with examples, present=False.
    assert summary["missing_images"]["count"] == 20
    assert "HEPG2-01/Plate1/B02 site 2 w5" in summary["missing_images"]["examples"]
    plate = xr.open_zarr(out, group="HUVEC-01/Plate1")
    assert plate["present"].sel(well="B02", site=2).values.tolist() == [True] * 4 + [False] * 2
    assert not plate["images"].sel(well="B02", site=2, channel="w6").values.any()
    # Every metadata value of the table, through plain xarray.
    table = pd.read_csv(rxrx1_dir / "metadata.csv")
    for row in table.itertuples(index=False):
        ds = xr.open_zarr(out, group=f"{row.experiment}/Plate{row.plate}").sel(well=row.well, site=row.site)
        for column in table.columns:
            value = ds[column].values.item()
            assert value == getattr(row, column), (row.site_id, column, value)
            assert type(value) is type(getattr(row, column)) or isinstance(value, (int, str)), (column, type(value))
    index = xr.open_zarr(out, group="index").to_dataframe().reset_index(drop=True)
    merged = index.merge(table, on=["experiment", "plate", "well", "site"], suffixes=("", "_csv"))
    assert len(merged) == len(table) == len(index)
    for column in ("site_id", "well_id", "cell_type", "dataset", "well_type", "sirna", "sirna_id"):
        assert (merged[column] == merged[f"{column}_csv"]).all(), column


def competition_subset(kaggle: Path, folder: Path, experiments: set[str]) -> None:
    """The real 2019 competition tables, cut to the rows of the sample's experiments."""
    folder.mkdir()
    for name in ("train.csv", "test.csv", "train_controls.csv", "test_controls.csv"):
        table = pd.read_csv(kaggle / name)
        table[table["experiment"].isin(experiments)].to_csv(folder / name, index=False)


def test_real_rxrx1_with_competition_tables(rxrx1_dir: Path, tmp_path: Path) -> None:
    tables = tmp_path / "kaggle"
    competition_subset(rxrx1_dir / "kaggle", tables, {"HUVEC-01", "RPE-01", "HEPG2-01"})
    out = tmp_path / "rxrx1.zarr"
    summary = pz.convert(rxrx1_dir / "images", out, "rxrx1", tables).as_dict()
    assert check_every_pixel(rxrx1_dir / "images", out) == 100
    # Wells are those of the source or the metadata: every plate and well of the tables.
    wells = pd.concat([pd.read_csv(tables / n) for n in ("train.csv", "test.csv", "train_controls.csv", "test_controls.csv")])
    n_plates, n_wells = len(wells[["experiment", "plate"]].drop_duplicates()), len(wells)
    assert (summary["plates"], summary["wells"]) == (n_plates, n_wells) == (12, 12 * 308)
    assert summary["metadata_without_images"]["count"] == n_wells * 2 - 20
    plate = xr.open_zarr(out, group="HUVEC-01/Plate1")
    assert plate.sizes["well"] == 308 and plate["well"].values[:3].tolist() == ["B02", "B03", "B04"]
    b02 = plate.sel(well="B02")
    assert b02["well_type"].values.item() == "negative_control" and b02["sirna_id"].values.item() == 1138
    assert b02["dataset"].values.item() == "train" and b02["cell_type"].values.item() == "HUVEC"
    assert b02["well_id"].values.item() == "HUVEC-01_1_B02" and b02["site_id"].values.tolist() == ["HUVEC-01_1_B02_1", "HUVEC-01_1_B02_2"]
    # Every row of the competition tables lands on its well, sirna (the integer class) as sirna_id.
    train = pd.read_csv(tables / "train.csv")
    for row in train[train["experiment"] == "HUVEC-01"].query("plate == 1").itertuples(index=False):
        well = plate.sel(well=row.well)
        assert well["sirna_id"].values.item() == row.sirna and well["well_type"].values.item() == "treatment"
        assert well["sirna"].values.item() == "", "the competition tables have no siRNA names: blank, not 'nan'"


@pytest.mark.parametrize("layout", ["2019", "2020"])
def test_both_release_layouts(rxrx1_dir: Path, tmp_path: Path, layout: str) -> None:
    """2019 has images/{train,test}/EXP/..., 2020 dropped that level; both give the same store."""
    src = tmp_path / "images"
    for plate_dir in sorted((rxrx1_dir / "images" / "train").glob("*/Plate*"))[:2]:
        rel = plate_dir.relative_to(rxrx1_dir / "images" / "train")
        target = src / ("train" if layout == "2019" else "") / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(plate_dir, target_is_directory=True)
    out = tmp_path / "out.zarr"
    summary = pz.convert(src, out, "rxrx1").as_dict()
    assert summary["plates"] == 2 and summary["images"] == 20
    assert check_every_pixel(src, out) == 20
