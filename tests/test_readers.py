"""open_plate, open_store, open_sites: lazy, metadata-selectable, and refusing unfinished stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import converters as pz
from converters.demo_data import write_demo_dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    images, metadata = write_demo_dataset(root / "source")
    pz.convert(images, root / "demo.zarr", metadata=metadata)
    return root / "demo.zarr", metadata


def test_open_sites_is_one_lazy_dataset_over_all_plates(demo) -> None:
    out, metadata = demo
    ds = pz.open_sites(out)
    table = pd.read_csv(metadata)
    assert ds.sizes["sample"] == len(table) == 32
    assert ds["images"].dims == ("sample", "channel", "y", "x")
    assert ds["images"].data.chunksize == (1, 6, 128, 128)
    assert ds["site_id"].values.tolist() == table["site_id"].tolist()
    plate = pz.open_plate(out, "RPE-01", "Plate2")
    i = ds["site_id"].values.tolist().index("RPE-01_2_C03_2")
    assert np.array_equal(ds["images"][i].values, plate["images"].sel(well="C03", site=2).values)


def test_select_by_metadata_and_group(demo) -> None:
    out, metadata = demo
    ds = pz.open_sites(out)
    controls = ds.where(ds["well_type"] == "negative_control", drop=True)
    assert set(controls["well"].values.tolist()) == {"B02"} and controls.sizes["sample"] == 8
    means = ds["images"].groupby("sirna_id").mean().compute()
    assert len(means["sirna_id"]) == pd.read_csv(metadata)["sirna_id"].nunique()


def test_open_plate_by_number_or_name(demo) -> None:
    out, _ = demo
    by_name = pz.open_plate(out, "HUVEC-01", "Plate1")
    by_number = pz.open_plate(out, "HUVEC-01", 1)
    assert by_name.identical(by_number)
    with pytest.raises(pz.StoreError, match="no plate HUVEC-01/Plate9"):
        pz.open_plate(out, "HUVEC-01", 9)


def test_open_store_is_a_datatree(demo) -> None:
    tree = pz.open_store(demo[0])
    assert tree["HUVEC-01/Plate2"]["images"].shape == (4, 2, 6, 128, 128)


def test_an_unfinished_store_is_refused_with_a_way_out(demo, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "unfinished.zarr"
    shutil.copytree(demo[0], copy)
    meta = json.loads((copy / "zarr.json").read_text())
    meta["attributes"] = {"platezarr_conversion": {"started": "now"}}
    meta.pop("consolidated_metadata", None)
    (copy / "zarr.json").write_text(json.dumps(meta))
    for opener in (pz.open_sites, pz.open_store):
        with pytest.raises(pz.StoreError, match="did not finish.*platezarr convert"):
            opener(copy)
    with pytest.raises(pz.StoreError, match="no Zarr store"):
        pz.open_sites(tmp_path / "nothing.zarr")


def test_site_dataset_locally(demo) -> None:
    out, metadata = demo
    table = pd.read_csv(metadata)
    everything = pz.SiteDataset(out)
    assert len(everything) == len(table)
    sites = pz.open_sites(out)
    for i in range(len(everything)):
        pixels, meta = everything[i]
        j = sites["site_id"].values.tolist().index(meta["site_id"])
        assert np.array_equal(pixels, sites["images"][j].values)
        assert isinstance(meta["sirna_id"], int) and isinstance(meta["well_type"], str)
    query = pz.SiteDataset(out, where="well_type == 'treatment' and site == 2", channels=["Hoechst", "w6"])
    assert len(query) == len(table.query("well_type == 'treatment' and site == 2"))
    assert query[0][0].shape == (2, 128, 128)
    with pytest.raises(pz.PlatezarrError, match="unknown channels"):
        pz.SiteDataset(out, channels=["w9"])
    with pytest.raises(pz.PlatezarrError, match="no metadata column"):
        pz.SiteDataset(out, where={"colour": "blue"})


def test_site_dataset_refuses_corrupted_bytes(demo, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(demo[0], copy)
    shard = copy / "HUVEC-01" / "Plate1" / "images" / "c.0.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF  # inside the first site's chunk
    shard.write_bytes(bytes(data))
    ds = pz.SiteDataset(copy, where={"well": "B02", "experiment": "HUVEC-01", "plate": 1})
    with pytest.raises(pz.StoreError, match="checksum mismatch"):
        for i in range(len(ds)):
            ds[i]
