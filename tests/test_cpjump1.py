"""CPJUMP1 (Opera Phenix TIFFs): the real exports and example fields convert pixel-exact as uint16.

Pixels are compared with tifffile's own decode of every TIFF, and metadata with the CSV files read by
pandas, through plain zarr and xarray, not our readers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import xarray as xr
import zarr

import converters as pz
from conftest import shared
from converters.decode import decode_image
from converters.detect import detect_dataset
from converters.layouts.phenix_index import read_index
from converters.metadata import read_metadata
from converters.schema import load_schema
from converters.source import Listing, LocalSource

PHENIX_NAME = re.compile(r"r(?P<row>\d\d)c(?P<column>\d\d)f(?P<site>\d\d)p\d\d-ch(?P<channel>\d)sk1fk1fl1\.tiff")
KEYS = {"Metadata_Plate": "plate", "Metadata_Well": "well", "Metadata_Site": "site"}
CLI = [sys.executable, "-m", "converters.cli"]
SHAPE = (1080, 1080)


def check_every_pixel(images_dir: Path, out: Path, group: str) -> int:
    """Every TIFF under `images_dir`, decoded by tifffile, against the store read by plain zarr."""
    ds = xr.open_zarr(out, group=group)
    wells, sites, channels = list(ds["well"].values), list(ds["site"].values), list(ds["channel"].values)
    images = zarr.open_array(out, path=f"{group}/images", mode="r")
    present = zarr.open_array(out, path=f"{group}/present", mode="r")[...]
    checked = 0
    for tiff in sorted(images_dir.rglob("*.tiff")):
        m = PHENIX_NAME.fullmatch(tiff.name)
        well = f"{'ABCDEFGHIJKLMNOP'[int(m['row']) - 1]}{int(m['column']):02d}"
        w, s, c = wells.index(well), sites.index(int(m["site"])), channels.index(f"ch{m['channel']}")
        expected = tifffile.imread(tiff)
        stored = images[w, s, c]
        assert stored.dtype == expected.dtype == np.uint16, tiff
        assert np.array_equal(stored, expected), tiff
        assert present[w, s, c], tiff
        checked += 1
    return checked


def assert_same_value(stored: object, expected: object, where: str) -> None:
    """A stored coordinate value equals the CSV's: numbers as numbers, blanks as "" or NaN, never "nan"."""
    if isinstance(expected, str):
        assert stored == expected, where
    elif pd.isna(expected):
        assert (isinstance(stored, float) and np.isnan(stored)) or stored == "", (where, stored)
    else:
        assert isinstance(stored, (int, float)) and not isinstance(stored, bool), (where, type(stored))
        assert stored == expected, (where, stored, expected)


@pytest.mark.parametrize(
    "version, barcode, ch1, start",
    [
        ("Version1", "BR00121482", "Alexa 647", "2021-03-29T16:51:44.6444882-04:00"),
        ("Version5", "BR00122249", "Digital Phase Contrast", "2023-03-23T14:50:32.6252176-04:00"),
    ],
)
def test_phenix_export_with_index_and_load_data(tmp_path: Path, version: str, barcode: str, ch1: str, start: str) -> None:
    export = shared("cpjump1", "phenix_export", version)
    load_data = export / f"load_data_{version.lower()}.csv"
    out = tmp_path / "out.zarr"
    summary = pz.convert(export / "images", out, metadata=load_data, experiment="pilot").as_dict()
    group = f"pilot/{barcode}"  # the plate group is the barcode from Index.idx.xml
    assert summary["dataset"] == "cpjump1" and summary["dataset_detected"]
    assert check_every_pixel(export / "images", out, group) == 6
    # The exports hold ch1..ch6 of site 1 only: the rest is present=False, zeros, and reported.
    ds = xr.open_zarr(out, group=group)
    assert ds["present"].sel(well="A01", site=1).values.tolist() == [True] * 6 + [False] * 2
    assert not ds["present"].sel(site=slice(2, 9)).values.any()
    assert not ds["images"].sel(well="A01", site=1, channel="ch7").values.any()
    assert summary["missing_images"]["count"] == 9 * 8 - 6
    assert f"{group}/A01 site 1 ch7" in summary["missing_images"]["examples"]
    assert summary["images_without_metadata"]["count"] == 0
    # Every load_data value, typed, on its site.
    table = pd.read_csv(load_data, keep_default_na=False, na_values=[""])
    for row in table.to_dict("records"):
        site = ds.sel(well=row["Metadata_Well"], site=row["Metadata_Site"])
        for column, expected in row.items():
            assert_same_value(site[KEYS.get(column, column)].values.item(), expected, column)
    # Numbers are numbers (float: sites 2..9 have no row, so NaN), text is text.
    assert ds["Metadata_ImageResolutionX"].dtype == ds["Metadata_BinningX"].dtype == np.float64
    assert ds["Metadata_AbsTime_OrigMito"].sel(well="A01", site=2).values.item() == ""
    # Channels, stains, pixel size and acquisition time from Index.idx.xml, in the attributes.
    attrs = zarr.open_group(out, mode="r").attrs["platezarr"]
    assert attrs["dtype"] == "uint16" and attrs["pixel_size_um"] == pytest.approx(0.598, abs=1e-3)
    assert attrs["channels"][0] | {"microscope_name": ch1} == attrs["channels"][0]
    assert attrs["channels"][0]["name"] == "Mito" and attrs["channels"][4]["stain"] == "Hoechst 33342"
    assert "microscope_name" not in attrs["channels"][7]  # ch8 is not in this measurement
    (measurement,) = attrs["source"]["measurements"]
    assert measurement["group"] == group and measurement["plate_id"] == barcode and measurement["start_time"] == start
    assert attrs["source"]["options"] == {"experiment": "pilot"}
    assert ds["channel"].attrs["channels"] == attrs["channels"]
    assert ds["channel"].attrs["pixel_size_um"] == attrs["pixel_size_um"]


@pytest.fixture(scope="module")
def example_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The real example fields (no Index.idx.xml) converted once with the real plate map."""
    images = shared("cpjump1", "example_images")
    plate_map = shared("cpjump1", "metadata", "cpjump1_metadata.csv")
    out = tmp_path_factory.mktemp("cpjump1") / "examples.zarr"
    summary = pz.convert(images, out, metadata=plate_map, experiment="2020_11_04_CPJUMP1", plate="BR00117010")
    return out, plate_map, summary.as_dict()


def test_example_fields_pixel_exact_with_missing_sites(example_store) -> None:
    out, _, summary = example_store
    images = shared("cpjump1", "example_images")
    group = "2020_11_04_CPJUMP1/BR00117010"
    assert check_every_pixel(images, out, group) == 24
    ds = xr.open_zarr(out, group=group)
    # One field (f05) of nine per well: the other eight sites are present=False and reported.
    for well in ("D14", "D08", "L09"):
        assert ds["present"].sel(well=well).values.any(axis=1).tolist() == [s == 5 for s in range(1, 10)]
    assert summary["missing_images"]["count"] == 384 * 9 * 8 - 24
    assert ds["images"].dtype == np.uint16 and ds.sizes["well"] == 384  # every well of the plate map
    assert (ds["row"].sel(well="L09").values.item(), ds["column"].sel(well="L09").values.item()) == ("L", 9)


def test_example_fields_plate_map_joined(example_store) -> None:
    out, plate_map, summary = example_store
    table = pd.read_csv(plate_map, keep_default_na=False, na_values=["", "NA"], dtype={"Metadata_target_is_across": str})
    rows = table[table["Metadata_Plate"] == "BR00117010"]
    ds = xr.open_zarr(out, group="2020_11_04_CPJUMP1/BR00117010")
    assert ds["plate"].values.item() == "BR00117010" and ds["experiment"].values.item() == "2020_11_04_CPJUMP1"
    wells = ds["well"].values.tolist()
    for column in table.columns.drop(["Metadata_Plate", "Metadata_Well"]):
        stored = ds[column]
        assert stored.dims == ("well",), column
        by_well = dict(zip(wells, stored.values.tolist()))
        for well, expected in zip(rows["Metadata_Well"], rows[column]):
            assert_same_value(by_well[well], expected, f"{well} {column}")
    assert ds["Metadata_pert_iname"].sel(well="D14").values.item() == "DMSO"
    assert ds["Metadata_pert_iname"].sel(well="D08").values.item() == "FK-866"
    assert np.isnan(ds["Metadata_pubchem_cid"].sel(well="D14").values.item())  # "NA" in the table
    assert ds["Metadata_target"].sel(well="D14").values.item() == ""  # blank string, not "nan" or "NA"
    assert ds["Metadata_mg_per_ml"].dtype == np.float64 and ds["Metadata_timepoint"].dtype == np.int64
    assert ds["Metadata_timepoint"].attrs["description"].startswith("Hours")
    # The other plates of the plate map have no images here: reported, not written.
    assert summary["plates"] == 1
    other_sites = (len(table) - len(rows)) * 9
    assert summary["metadata_without_images"]["count"] == other_sites + 384 * 9 - 3
    assert any("no images of this plate" in e for e in summary["metadata_without_images"]["examples"])


def test_verify_reads_the_source_with_the_same_options(tmp_path: Path) -> None:
    from converters.verify import verify

    fields = shared("cpjump1", "example_images", "DMSO")
    pz.convert(fields, tmp_path / "o.zarr", experiment="2020_11_04_CPJUMP1", plate="BR00117010")
    report = verify(fields, tmp_path / "o.zarr")
    assert report.ok and report.images == 8


def test_gallery_path_names_the_experiment_and_the_cli_detects_cpjump1(tmp_path: Path) -> None:
    export = shared("cpjump1", "phenix_export", "Version1", "images")
    batch = tmp_path / "images" / "2020_11_04_CPJUMP1" / "images"
    measurement = batch / "BR00121482__2021-03-29T16_51_44-Measurement1" / "Images"
    measurement.mkdir(parents=True)
    for path in export.iterdir():
        (measurement / path.name).symlink_to(path)
    result = subprocess.run([*CLI, "convert", str(batch), "out.zarr", "--json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "cpjump1" and summary["dataset_detected"] is True
    assert "/2020_11_04_CPJUMP1/BR00121482" in xr.open_datatree(tmp_path / "out.zarr", engine="zarr").groups
    assert check_every_pixel(measurement, tmp_path / "out.zarr", "2020_11_04_CPJUMP1/BR00121482") == 6


def test_detection_picks_cpjump1() -> None:
    source = LocalSource.open(shared("cpjump1", "example_images"))
    assert detect_dataset(source, Listing.of(source.walk())).name == "cpjump1"


def test_without_experiment_or_plate_the_error_says_what_to_pass(tmp_path: Path) -> None:
    fields = shared("cpjump1", "example_images", "DMSO")
    with pytest.raises(pz.SourceError, match=r"DMSO: .*pass --experiment NAME .* and --plate NAME"):
        pz.convert(fields, tmp_path / "a.zarr")
    with pytest.raises(pz.SourceError, match="pass --experiment NAME") as error:
        pz.convert(fields, tmp_path / "b.zarr", plate="BR00117010")
    assert "--plate" not in str(error.value)
    with pytest.raises(pz.SourceError, match="--experiment and --plate are only for"):
        pz.convert(shared("rxrx1", "images"), tmp_path / "c.zarr", experiment="x")


def test_index_that_is_not_xml_fails_naming_the_file(tmp_path: Path) -> None:
    src = tmp_path / "Images"
    src.mkdir()
    tiff = shared("cpjump1", "phenix_export", "Version1", "images", "r01c01f01p01-ch1sk1fk1fl1.tiff")
    (src / tiff.name).symlink_to(tiff)
    (src / "Index.idx.xml").write_text("this is not XML\n")
    result = subprocess.run([*CLI, "convert", "Images", "o.zarr", "--experiment", "x", "--no-progress"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"{src / 'Index.idx.xml'}: not a readable Index.idx.xml" in result.stderr
    assert "Traceback" not in result.stderr


def test_measurements_with_different_channels_need_separate_stores(tmp_path: Path) -> None:
    with pytest.raises(pz.SourceError, match="channel ch1 is .* convert these measurements into separate stores"):
        pz.convert(shared("cpjump1", "phenix_export"), tmp_path / "o.zarr", experiment="x")


def test_index_files_of_both_harmony_versions_parse_alike() -> None:
    for version, barcode in (("Version1", "BR00121482"), ("Version5", "BR00122249")):
        path = shared("cpjump1", "phenix_export", version, "images", "Index.idx.xml")
        data = path.read_bytes()
        measurement = read_index(data, str(path))
        assert measurement.barcode == barcode and measurement.instrument == "Phenix"
        assert sorted(measurement.channels) == [1, 2, 3, 4, 5, 6]
        assert measurement.pixel_size_um == pytest.approx(0.598, abs=1e-3)
        # Another namespace, no namespace, or no byte-order mark: the same facts.
        for variant in (data.replace(b"HarmonyV5", b"HarmonyV6"), re.sub(rb' xmlns="[^"]+"', b"", data),
                        data.removeprefix(b"\xef\xbb\xbf")):
            assert read_index(variant, str(path)) == measurement


def _tiff(path: Path, pixels: np.ndarray, **kwargs) -> bytes:
    tifffile.imwrite(path, pixels, **kwargs)
    return path.read_bytes()


def test_tiff_header_is_checked_before_decoding(tmp_path: Path) -> None:
    pixels = (np.arange(1080 * 1080) * 61 % 65536).astype(np.uint16).reshape(SHAPE)
    for byteorder in ("<", ">"):
        good = _tiff(tmp_path / "good.tiff", pixels, compression="lzw", byteorder=byteorder)
        decoded = decode_image(good, "good", SHAPE, np.dtype("uint16"))
        assert decoded.dtype == np.dtype("uint16") and np.array_equal(decoded, pixels)
    # A header declaring 60000x60000 pixels (7 GB) is refused from its tags, nothing allocated.
    small = tmp_path / "huge.tiff"
    tifffile.imwrite(small, np.zeros((16, 16), np.uint16))
    data = bytearray(small.read_bytes())
    with tifffile.TiffFile(small) as tif:
        for name in ("ImageWidth", "ImageLength"):
            tag = tif.pages[0].tags[name]
            size = 2 if tag.dtype == tifffile.DATATYPE.SHORT else 4
            data[tag.valueoffset:tag.valueoffset + size] = (60000).to_bytes(size, "little")
    with pytest.raises(pz.SourceError, match="huge: image is 60000x60000, the dataset's images are 1080x1080"):
        decode_image(bytes(data), "huge", SHAPE, np.dtype("uint16"))
    cases = {
        "8-bit image in a 16-bit conversion": _tiff(tmp_path / "u8.tiff", np.zeros(SHAPE, np.uint8)),
        "expected grayscale": _tiff(tmp_path / "rgb.tiff", np.zeros((*SHAPE, 3), np.uint16), photometric="rgb"),
        "2 images, expected one": _tiff(tmp_path / "pages.tiff", np.zeros((2, *SHAPE), np.uint16)),
        "only 8- and 16-bit unsigned": _tiff(tmp_path / "float.tiff", np.zeros(SHAPE, np.float32)),
        "not a PNG or TIFF": b"GIF89a....",
    }
    for message, data in cases.items():
        with pytest.raises(pz.SourceError, match=message):
            decode_image(data, "case", SHAPE, np.dtype("uint16"))


def test_a_wrong_image_in_a_source_fails_naming_it(tmp_path: Path) -> None:
    src = tmp_path / "fields"
    src.mkdir()
    tifffile.imwrite(src / "r01c01f01p01-ch1sk1fk1fl1.tiff", np.zeros((1080, 1080), np.uint16))
    tifffile.imwrite(src / "r01c01f01p01-ch2sk1fk1fl1.tiff", np.zeros((540, 540), np.uint16))
    with pytest.raises(pz.SourceError, match=r"ch2sk1fk1fl1.tiff: image is 540x540, the dataset's images are 1080x1080"):
        pz.convert(src, tmp_path / "o.zarr", "cpjump1", experiment="x", plate="p")


def test_schema_describes_every_real_plate_map_column() -> None:
    header = pd.read_csv(shared("cpjump1", "metadata", "cpjump1_metadata.csv"), nrows=0).columns
    described = {c.name: c for c in load_schema("cpjump1").columns}
    assert set(header) <= set(described)
    assert all(described[name].description for name in header)


def test_plate_map_rows_are_wells_and_na_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text(
        "Metadata_Plate,Metadata_Well,Metadata_pert_iname,Metadata_pubchem_cid,Metadata_mg_per_ml,code,dose\n"
        "BR1,A01,DMSO,NA,NA,0101,1\n"
        "BR1,b2,FK-866,6914657,1.9575,0102,2.5\n"
    )
    meta = read_metadata(path, load_schema("cpjump1"))
    assert meta.format == "plate_map" and meta.keys == ("plate", "well")
    table = meta.table
    assert len(table) == 2 * 9 and table["experiment"].isna().all()  # every site; experiment from the images
    assert sorted(set(table["well"])) == ["A01", "B02"] and table["site"].dtype == np.int64
    assert table["Metadata_pubchem_cid"].dtype == np.float64 and table["Metadata_pubchem_cid"].isna().sum() == 9
    assert table["Metadata_pert_iname"].tolist()[:1] == ["DMSO"]
    columns = {c.name: c for c in meta.columns}
    assert "Metadata_Plate" not in columns and columns["Metadata_pert_iname"].level == "well"
    # Columns the schema does not know are typed by their values: ids with leading zeros stay text.
    assert (columns["code"].type, columns["dose"].type, columns["code"].level) == ("str", "float", "well")
    assert table["code"].tolist()[0] == "0101"
    path.write_text("Metadata_Plate,Metadata_Well\nBR1,A01\nBR1,A1\n")
    with pytest.raises(pz.MetadataError, match=r"map.csv:2 and .*map.csv:3: two rows for the same well"):
        read_metadata(path, load_schema("cpjump1"))


def test_load_data_rows_are_sites(tmp_path: Path) -> None:
    path = tmp_path / "load_data.csv"
    path.write_text(
        "FileName_OrigDNA,PathName_OrigDNA,Metadata_Plate,Metadata_Well,Metadata_Site,Metadata_Row,Metadata_ExposureTime\n"
        "r01c01f01p01-ch5sk1fk1fl1.tiff,images/,BR1,A01,1,1,0.01\n"
        "r01c01f02p01-ch5sk1fk1fl1.tiff,images/,BR1,A01,2,1,0.02\n"
    )
    meta = read_metadata(path, load_schema("cpjump1"))
    assert meta.format == "load_data" and meta.keys == ("plate", "well", "site")
    assert meta.table["site"].tolist() == [1, 2]
    types = {c.name: (c.type, c.level) for c in meta.columns}
    assert types["Metadata_Row"] == ("int", "site") and types["Metadata_ExposureTime"] == ("float", "site")
    assert types["FileName_OrigDNA"] == ("str", "site") and "Metadata_Site" not in types


@pytest.mark.parametrize("outer", ["", "images"])
@pytest.mark.parametrize("src", ["batch", "above"])
def test_a_gallery_batch_as_downloaded_needs_no_options(tmp_path: Path, outer: str, src: str) -> None:
    """Real example TIFFs (no Index.idx.xml) in `[images/]BATCH/images/PLATE__time-Measurement1/Images/`: the
    batch names the experiment and the measurement folder the plate, whichever folder SRC is."""
    fields = shared("cpjump1", "example_images", "DMSO")
    top = tmp_path / "download" / outer if outer else tmp_path / "download"
    images = top / "2020_11_04_CPJUMP1" / "images" / "BR00116991__2020-11-05T19_51_35-Measurement1" / "Images"
    images.mkdir(parents=True)
    for path in fields.iterdir():
        (images / path.name).symlink_to(path)
    root = top / "2020_11_04_CPJUMP1" if src == "batch" else tmp_path / "download"
    pz.convert(root, tmp_path / "o.zarr", "cpjump1")
    assert check_every_pixel(images, tmp_path / "o.zarr", "2020_11_04_CPJUMP1/BR00116991") == 8
