"""RxRx2, RxRx19a and RxRx19b on generated sources in their exact layouts, and detection of every RxRx layout.

Each source has the real folder layout (`HUVEC-1/Plate1/AA02_s2_w3.png`: unpadded experiment names,
1536-well wells with two-letter rows), channels and sites, with pixels tiled from the real RxRx1 PNGs
(tests/sources.py `tile`), a metadata table with the dataset's real columns and value conventions
(blanks, SMILES with commas and pipes, float concentrations), and an embeddings table as wide as the
real one. The conversions use 64x64 images (each schema's image_shape replaced) to stay fast; the
detection tests write real-size images (1024², 2048²), since the image size is what tells them apart
(RxRx3's detection, by its tars at 2048², is in test_rxrx3_tar.py). Pixels and metadata are compared through plain xarray, not platezarr's readers.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import converters as pz
from converters.detect import detect_dataset
from converters.schema import load_schema, parse_schema
from converters.source import Listing, LocalSource
from sources import write_csv, write_rxrx_source, write_site_embeddings

SIZE = 64
SMILES = "CC(C)C[C@H](NC(=O)[C@@H](Cc1ccccc1)NC(=O)c1cnccn1)B(O)O |r,c:12,14,t:10|"  # commas and pipes


def rxrx2_well(experiment: str, plate: int, well: str, i: int) -> dict:
    treatment = [("Sonic-Hedgehog", "0.1"), ("IL-1beta", "0.0001"), (None, None)][i % 3]  # blank: untreated
    return {"cell_type": "HUVEC", "treatment": treatment[0], "treatment_conc": treatment[1]}


def rxrx19a_well(experiment: str, plate: int, well: str, i: int) -> dict:
    condition = ["Active SARS-CoV-2", "Mock", "UV Inactivated SARS-CoV-2"][i % 3]
    compound = [("Bortezomib", "0.25", SMILES), (None, None, None), ("Remdesivir (GS-5734)", "10.0", "CCC(CC)COC(=O)")][i % 3]
    return {"cell_type": experiment.split("-")[0], "disease_condition": condition, "treatment": compound[0],
            "treatment_conc": compound[1], "SMILES": compound[2]}


def rxrx19b_well(experiment: str, plate: int, well: str, i: int) -> dict:
    condition = ["healthy", "storm-severe", None][i % 3]  # blank: no cytokines
    compound = [("Bortezomib", "0.25", SMILES), (None, None, None)][i % 2]
    return {"cell_type": "HUVEC", "disease_condition": condition, "treatment": compound[0],
            "treatment_conc": compound[1], "SMILES": compound[2]}


# dataset: (plates and wells in plate order, channels, sites, per-well metadata, embedding width)
DATASETS = {
    "rxrx2": ({("HUVEC-1", 1): ["B03", "AA02", "AF48"], ("HUVEC-2", 12): ["AA03"]}, 6, (1, 2, 3, 4), rxrx2_well, 1024),
    "rxrx19a": ({("HRCE-1", 1): ["C10", "AA02", "AE47"], ("VERO-2", 3): ["A01", "AF48"]}, 5, (1, 2, 3, 4), rxrx19a_well, 1024),
    "rxrx19b": ({("HUVEC-1", 1): ["AA02", "AB13", "AF48"], ("HUVEC-2", 2): ["B02"]}, 6, (1,), rxrx19b_well, 128),
}


def metadata_rows(plates: dict, sites: tuple[int, ...], well_values) -> list[dict]:
    """The dataset's metadata.csv rows: site_id, well_id, cell_type, experiment, plate, well, site, then its own columns."""
    rows = []
    for (experiment, plate), wells in plates.items():
        for i, well in enumerate(wells):
            values = well_values(experiment, plate, well, i)
            cell_type = values.pop("cell_type")
            for site in sites:
                rows.append({"site_id": f"{experiment}_{plate}_{well}_{site}", "well_id": f"{experiment}_{plate}_{well}",
                             "cell_type": cell_type, "experiment": experiment, "plate": plate, "well": well,
                             "site": site, **values})
    return rows


@pytest.mark.parametrize("name", list(DATASETS))
def test_dataset_every_pixel_value_and_embedding(name: str, tmp_path: Path) -> None:
    plates, channels, sites, well_values, width = DATASETS[name]
    (experiment, plate), wells = next(iter(plates.items()))
    gone = f"{experiment}/Plate{plate}/{wells[1]}_s{sites[-1]}_w2.png"  # one missing image
    written = write_rxrx_source(tmp_path / "images", plates, sites=sites, channels=channels, size=SIZE, skip=frozenset({gone}))
    rows = write_csv(tmp_path / "metadata.csv", metadata_rows(plates, sites, well_values))
    vectors = write_site_embeddings(tmp_path / "embeddings.csv", [r["site_id"] for r in rows[1:]], width, names="{}")
    schema = dataclasses.replace(load_schema(name), image_shape=(SIZE, SIZE))
    summary = pz.convert(tmp_path / "images", tmp_path / "o.zarr", schema, tmp_path / "metadata.csv",
                         embeddings=tmp_path / "embeddings.csv").as_dict()
    assert summary["missing_images"] == {"count": 1, "examples": [f"{experiment}/Plate{plate}/{wells[1]} site {sites[-1]} w2"]}
    assert summary["sites_without_embeddings"] == {"count": 1, "examples": [f"{experiment}/Plate{plate}/{wells[0]} site {sites[0]}"]}
    assert summary["embeddings_without_sites"]["count"] == 0
    columns = {c.name: c for c in load_schema(name).columns}
    for (experiment, plate), wells in plates.items():
        ds = xr.open_zarr(tmp_path / "o.zarr", group=f"{experiment}/Plate{plate}")
        assert ds["well"].values.tolist() == wells and ds["site"].values.tolist() == list(sites)
        assert ds["channel"].values.tolist() == [f"w{c + 1}" for c in range(channels)]
        assert ds["images"].dtype == np.uint8 and ds["embeddings"].shape == (len(wells), len(sites), width)
        images, present, embeddings = ds["images"].values, ds["present"].values, ds["embeddings"].values
        for w, well in enumerate(wells):
            for s, site in enumerate(sites):
                for c in range(channels):
                    pixels = written.get(f"{experiment}/Plate{plate}/{well}_s{site}_w{c + 1}.png")
                    assert present[w, s, c] == (pixels is not None)
                    assert np.array_equal(images[w, s, c], pixels if pixels is not None else np.zeros((SIZE, SIZE), np.uint8))
                expected = vectors.get(f"{experiment}_{plate}_{well}_{site}")
                assert np.isnan(embeddings[w, s]).all() if expected is None else np.array_equal(embeddings[w, s], expected)
        for row in (r for r in rows if (r["experiment"], r["plate"]) == (experiment, plate)):
            here = ds.sel(well=row["well"], site=row["site"])
            for column, value in row.items():
                if column in ("experiment", "plate", "well", "site"):
                    continue
                stored = here[column].values.item()
                assert here[column].attrs["description"] == columns[column].description
                if columns[column].type == "float":
                    assert np.isnan(stored) if value is None else stored == float(value), (column, stored, value)
                else:
                    assert stored == ("" if value is None else value), (column, stored, value)
    attrs = zarr.open_group(tmp_path / "o.zarr", mode="r").attrs["platezarr"]
    assert attrs["dataset"] == name and [c["id"] for c in attrs["channels"]] == [f"w{c + 1}" for c in range(channels)]
    assert attrs["pixel_size_um"] == load_schema(name).pixel_size_um


def test_treatment_conc_is_float_and_smiles_intact(tmp_path: Path) -> None:
    plates, channels, sites, well_values, _ = DATASETS["rxrx19a"]
    write_rxrx_source(tmp_path / "images", plates, sites=sites, channels=channels, size=SIZE)
    write_csv(tmp_path / "metadata.csv", metadata_rows(plates, sites, well_values))
    schema = dataclasses.replace(load_schema("rxrx19a"), image_shape=(SIZE, SIZE))
    pz.convert(tmp_path / "images", tmp_path / "o.zarr", schema, tmp_path / "metadata.csv")
    ds = xr.open_zarr(tmp_path / "o.zarr", group="HRCE-1/Plate1")
    assert ds["treatment_conc"].dtype == np.float64 and ds["treatment_conc"].dims == ("well",)
    assert ds["SMILES"].sel(well="C10").values.item() == SMILES and ds["SMILES"].sel(well="AA02").values.item() == ""
    assert np.isnan(ds["treatment_conc"].sel(well="AA02").values.item())
    assert ds["disease_condition"].values.tolist() == ["Active SARS-CoV-2", "Mock", "UV Inactivated SARS-CoV-2"]
    assert "nan" not in ds["treatment"].values.tolist()


# Detection: real-size images (one well each), so the size read from a header is the real one.
REAL = {
    "rxrx1": ("HUVEC-01", 512, 6, (1, 2)),
    "rxrx2": ("HUVEC-1", 1024, 6, (1, 2, 3, 4)),
    "rxrx19a": ("HRCE-1", 1024, 5, (1, 2, 3, 4)),
    "rxrx19b": ("HUVEC-1", 2048, 6, (1,)),
}


@pytest.mark.parametrize("name", list(REAL))
def test_each_png_layout_is_detected(name: str, tmp_path: Path) -> None:
    experiment, size, channels, sites = REAL[name]
    write_rxrx_source(tmp_path, {(experiment, 1): ["AA02"]}, sites=sites, channels=channels, size=size)
    source = LocalSource.open(tmp_path)
    assert detect_dataset(source, Listing.of(source.walk())).name == name


def test_an_ambiguous_folder_lists_the_candidates(tmp_path: Path) -> None:
    # 1024x1024 images of channels w1-w3 and sites 1-2 only: RxRx2 and RxRx19a both fit, neither wholly.
    write_rxrx_source(tmp_path, {("HUVEC-1", 1): ["AA02"]}, sites=(1, 2), channels=3, size=1024)
    source = LocalSource.open(tmp_path)
    with pytest.raises(pz.SourceError) as error:
        detect_dataset(source, Listing.of(source.walk()))
    message = str(error.value)
    assert "fit several datasets" in message and "pass --dataset" in message
    assert "rxrx2: 1024x1024, channels w1, w2, w3, w4, w5, w6, sites 1-4" in message
    assert "rxrx19a: 1024x1024, channels w1, w2, w3, w4, w5, sites 1-4" in message
    assert "found 1024x1024 images of channels w1, w2, w3 and sites 1, 2" in message


def test_images_that_fit_no_schema_say_why(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path, {("HUVEC-1", 1): ["B02"]}, sites=(1,), channels=6, size=300)
    source = LocalSource.open(tmp_path)
    with pytest.raises(pz.SourceError, match=r"rxrx2: images are 1024x1024, found 300x300.*pass --dataset"):
        detect_dataset(source, Listing.of(source.walk()))


def test_schemas_follow_the_readmes() -> None:
    for name, columns in {
        "rxrx2": ["site_id", "well_id", "cell_type", "experiment", "plate", "well", "site", "treatment", "treatment_conc"],
        "rxrx19a": ["site_id", "well_id", "cell_type", "experiment", "plate", "well", "site", "disease_condition",
                    "treatment", "treatment_conc", "SMILES"],
        "rxrx19b": ["site_id", "well_id", "cell_type", "experiment", "plate", "well", "site", "disease_condition",
                    "treatment", "treatment_conc", "SMILES"],
        "rxrx3": ["well_id", "experiment_name", "plate", "address", "gene", "treatment", "SMILES", "concentration",
                  "perturbation_type", "cell_type"],
    }.items():
        schema = load_schema(name)
        assert [c.name for c in schema.columns] == columns and all(c.description for c in schema.columns)
        assert {c.name: c.type for c in schema.columns}.get("treatment_conc", "float") == "float"
    assert load_schema("rxrx3").keys == {"experiment": "experiment_name", "plate": "plate", "well": "address"}
    assert load_schema("rxrx19b").path_pattern == load_schema("rxrx19a").path_pattern  # extends rxrx19a


def test_a_tars_schema_needs_a_tar_pattern() -> None:
    raw = tomllib.loads((Path(__file__).parents[1] / "schemas" / "rxrx3.toml").read_text())
    del raw["tar_pattern"]
    with pytest.raises(pz.SchemaError, match="missing required key 'tar_pattern'"):
        parse_schema(raw, "rxrx3.toml")
    raw["tar_pattern"] = r"(?P<experiment>[^/]+)\.tar"
    with pytest.raises(pz.SchemaError, match=r"tar_pattern lacks the named groups \['plate'\]"):
        parse_schema(raw, "rxrx3.toml")
