"""The root's consolidated metadata, made from the documents a conversion wrote (converters/nodes.py) instead of
reading every node back, is byte for byte what zarr-python's `consolidate_metadata` writes for the same store; here
on a local store (in a bucket: test_buckets.py), fresh and resumed from a store begun without the template's record.

Sources: three small plates of 64x64 tiles cut from the real RxRx1 PNGs, with an official-schema metadata table and
random per-site embeddings (tests/sources.py), so that every kind of node a conversion writes is in the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xarray as xr
import zarr

import converters as pz
from converters.nodes import NODES_KEY
from converters.output import Output
from sources import small_rxrx1, write_metadata, write_rxrx_source, write_site_embeddings

PLATES = {("HUVEC-01", 1): ["B02", "B03"], ("HUVEC-01", 2): ["C04"], ("RPE-01", 1): ["B02"]}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    write_rxrx_source(tmp_path / "images", PLATES, size=64)
    write_metadata(tmp_path / "metadata.csv", PLATES)
    sites = [f"{e}_{p}_{w}_{s}" for (e, p), wells in PLATES.items() for w in wells for s in (1, 2)]
    write_site_embeddings(tmp_path / "embeddings.csv", sites, 8)
    return tmp_path


def convert(src: Path, out: Path) -> None:
    pz.convert(src / "images", out, small_rxrx1(), src / "metadata.csv", embeddings=src / "embeddings.csv", workers=1)


def zarrs_root(out: Path) -> bytes:
    """The root zarr.json `zarr.consolidate_metadata` writes, reading every node of the store at `out` (whose own
    root is put back)."""
    ours = (out / "zarr.json").read_bytes()
    zarr.consolidate_metadata(out)
    theirs = (out / "zarr.json").read_bytes()
    (out / "zarr.json").write_bytes(ours)
    return theirs


def test_the_consolidated_metadata_is_the_one_zarr_writes(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    convert(source, out)
    assert (out / "zarr.json").read_bytes() == zarrs_root(out)
    nodes = json.loads((out / "zarr.json").read_bytes())["consolidated_metadata"]["metadata"]
    assert {"HUVEC-01/Plate1/embeddings", "HUVEC-01/Plate1/pixel_stats", "index/mean_w1"} <= set(nodes)
    for experiment, plate in PLATES:
        group = f"{experiment}/Plate{plate}"
        assert xr.open_zarr(out, group=group, consolidated=True).identical(xr.open_zarr(out, group=group, consolidated=False))


def test_a_store_begun_without_the_record_of_its_template_reads_its_nodes_back(source: Path, tmp_path: Path) -> None:
    """As a store begun by an earlier platezarr: stopped by a truncated PNG, the record of the template deleted, then
    resumed with the image mended. Its consolidated metadata is zarr's, and that of a store converted in one go."""
    out, fresh = tmp_path / "o.zarr", tmp_path / "fresh.zarr"
    bad = source / "images" / "HUVEC-01" / "Plate2" / "C04_s2_w3.png"
    png = bad.read_bytes()
    bad.write_bytes(png[: len(png) // 2])
    with pytest.raises(pz.PlatezarrError, match="C04_s2_w3.png"):
        convert(source, out)
    assert Output.open(out).state() == "incomplete"
    (out / NODES_KEY).unlink()
    bad.write_bytes(png)
    convert(source, out)
    assert (out / "zarr.json").read_bytes() == zarrs_root(out)
    convert(source, fresh)
    resumed, once = (json.loads((o / "zarr.json").read_bytes())["consolidated_metadata"] for o in (out, fresh))
    assert resumed == once
