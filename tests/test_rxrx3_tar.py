"""RxRx3: one tar per experiment plate of 16-bit PNGs, read in place (streamed, never extracted), locally and from S3.

The tars are generated in RxRx3's layout: members `AA02_s1_w3.png` (site 1, w1..w6) whose pixels are
tiles cut from the real CPJUMP1 16-bit TIFFs (tests/sources.py `tile16`), packed well by well, one tar
per plate, under each of the tar names this converter supports. Images are 64x64 (the schema's
image_shape replaced) except in the one test at RxRx3's real 2048x2048. The metadata table has
RxRx3's real columns and the README's example values (blank SMILES, a SMILES with commas and pipes).
Pixels and metadata are compared through plain xarray and zarr.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import converters as pz
import converters.tarstream
from converters.convert import plan_only
from converters.options import Options
from converters.detect import detect_dataset
from converters.schema import load_schema
from converters.source import Listing, open_source
from sources import pack_tar, tile16, write_csv, write_rxrx3_source

SCHEMA = dataclasses.replace(load_schema("rxrx3"), image_shape=(64, 64))
PLATES = {
    ("compound-001", 19): ["D20", "U08", "AF01"],
    ("gene-045", 4): ["B03", "AD27"],
    ("gene-079", 8): ["H29", "AA02", "AF48"],
}
TAR_NAMES = {("gene-045", 4): "gene-045_4.tar", ("gene-079", 8): "gene-079_Plate8.tar"}  # else compound-001/Plate19.tar
DEQUALINIUM = "CC1=[N+](CCCCCCCCCC[N+]2=C(C)C=C(N)C3=CC=CC=C23)C2=CC=CC=C2C(N)=C1 |c:1,13,21,29,31,35,t:16,19,23,27|"
ROWS = [  # the README's examples, placed on the generated plates; gene-045 B03 has no row
    dict(well_id="gene-079_8_H29", experiment_name="gene-079", plate=8, address="H29", gene="RPLP2",
         treatment="RPLP2_guide_4", SMILES=None, concentration=None, perturbation_type="CRISPR", cell_type="HUVEC"),
    dict(well_id="gene-079_8_AA02", experiment_name="gene-079", plate=8, address="AA02", gene="RXRX3-43938",
         treatment="RXRX3-43938_guide_6", SMILES=None, concentration=None, perturbation_type="CRISPR", cell_type="HUVEC"),
    dict(well_id="gene-079_8_AF48", experiment_name="gene-079", plate=8, address="AF48", gene="EMPTY_control",
         treatment="EMPTY_control", SMILES=None, concentration=None, perturbation_type="CRISPR", cell_type="HUVEC"),
    dict(well_id="gene-045_4_AD27", experiment_name="gene-045", plate=4, address="AD27", gene="RXRX3-43938",
         treatment="RXRX3-43938_guide_6", SMILES=None, concentration=None, perturbation_type="CRISPR", cell_type="HUVEC"),
    dict(well_id="compound-001_19_D20", experiment_name="compound-001", plate=19, address="D20", gene=None,
         treatment="Dequalinium", SMILES=DEQUALINIUM, concentration=0.25, perturbation_type="COMPOUND", cell_type="HUVEC"),
    dict(well_id="compound-001_19_U08", experiment_name="compound-001", plate=19, address="U08", gene=None,
         treatment="EMPTY_control", SMILES=None, concentration=None, perturbation_type="COMPOUND", cell_type="HUVEC"),
    dict(well_id="compound-001_19_AF01", experiment_name="compound-001", plate=19, address="AF01", gene=None,
         treatment="CRISPR_control", SMILES=None, concentration=None, perturbation_type="COMPOUND", cell_type="HUVEC"),
    dict(well_id="gene-060_9_P28", experiment_name="gene-060", plate=9, address="P28", gene="EMPTY_control",
         treatment="EMPTY_control", SMILES=None, concentration=None, perturbation_type="CRISPR", cell_type="HUVEC"),
]
MISSING = "compound-001/19/U08_s1_w6.png"  # left out of its tar


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("rxrx3")
    written = write_rxrx3_source(root / "images", PLATES, tar_names=TAR_NAMES, skip=frozenset({MISSING}))
    write_csv(root / "metadata.csv", ROWS)
    return root, written


def check_pixels(out: Path, written: dict[str, np.ndarray]) -> None:
    """Every generated image, and only those, through plain xarray: uint16, exact, present."""
    for (experiment, plate), wells in PLATES.items():
        ds = xr.open_zarr(out, group=f"{experiment}/Plate{plate}")
        assert ds["images"].dtype == np.uint16 and ds["well"].values.tolist() == wells
        images, present = ds["images"].values, ds["present"].values
        for w, well in enumerate(wells):
            for c in range(6):
                pixels = written.get(f"{experiment}/{plate}/{well}_s1_w{c + 1}.png")
                assert present[w, 0, c] == (pixels is not None)
                assert np.array_equal(images[w, 0, c], pixels if pixels is not None else np.zeros((64, 64), np.uint16))
    assert max(p.max() for p in written.values()) > 255  # real 16-bit values survive


def check_metadata(out: Path | str, with_unlisted_well: bool = True) -> None:
    """Every value of metadata.csv on its well: strings intact (SMILES with commas and pipes), blanks "" or NaN."""
    for row in ROWS:
        group = f"{row['experiment_name']}/Plate{row['plate']}"
        if (row["experiment_name"], row["plate"]) not in PLATES:
            continue
        well = xr.open_zarr(out, group=group).sel(well=row["address"])
        for column in ("well_id", "gene", "treatment", "SMILES", "perturbation_type", "cell_type"):
            assert well[column].values.item() == (row[column] or ""), (group, column)
        concentration = well["concentration"].values.item()
        assert concentration == row["concentration"] if row["concentration"] else np.isnan(concentration)
    ds = xr.open_zarr(out, group="gene-045/Plate4")
    if with_unlisted_well:
        assert ds["gene"].sel(well="B03").values.item() == ""  # no row for this well: blank, never "nan"
    assert ds["concentration"].dtype == np.float64 and ds["concentration"].attrs["description"].startswith("Compound")


def test_local_tars_every_pixel_and_value(source, tmp_path: Path) -> None:
    root, written = source
    summary = pz.convert(root / "images", tmp_path / "o.zarr", SCHEMA, root / "metadata.csv", workers=2).as_dict()
    check_pixels(tmp_path / "o.zarr", written)
    check_metadata(tmp_path / "o.zarr")
    assert (summary["plates"], summary["wells"], summary["images"]) == (4, 9, 47)  # gene-060 9: rows only
    # Missing: U08's w6, and the six images of gene-060 9 P28, a well with a row but no tar.
    assert summary["missing_images"]["count"] == 7
    assert summary["missing_images"]["examples"][:2] == ["compound-001/Plate19/U08 site 1 w6", "gene-060/Plate9/P28 site 1 w1"]
    assert summary["images_without_metadata"] == {"count": 1, "examples": ["gene-045/Plate4/B03 site 1"]}
    assert summary["metadata_without_images"]["count"] == 1  # gene-060 plate 9 has no tar
    assert summary["bytes_in"] == sum(p.stat().st_size for p in (root / "images").rglob("*.tar"))
    attrs = zarr.open_group(tmp_path / "o.zarr", mode="r").attrs["platezarr"]
    assert attrs["dtype"] == "uint16" and attrs["pixel_size_um"] == 0.65 and attrs["sites"] == [1]
    assert attrs["source"]["layout"] == "tars" and attrs["channels"][4]["name"] == "MitoTracker"
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*"))  # nothing was extracted


def test_bucket_tars_are_streamed_and_planned_from_the_metadata(source, s3, tmp_path: Path) -> None:
    import boto3
    import imagecodecs
    import obstore

    from converters.location import parse_location

    root, written = source
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="rxrx3")
    store = parse_location("s3://rxrx3").object_store()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        obstore.put(store, path.relative_to(root).as_posix(), path.read_bytes())
    # One more row: a well of gene-079 8 whose tar holds none of its images.
    extra = dict(ROWS[0], well_id="gene-079_8_B05", address="B05")
    write_csv(tmp_path / "metadata.csv", [*ROWS, extra])
    obstore.put(store, "metadata.csv", (tmp_path / "metadata.csv").read_bytes())
    with pytest.raises(pz.SourceError, match="tars in a bucket are not read while planning.*pass --metadata"):
        pz.convert("s3://rxrx3/images", tmp_path / "no-metadata.zarr", SCHEMA)
    gets = s3.count("GET", "/rxrx3/images/")
    summary = pz.convert("s3://rxrx3/images", tmp_path / "o.zarr", SCHEMA, "s3://rxrx3/metadata.csv").as_dict()
    assert s3.count("GET", "/rxrx3/images/") - gets == 3 + 1  # one streamed GET per tar, one ranged GET for the dtype
    check_metadata(tmp_path / "o.zarr", with_unlisted_well=False)
    # Planned from the metadata: gene-045 B03 has no row, so it is not in the store; the images missing
    # from the tars (U08's w6, all of B05) are found while streaming, and counted with the six of P28
    # (a row, no tar) the plan knew.
    ds = xr.open_zarr(tmp_path / "o.zarr", group="gene-045/Plate4")
    assert ds["well"].values.tolist() == ["AD27"]
    planned = plan_only("s3://rxrx3/images", Options(dataset=SCHEMA, metadata="s3://rxrx3/metadata.csv"))
    assert planned["missing_images"]["count"] == 6 and planned["images"] == 8 * 6
    assert summary["missing_images"]["count"] == 6 + 1 + 6 and summary["images"] == 8 * 6 - 7
    attrs = zarr.open_group(tmp_path / "o.zarr", mode="r").attrs["platezarr"]
    assert attrs["missing_images"] == summary["missing_images"] and attrs["counts"]["images"] == 41
    assert not xr.open_zarr(tmp_path / "o.zarr", group="compound-001/Plate19")["present"].sel(well="U08", channel="w6").any()
    assert not xr.open_zarr(tmp_path / "o.zarr", group="gene-079/Plate8")["present"].sel(well="B05").any()
    # Detection in a bucket reads the first 64 KiB of one tar (a ranged GET) for its first image's header.
    pack_tar(tmp_path / "real.tar", [("AA02_s1_w1.png", imagecodecs.png_encode(tile16(0, 0, 2048)))])
    obstore.put(store, "real/gene-001/Plate1.tar", (tmp_path / "real.tar").read_bytes())
    bucket = open_source("s3://rxrx3/real")
    assert detect_dataset(bucket, Listing.of(bucket.walk())).name == "rxrx3"
    kept = {k: v for k, v in written.items() if not k.startswith("gene-045/4/B03")}
    for (experiment, plate), wells in PLATES.items():
        group = xr.open_zarr(tmp_path / "o.zarr", group=f"{experiment}/Plate{plate}")
        assert group["well"].values.tolist() == [w for w in ["B05", *wells] if w != "B03" and (w != "B05" or plate == 8)]
        for key, pixels in kept.items():
            e, p, name = key.split("/")
            if (e, int(p)) == (experiment, plate):
                well, _, channel = name.removesuffix(".png").split("_")
                assert np.array_equal(group["images"].sel(well=well, site=1, channel=channel).values, pixels), key


def test_a_tar_not_ordered_by_well_is_read_again_not_held_whole(tmp_path: Path) -> None:
    plates = {("gene-002", 3): [f"{r}{c:02d}" for r in "AB" for c in range(1, 6)]}  # 10 wells, shuffled members
    written = write_rxrx3_source(tmp_path / "images", plates, shuffle=True)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("platezarr").addHandler(handler)
    try:
        pz.convert(tmp_path / "images", tmp_path / "o.zarr", SCHEMA, workers=1)
    finally:
        logging.getLogger("platezarr").removeHandler(handler)
    assert any("is not ordered by well" in m and "read again in another pass" in m for m in messages), messages
    images = zarr.open_array(tmp_path / "o.zarr", path="gene-002/Plate3/images", mode="r")[...]
    for key, pixels in written.items():
        well, _, channel = key.split("/")[2].removesuffix(".png").split("_")
        assert np.array_equal(images[plates[("gene-002", 3)].index(well), 0, int(channel[1:]) - 1], pixels), key


def test_a_corrupt_member_stops_the_tar_and_the_rerun_resumes_it(tmp_path: Path, monkeypatch) -> None:
    wells = ["A01", "A02", "A03", "A04", "A05"]
    plates = {("gene-003", 1): wells, ("gene-003", 2): wells}
    write_rxrx3_source(tmp_path / "images", plates, corrupt=frozenset({"gene-003/2/A04_s1_w2.png"}))
    out = tmp_path / "o.zarr"
    with pytest.raises(pz.SourceError, match=r"Plate2\.tar:A04_s1_w2\.png: corrupt PNG"):
        pz.convert(tmp_path / "images", out, SCHEMA, workers=1)
    recorded = sorted(p.relative_to(out / "_platezarr" / "wells").as_posix() for p in (out / "_platezarr").rglob("*.json")
                      if "wells" in p.parts)
    # Plate 1 whole, and plate 2's wells before the bad one, were written and recorded as they completed.
    assert recorded == [f"gene-003/Plate{p}/{i}.json" for p, i in [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2)]]
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("gene-003/*/images/c.*")}
    written = write_rxrx3_source(tmp_path / "images", plates)  # re-downloaded: the same images, intact
    opened: list[str] = []
    real_open = converters.tarstream.open_tar
    monkeypatch.setattr(converters.tarstream, "open_tar", lambda source, rel: opened.append(rel) or real_open(source, rel))
    summary = pz.convert(tmp_path / "images", out, SCHEMA, workers=1).as_dict()
    assert summary["resumed_wells"] == 8 and opened == ["gene-003/Plate2.tar"]  # plate 1's tar is not read again
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == stamp for p, stamp in stamps.items())  # nor its wells rewritten
    images = zarr.open_array(out, path="gene-003/Plate2/images", mode="r")[...]
    for w, well in enumerate(wells):
        for c in range(6):
            assert np.array_equal(images[w, 0, c], written[f"gene-003/2/{well}_s1_w{c + 1}.png"])
    assert xr.open_zarr(out, group="gene-003/Plate2")["present"].values.all()


def test_real_size_tar_is_detected_and_converted_by_the_cli(tmp_path: Path) -> None:
    """RxRx3 at its real 2048x2048 uint16, without --dataset: the plate tar tells the layout."""
    plates = {("gene-001", 1): ["AA02"]}
    written = write_rxrx3_source(tmp_path / "images", plates, size=2048)
    result = subprocess.run([sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "rxrx3" and summary["dataset_detected"] and summary["images"] == 6
    images = xr.open_zarr(tmp_path / "o.zarr", group="gene-001/Plate1")["images"]
    assert images.dtype == np.uint16 and images.shape == (1, 1, 6, 2048, 2048)
    for c in range(6):
        assert np.array_equal(images.values[0, 0, c], written[f"gene-001/1/AA02_s1_w{c + 1}.png"])
    assert np.array_equal(written["gene-001/1/AA02_s1_w1.png"], tile16(0, 1, 2048))


def test_verify_streams_each_tar_against_the_store(tmp_path: Path) -> None:
    import imagecodecs

    from converters.verify import verify

    written = write_rxrx3_source(tmp_path / "images", {("gene-004", 2): ["A01", "A02"]})
    pz.convert(tmp_path / "images", tmp_path / "o.zarr", SCHEMA)
    report = verify(tmp_path / "images", tmp_path / "o.zarr")
    assert report.ok and (report.images, report.wells) == (12, 2)
    changed = {k: (v + 1 if k.endswith("A02_s1_w3.png") else v) for k, v in written.items() if not k.endswith("A01_s1_w1.png")}
    pack_tar(tmp_path / "images" / "gene-004" / "Plate2.tar",
             [(k.split("/")[2], imagecodecs.png_encode(v)) for k, v in changed.items()])
    problems = dict(verify(tmp_path / "images", tmp_path / "o.zarr").mismatches)
    tar = str(tmp_path / "images" / "gene-004" / "Plate2.tar")
    assert problems == {f"{tar}:A02_s1_w3.png": "4096 pixels differ from the store",
                        "gene-004/Plate2/A01 site 1 w1": f"stored, but not in {tar}"}
