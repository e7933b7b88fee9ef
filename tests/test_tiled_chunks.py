"""Tiled chunks inside the well shard (`--chunks`, issue 14), and crops that read only the tiles they intersect.

The source is RxRx3's layout (a tar of 16-bit PNGs per plate, one site per well) whose images are cut
from the real CPJUMP1 TIFFs (tests/sources.py `write_rxrx3_source` / `tile16`; RxRx1 tiles scaled to 16
bits without ../shared/data), 100x100 so that 32-pixel tiles do not divide them: the shards reach past
the image and their edge chunks are padded with the fill value, as Zarr pads them. Every pixel read back
(plain zarr, xarray, SiteDataset, SiteStream) is compared with the source image it came from. Bytes and
reads are counted by the kernel (/proc/self/io) for local stores and by a proxy in front of the loopback
S3 server for buckets.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import boto3
import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner
from zarr.storage import LocalStore

import converters as pz
from converters.cli import main
from converters.errors import OptionError, SourceError, StoreError
from converters.plan import StoreSettings
from converters.profiles import profile_for
from converters.schema import load_schema
from converters.sitereader import SiteReader
from latency_proxy import LatencyProxy
from sources import write_rxrx3_source

SIZE, TILE = 100, 32
PLATES = {("gene-001", 1): ["B04", "AA02", "AB03"], ("gene-002", 2): ["C05", "AA02"]}  # wells in plate order
SCHEMA = dataclasses.replace(load_schema("rxrx3"), image_shape=(SIZE, SIZE))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("tiles")
    return root / "src", write_rxrx3_source(root / "src", PLATES, size=SIZE)


@pytest.fixture(scope="module")
def tiled(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiled") / "tiled.zarr"
    pz.convert(source[0], out, SCHEMA, chunks=str(TILE), workers=1)
    return out


def site_pixels(written: dict[str, np.ndarray], group: str, well: str) -> np.ndarray:
    """(channel, y, x) of a site as the source images hold it."""
    experiment, plate = group.split("/")
    return np.stack([written[f"{experiment}/{plate.removeprefix('Plate')}/{well}_s1_w{c}.png"] for c in range(1, 7)])


def groups() -> list[tuple[str, list[str]]]:
    return [(f"{e}/Plate{p}", wells) for (e, p), wells in PLATES.items()]


def shard_index(out: Path, group: str, well_index: int, grid: tuple[int, int]) -> np.ndarray:
    """(rows, columns, 2) offset and nbytes of each tile of a one-site well's shard, read with numpy alone."""
    data = (out / group / "images" / f"c.{well_index}.0.0.0.0").read_bytes()
    n = grid[0] * grid[1]
    return np.frombuffer(data[-(16 * n + 4):-4], dtype="<u8").reshape(*grid, 2)


def expected_reads(index: np.ndarray, window: tuple[slice, slice], tile: int = TILE) -> tuple[int, int]:
    """(bytes, ranges) a window should cost: the tiles it intersects, one range per run of adjacent ones."""
    (y0, y1), (x0, x1) = (window[0].start, window[0].stop), (window[1].start, window[1].stop)
    hit = sorted((int(index[i, j, 0]), int(index[i, j, 1])) for i in range(index.shape[0]) for j in range(index.shape[1])
                 if i * tile < y1 and (i + 1) * tile > y0 and j * tile < x1 and (j + 1) * tile > x0)
    runs = 1 + sum(a + n != b for (a, n), (b, _) in zip(hit, hit[1:]))
    return sum(n for _, n in hit), runs


def io_counters() -> tuple[int, int]:
    """Bytes and read system calls of this process so far (Linux)."""
    path = Path("/proc/self/io")
    if not path.exists():
        pytest.skip("needs /proc/self/io (Linux) to count the bytes read")
    fields = dict(line.split(": ") for line in path.read_text().splitlines())
    return int(fields["rchar"]), int(fields["syscr"])


def counted_reads(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, tuple[int, int]]:
    """fn() and the (bytes, read calls) it made, less those of reading the counters themselves."""
    (b0, c0), (b1, c1) = io_counters(), io_counters()
    start = io_counters()
    result = fn()
    end = io_counters()
    return result, (end[0] - start[0] - (b1 - b0), end[1] - start[1] - (c1 - c0))


@pytest.mark.parametrize(("chunks", "chunk_shape", "shard_shape"), [
    (str(TILE), (1, 1, 6, TILE, TILE), (1, 1, 6, 128, 128)),
    ("1,48,32", (1, 1, 1, 48, 32), (1, 1, 6, 144, 128)),
    ("1,1,3,64,100", (1, 1, 3, 64, 100), (1, 1, 6, 128, 100)),
    ("site", (1, 1, 6, SIZE, SIZE), (1, 1, 6, SIZE, SIZE)),
])
def test_tiled_stores_read_exactly_through_plain_zarr_and_xarray(source, tmp_path: Path, chunks: str,
                                                                 chunk_shape: tuple, shard_shape: tuple) -> None:
    src, written = source
    out = tmp_path / "out.zarr"
    summary = pz.convert(src, out, SCHEMA, chunks=chunks, workers=1)
    assert summary.plan["chunks"] == list(chunk_shape) and summary.plan["shards"] == list(shard_shape)
    for group, wells in groups():
        array = zarr.open_array(out, path=f"{group}/images", mode="r")
        assert array.shape == (len(wells), 1, 6, SIZE, SIZE)
        assert array.chunks == chunk_shape and array.shards == shard_shape
        ds = xr.open_zarr(out, group=group)
        assert ds["well"].values.tolist() == wells
        for w, well in enumerate(wells):
            assert np.array_equal(array[w, 0], site_pixels(written, group, well))
            assert np.array_equal(ds["images"].sel(well=well).isel(site=0).values, site_pixels(written, group, well))
        assert np.array_equal(array[1, 0, 2, 90:, 60:], site_pixels(written, group, wells[1])[2, 90:, 60:])


def test_padded_edge_chunks_are_the_bytes_zarr_python_writes(tiled: Path, tmp_path: Path) -> None:
    """The shard of a 100x100 site in 32x32 tiles, written by zarr-python itself, is byte for byte ours."""
    ours = zarr.open_array(tiled, path="gene-001/Plate1/images", mode="r")
    profile = profile_for("default", np.dtype("uint16"))
    theirs = zarr.create_array(LocalStore(tmp_path / "theirs.zarr"), shape=ours.shape, dtype=ours.dtype,
                               chunks=ours.chunks, shards=ours.shards, serializer=profile.serializer(),
                               compressors=profile.compressors(), fill_value=0,
                               chunk_key_encoding={"name": "default", "separator": "."},
                               config={"write_empty_chunks": True})
    theirs[...] = ours[...]
    for w in range(ours.shape[0]):
        key = f"c.{w}.0.0.0.0"
        assert (tmp_path / "theirs.zarr" / key).read_bytes() == (tiled / "gene-001/Plate1/images" / key).read_bytes()


def test_a_crop_reads_only_the_tiles_it_intersects(source, tiled: Path) -> None:
    _, written = source
    group, wells = groups()[0]
    reader = SiteReader(tiled, group)
    site = reader.read_site(group, 1, 0, wells[1])  # reads the shard index (kept), and the whole site
    assert np.array_equal(site, site_pixels(written, group, wells[1]))
    index = shard_index(tiled, group, 1, (4, 4))
    windows = [(slice(0, 10), slice(0, 10)), (slice(30, 40), slice(30, 40)), (slice(60, 100), slice(5, 70)),
               (slice(96, 100), slice(0, 100)), (slice(0, 100), slice(0, 100)), (slice(33, 63), slice(65, 95))]
    for window in windows:
        crop, cost = counted_reads(lambda: reader.read_window(group, 1, 0, window, wells[1]))
        assert np.array_equal(crop, site[:, window[0], window[1]])
        assert cost == expected_reads(index, window), window
    whole, _ = expected_reads(index, (slice(0, SIZE), slice(0, SIZE)))
    assert expected_reads(index, (slice(0, 10), slice(0, 10)))[0] < whole / 8


def test_site_dataset_crops_equal_numpy_slices_of_the_source(source, tiled: Path) -> None:
    _, written = source
    for mode in ("random", "center"):
        ds = pz.SiteDataset(tiled, crop=24, crop_mode=mode, seed=5)
        again = pz.SiteDataset(tiled, crop=24, crop_mode=mode, seed=5)
        for i in range(len(ds)):
            pixels, meta = ds[i]
            y, x = ds.transform.window(i, (SIZE, SIZE))
            assert pixels.shape == (6, 24, 24)
            assert np.array_equal(pixels, site_pixels(written, meta["group"], meta["well"])[:, y, x])
            assert np.array_equal(again[i][0], pixels)
    picked = pz.SiteDataset(tiled, channels=["w2", "w5"], crop=40, seed=1)
    pixels, meta = picked[3]
    y, x = picked.transform.window(3, (SIZE, SIZE))
    assert np.array_equal(pixels, site_pixels(written, meta["group"], meta["well"])[[1, 4], y, x])


def test_open_sites_crops_read_only_the_tiles_they_intersect(source, tiled: Path) -> None:
    """A window sliced from `open_sites`' lazy array (xarray, then dask) reaches the site reader as a window: it
    reads the tiles it intersects, as the site reader's own crop does; rows, strides and channels read right."""
    _, written = source
    group, wells = groups()[0]
    sites = pz.open_sites(tiled)
    k = int(np.flatnonzero((sites["group"].values == group) & (sites["well"].values == wells[1]))[0])
    expected = site_pixels(written, group, wells[1])
    assert np.array_equal(sites["images"][k].values, expected)  # reads the shard index (kept), and the whole site
    index = shard_index(tiled, group, 1, (4, 4))
    for y, x in [(slice(0, 10), slice(0, 10)), (slice(33, 63), slice(65, 95)), (slice(96, 100), slice(0, 100))]:
        crop, cost = counted_reads(lambda: sites["images"].isel(sample=k, y=y, x=x).values)
        assert np.array_equal(crop, expected[:, y, x])
        assert cost == expected_reads(index, (y, x)), (y, x)
    row, (row_bytes, _) = counted_reads(lambda: sites["images"].isel(sample=k, y=40).values)
    assert np.array_equal(row, expected[:, 40])
    assert row_bytes == expected_reads(index, (slice(40, 41), slice(0, SIZE)))[0]
    assert row_bytes < expected_reads(index, (slice(0, SIZE), slice(0, SIZE)))[0] / 3
    for picked in [dict(x=slice(None, None, 3)), dict(channel=[4, 1], y=slice(-7, None)), dict(x=-1)]:
        assert np.array_equal(sites["images"].isel(sample=k, **picked).values,
                              xr.DataArray(expected, dims=("channel", "y", "x")).isel(**picked).values), picked
    both = sites["images"].isel(sample=[k, 0], y=slice(20, 50), x=slice(70, 100)).values
    assert np.array_equal(both[0], expected[:, 20:50, 70:100])
    assert np.array_equal(both[1], sites["images"][0].values[:, 20:50, 70:100])


def test_crops_from_a_bucket_fetch_only_their_tiles(s3, source) -> None:
    """On the loopback S3 server behind a counting proxy: a crop is one ranged GET per run of adjacent tiles it
    intersects, a whole site of a one-site well one GET (its tiles lie together), and SiteStream reads the same."""
    src, written = source
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="tiles")
    url = "s3://tiles/tiled.zarr"
    pz.convert(src, url, SCHEMA, chunks=str(TILE), workers=1)
    proxy = LatencyProxy(s3.endpoint, latency=0).start()
    try:
        options = {"endpoint": proxy.endpoint}
        ds = pz.SiteDataset(url, crop=24, seed=2, storage_options=options)
        whole = pz.SiteDataset(url, storage_options=options)
        client = boto3.client("s3", endpoint_url=s3.endpoint)
        costs = []
        for i in range(len(ds)):
            meta = ds.table.iloc[i]
            shard = client.get_object(Bucket="tiles", Key=f"tiled.zarr/{meta['group']}/images/c.{meta['well_index']}.0.0.0.0")
            data = shard["Body"].read()
            index = np.frombuffer(data[-(16 * 16 + 4):-4], dtype="<u8").reshape(4, 4, 2)
            costs.append(expected_reads(index, ds.transform.window(i, (SIZE, SIZE))) + (len(data) - 16 * 16 - 4,))
            whole[i], ds[i]  # the shard indexes, read once per dataset
        proxy.reset_counts()
        for i in range(len(ds)):
            pixels, meta = ds[i]
            y, x = ds.transform.window(i, (SIZE, SIZE))
            assert np.array_equal(pixels, site_pixels(written, meta["group"], meta["well"])[:, y, x])
        counts = proxy.counts()
        assert counts["requests"] == sum(runs for _, runs, _ in costs)
        assert sum(b for b, _, _ in costs) <= counts["bytes"] <= sum(b for b, _, _ in costs) + 1000 * counts["requests"]
        assert counts["bytes"] < sum(site for _, _, site in costs) / 2
        proxy.latency = 0.2  # a crop's runs of tiles are fetched at once: one round trip, not one per run
        several = next(i for i, (_, runs, _) in enumerate(costs) if runs >= 2)
        proxy.reset_counts()
        ds[several]
        assert proxy.counts()["max_in_flight"] == costs[several][1]
        proxy.latency = 0
        proxy.reset_counts()
        for i in range(len(whole)):
            pixels, meta = whole[i]
            assert np.array_equal(pixels, site_pixels(written, meta["group"], meta["well"]))
        assert proxy.counts()["requests"] == len(whole)
        stream = pz.SiteStream(url, crop=24, seed=2, shuffle=False, concurrency=4, storage_options=options)
        for i, (pixels, meta) in enumerate(stream):
            assert np.array_equal(pixels, ds[i][0]) and meta == ds[i][1]
    finally:
        proxy.stop()


@pytest.mark.parametrize(("value", "message"), [
    ("8", "at least 16 pixels"), ("abc", "chunks must be site"), ("1,2,3,4", "1,1,C,Y,X"), ("0", "positive integers"),
    ("2,1,6,64,64", "starts with 1,1"), ("32,", "chunks must be site"),
])
def test_bad_chunks_are_a_usage_error(source, tmp_path: Path, value: str, message: str) -> None:
    result = CliRunner().invoke(main, ["convert", str(source[0]), str(tmp_path / "out.zarr"), "--chunks", value])
    assert result.exit_code == 2 and "--chunks" in result.output and message in result.output, result.output
    assert not (tmp_path / "out.zarr").exists()
    with pytest.raises(OptionError, match=message):
        pz.convert(source[0], tmp_path / "out.zarr", SCHEMA, chunks=value)


def test_chunks_that_do_not_fit_the_dataset_are_refused(source, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["convert", str(source[0]), str(tmp_path / "out.zarr"), "--dataset", "rxrx3",
                                       "--chunks", "4,32,32"])
    assert result.exit_code == 1 and "do not divide the 6 channels" in result.output and "1, 2, 3, 6" in result.output
    with pytest.raises(OptionError, match="ome-zarr chooses its own chunks"):
        pz.convert(source[0], tmp_path / "out.zarr", SCHEMA, chunks=256, format="ome-zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_resume_refuses_other_chunks_and_keeps_the_stores_own(source, tmp_path: Path) -> None:
    """A conversion stopped by a bad image (plate 2), then re-run: other --chunks are refused as a different plan;
    without --chunks the store keeps the tiles it was begun with, whatever the schema's default."""
    _, written = source
    src = tmp_path / "src"
    shutil.copytree(source[0], src)
    write_rxrx3_source(src, {("gene-002", 2): PLATES[("gene-002", 2)]}, size=SIZE, corrupt=frozenset({"gene-002/2/AA02_s1_w3.png"}))
    out = tmp_path / "out.zarr"
    with pytest.raises(SourceError, match="AA02_s1_w3"):
        pz.convert(src, out, SCHEMA, chunks="48", workers=1)
    with pytest.raises(StoreError, match=r"chunks: \[1, 1, 6, 48, 48\] before, \[1, 1, 6, 32, 32\] now"):
        pz.convert(src, out, SCHEMA, chunks="32", workers=1, on_error="skip")
    summary = pz.convert(src, out, SCHEMA, workers=1, on_error="skip")
    assert summary.as_dict()["resumed_wells"] == 4  # plate 1, and C05 of plate 2, written before the bad image
    array = zarr.open_array(out, path="gene-001/Plate1/images", mode="r")
    assert array.chunks == (1, 1, 6, 48, 48) and array.shards == (1, 1, 6, 144, 144)
    for w, well in enumerate(PLATES[("gene-001", 1)]):
        assert np.array_equal(array[w, 0], site_pixels(written, "gene-001/Plate1", well))


def test_schema_defaults_tile_only_the_large_images() -> None:
    rxrx3 = StoreSettings.default(load_schema("rxrx3"))
    assert rxrx3.chunks == (1, 1, 6, 256, 256) and rxrx3.shards == (1, 1, 6, 2048, 2048)
    rxrx1 = StoreSettings.default(load_schema("rxrx1"))
    assert rxrx1.chunks == (1, 1, 6, 512, 512) and rxrx1.shards == (1, 2, 6, 512, 512)
    small = StoreSettings.default(SCHEMA)  # tiles longer than the image are cut to it: one chunk per site
    assert small.chunks == (1, 1, 6, SIZE, SIZE) and small.shards == (1, 1, 6, SIZE, SIZE)
    asked = StoreSettings.default(load_schema("rxrx3"), chunks=(0, 0, 0))
    assert asked.chunks == (1, 1, 6, 2048, 2048)
