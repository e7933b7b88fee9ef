"""`--embeddings`: Recursion's per-site CSV (RxRx1 layout: site_id + feature_0..127) and RxRx3's per-well parquet
files (well_id + 128 features, one file per plate) attached to each plate, read back with plain xarray.

Sources are small generated plates (tiles of the real RxRx1 PNGs and CPJUMP1 TIFFs, tests/sources.py);
the embedding values are random float32, written as their shortest decimal form so they parse back exactly.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr

import converters as pz
from converters.convert import plan_only
from converters.options import Options
from converters.schema import load_schema, schema_dir
from sources import small_rxrx1, write_metadata, write_rxrx3_source, write_rxrx_source, write_site_embeddings

PLATES = {("HUVEC-01", 1): ["B02", "B03"], ("HUVEC-01", 2): ["B02"]}


@pytest.fixture(scope="module")
def rxrx1_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emb")
    write_rxrx_source(root / "images", PLATES)
    write_metadata(root / "metadata.csv", PLATES)
    return root


def test_site_embeddings_attach_to_each_plate(rxrx1_source: Path, tmp_path: Path) -> None:
    root = rxrx1_source
    sites = [f"HUVEC-01_{p}_{w}_{s}" for (_, p), wells in PLATES.items() for w in wells for s in (1, 2)]
    sites.remove("HUVEC-01_1_B03_2")  # a site with no row
    vectors = write_site_embeddings(tmp_path / "embeddings.csv", sites + ["HUVEC-02_1_B02_1"], 128)  # a row with no site
    summary = pz.convert(root / "images", tmp_path / "o.zarr", small_rxrx1(), root / "metadata.csv",
                         embeddings=tmp_path / "embeddings.csv").as_dict()
    for (experiment, plate), wells in PLATES.items():
        ds = xr.open_zarr(tmp_path / "o.zarr", group=f"{experiment}/Plate{plate}")
        embeddings = ds["embeddings"]
        assert embeddings.dims == ("well", "site", "feature") and embeddings.dtype == np.float32
        assert set(ds.data_vars) == {"images", "present", "pixel_stats", "plate_stats", "plate_histogram",
                                     "embeddings"}  # the metadata columns stay coordinates
        assert {"cell_type", "well_type", "sirna", "channel_name"} <= set(ds.coords)
        assert ds["feature"].values.tolist() == [f"feature_{i}" for i in range(128)]
        for well in wells:
            for site in (1, 2):
                stored = embeddings.sel(well=well, site=site).values
                expected = vectors.get(f"{experiment}_{plate}_{well}_{site}")
                assert np.isnan(stored).all() if expected is None else np.array_equal(stored, expected)
    gaps = {"embeddings_without_sites": {"count": 1, "examples": ["HUVEC-02_1_B02_1"]},
            "sites_without_embeddings": {"count": 1, "examples": ["HUVEC-01/Plate1/B03 site 2"]}}
    assert {k: summary[k] for k in gaps} == gaps
    attrs = zarr.open_group(tmp_path / "o.zarr", mode="r").attrs.asdict()["platezarr"]
    assert attrs["embeddings"] == {"location": str(tmp_path / "embeddings.csv"), "level": "site", "features": 128} | gaps
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(attrs, json.loads((schema_dir() / "store-attributes.schema.json").read_text()))


def test_well_embeddings_from_a_folder_of_parquet_files(tmp_path: Path) -> None:
    plates = {("gene-001", 1): ["A01", "AF48"], ("gene-001", 2): ["B02"]}
    write_rxrx3_source(tmp_path / "images", plates, size=32)
    rng = np.random.default_rng(3)
    vectors = {}
    for (experiment, plate), wells in {("gene-001", 1): ["A01", "AF48", "C03"], ("gene-001", 2): []}.items():
        ids = [f"{experiment}_{plate}_{w}" for w in wells]  # C03 has no images; plate 2's B02 has no row
        values = rng.standard_normal((len(ids), 128)).astype(np.float32)
        vectors |= dict(zip(ids, values))
        columns = {"well_id": pa.array(ids, pa.string())} | {str(i): pa.array(values[:, i]) for i in range(128)}
        (tmp_path / "emb" / experiment / f"Plate{plate}").mkdir(parents=True)
        pq.write_table(pa.table(columns), tmp_path / "emb" / experiment / f"Plate{plate}" / "embeddings.parquet")
    schema = dataclasses.replace(load_schema("rxrx3"), image_shape=(32, 32))
    summary = pz.convert(tmp_path / "images", tmp_path / "o.zarr", schema, embeddings=tmp_path / "emb").as_dict()
    plate1 = xr.open_zarr(tmp_path / "o.zarr", group="gene-001/Plate1")
    assert plate1["embeddings"].dims == ("well", "feature") and plate1.sizes["feature"] == 128
    for well in ("A01", "AF48"):
        assert np.array_equal(plate1["embeddings"].sel(well=well).values, vectors[f"gene-001_1_{well}"])
    assert np.isnan(xr.open_zarr(tmp_path / "o.zarr", group="gene-001/Plate2")["embeddings"].values).all()
    assert summary["embeddings_without_sites"] == {"count": 1, "examples": ["gene-001_1_C03"]}
    assert summary["wells_without_embeddings"] == {"count": 1, "examples": ["gene-001/Plate2/B02"]}


def test_dry_run_reports_the_embeddings_gaps(rxrx1_source: Path, tmp_path: Path) -> None:
    write_site_embeddings(tmp_path / "e.csv", ["HUVEC-01_1_B02_1", "HUVEC-09_1_B02_1"], 8)
    result = subprocess.run(
        [sys.executable, "-m", "converters.cli", "convert", str(rxrx1_source / "images"), str(tmp_path / "o.zarr"),
         "--dataset", "rxrx1_demo", "--embeddings", str(tmp_path / "e.csv"), "--dry-run"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "embeddings rows with no site (or well) in the store: 1, e.g. HUVEC-09_1_B02_1" in result.stdout
    assert "sites with no embeddings row: 5, e.g. HUVEC-01/Plate1/B02 site 2" in result.stdout
    assert not (tmp_path / "o.zarr").exists()


def test_resume_refuses_other_embeddings(rxrx1_source: Path, tmp_path: Path) -> None:
    src = tmp_path / "images"
    write_rxrx_source(src, PLATES)
    (src / "HUVEC-01" / "Plate2" / "B02_s2_w6.png").write_bytes(b"not a png")  # stops the first run
    sites = [f"HUVEC-01_{p}_{w}_{s}" for (_, p), wells in PLATES.items() for w in wells for s in (1, 2)]
    write_site_embeddings(tmp_path / "a.csv", sites, 16, seed=1)
    out = tmp_path / "o.zarr"
    with pytest.raises(pz.SourceError, match="not a PNG"):
        pz.convert(src, out, small_rxrx1(), embeddings=tmp_path / "a.csv", workers=1)
    write_site_embeddings(tmp_path / "b.csv", sites, 16, seed=2)
    with pytest.raises(pz.StoreError, match="different plan .*embeddings"):
        pz.convert(src, out, small_rxrx1(), embeddings=tmp_path / "b.csv")
    write_site_embeddings(tmp_path / "a.csv", sites, 16, seed=2)  # same place, other values
    with pytest.raises(pz.StoreError, match="different plan .*embeddings changed"):
        pz.convert(src, out, small_rxrx1(), embeddings=tmp_path / "a.csv")


@pytest.mark.parametrize("text, message", [
    ("site_id,feature_0\nHUVEC-01_1_B02_1,0.5\nHUVEC-01_1_B02,0.1\n", r"e.csv:3: site_id 'HUVEC-01_1_B02' is not"),
    ("site_id,feature_0\nHUVEC-01_1_B02_1,high\n", r"e.csv: not a readable embeddings table"),
    ("site,feature_0\n1,0.5\n", r"e.csv: no site_id or well_id column"),
    ("site_id,feature_0\nHUVEC-01_1_B02_1,1\nHUVEC-01_1_B2_1,2\n", r"e.csv:2 and .*e.csv:3: two rows for site_id"),
])
def test_bad_embeddings_tables_name_the_file_and_row(rxrx1_source: Path, tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "e.csv").write_text(text)
    with pytest.raises(pz.MetadataError, match=message):
        plan_only(rxrx1_source / "images", Options(dataset=small_rxrx1(), embeddings=tmp_path / "e.csv"))
