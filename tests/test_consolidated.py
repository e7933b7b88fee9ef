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
from converters.nodes import NODES_KEY, Nodes
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


def zarrs_root(out: Path, path: str = "") -> bytes:
    """The zarr.json `zarr.consolidate_metadata` writes for the group at `path`, reading every node below it in the
    store at `out` (whose own document is put back)."""
    document = out / path / "zarr.json"
    ours = document.read_bytes()
    zarr.consolidate_metadata(out, path=path or None)
    theirs = document.read_bytes()
    document.write_bytes(ours)
    return theirs


def test_the_consolidated_metadata_is_the_one_zarr_writes(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    convert(source, out)
    assert (out / "zarr.json").read_bytes() == zarrs_root(out)
    assert (out / "index" / "zarr.json").read_bytes() == zarrs_root(out, "index")  # readers open it on its own
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


@pytest.mark.parametrize("indent", [2, None, 4])
def test_the_root_document_is_zarrs_whatever_its_json_indent(tmp_path: Path, indent: int | None) -> None:
    """`Nodes` writes the consolidated root one member at a time, not through zarr's objects: the bytes are zarr's for
    any `json_indent`, with names out of order, non-ASCII, nested groups, and attributes that look like its parts."""
    with zarr.config.set({"json_indent": indent}):
        root = zarr.open_group(tmp_path, mode="w", zarr_format=3, attributes={"metadata": {}, "kind": "inline"})
        plate = root.create_group("Pläte", attributes={"note": "two\nlines"})
        plate.create_array("values", shape=(3,), dtype="f8", fill_value=float("nan"))
        root.create_group("a").create_group("B").create_array("n", shape=(2,), dtype="i2")
        root.create_array("Z", shape=(1,), dtype="u1")
        documents = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("zarr.json")}
        ours = Nodes(root.store, documents, complete=True).consolidated({"platezarr": {"done": True}})[1]
        root.attrs.put({"platezarr": {"done": True}})
        assert ours == zarrs_root(tmp_path)
