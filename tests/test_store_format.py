"""The store as plain zarr and xarray see it: codecs, checksums, attributes, types of coordinates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import converters as pz
from converters.demo_data import write_demo_dataset


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    images, metadata = write_demo_dataset(root / "source")
    pz.convert(images, root / "demo.zarr", metadata=metadata)
    return root / "demo.zarr"


def test_codecs_are_standard_zstd_with_checksums(demo_store: Path) -> None:
    meta = json.loads((demo_store / "HUVEC-01" / "Plate1" / "images" / "zarr.json").read_text())
    (sharding,) = meta["codecs"]
    assert sharding["name"] == "sharding_indexed"
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["bytes", "zstd", "crc32c"]
    assert [c["name"] for c in sharding["configuration"]["index_codecs"]] == ["bytes", "crc32c"]
    assert meta["dimension_names"] == ["well", "site", "channel", "y", "x"]


def test_a_corrupted_byte_fails_loudly_on_read(demo_store: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(demo_store, copy)
    shard = copy / "HUVEC-01" / "Plate1" / "images" / "c.0.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        zarr.open_array(copy, path="HUVEC-01/Plate1/images", mode="r")[0]


def test_root_attributes_follow_the_spec(demo_store: Path) -> None:
    attrs = zarr.open_group(demo_store, mode="r").attrs["platezarr"]
    assert attrs["layout_version"] == 1 and attrs["dataset"] == "rxrx1_demo"
    assert [c["id"] for c in attrs["channels"]] == ["w1", "w2", "w3", "w4", "w5", "w6"]
    assert attrs["channels"][0]["name"] == "Hoechst"
    assert attrs["image_shape"] == [128, 128] and attrs["dtype"] == "uint8"
    assert {"converter_version", "created", "source"} <= set(attrs)
    assert attrs["source"]["bytes"] > 0


def test_strings_come_back_as_strings_and_ints_as_ints(demo_store: Path) -> None:
    """The Zarr v3 string pitfalls (xarray issues 10077, 11267): every string coordinate round-trips."""
    ds = xr.open_zarr(demo_store, group="HUVEC-01/Plate1")
    for name in ("well", "row", "channel", "channel_name", "well_type", "sirna", "site_id", "cell_type"):
        values = ds[name].values
        assert values.dtype.kind in ("T", "U", "O"), (name, values.dtype)
        assert all(isinstance(v, str) for v in values.ravel().tolist()), name
    for name in ("column", "site", "sirna_id", "plate"):
        assert ds[name].dtype == np.int64, name
    assert ds["sirna"].sel(well="B02").values.item() == "EMPTY"
    assert ds["images"].dtype == np.uint8 and ds["present"].dtype == bool


def test_channel_coordinate_says_what_each_channel_shows(demo_store: Path) -> None:
    ds = xr.open_zarr(demo_store, group="HUVEC-01/Plate1")
    assert ds["channel_name"].values.tolist()[:2] == ["Hoechst", "ConA"]
    assert ds["channel"].attrs["channels"][0]["stain"] == "Hoechst 33342"


def test_datatree_opens_with_xarray_alone(demo_store: Path) -> None:
    tree = xr.open_datatree(demo_store, engine="zarr")
    assert set(tree.children) == {"HUVEC-01", "RPE-01", "index"}
    plate = tree["RPE-01/Plate2"].to_dataset()
    assert plate["present"].sel(well="C03", site=2, channel="w6").item() is False
    index = tree["index"].to_dataset()
    assert index.sizes["sample"] == 32


def test_root_attributes_validate_against_the_json_schema(demo_store: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from converters.schema import schema_dir

    schema = json.loads((schema_dir() / "store-attributes.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    attrs = zarr.open_group(demo_store, mode="r").attrs.asdict()["platezarr"]
    jsonschema.validate(attrs, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(attrs | {"layout_version": 2}, schema)
    stats = attrs["pixel_stats"]  # described too: a mean that is not a number is refused
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(attrs | {"pixel_stats": stats | {"all": stats["all"] | {"mean": ["x"]}}}, schema)
