"""Pixel statistics: every per-image statistic against numpy on the source pixels, the pooled ones against
statistics of the concatenated pixels, read back through plain xarray, zarr attributes and pandas.

Sources: the real RxRx1 sample (8-bit PNGs decoded here by imageio, not by platezarr's decoder, with its
real missing channels), the real CPJUMP1 example fields (16-bit TIFFs, decoded by tifffile), and
generated plates of tiles cut from the real RxRx1 PNGs (tests/sources.py), with B02 as negative control.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
import xarray as xr
import zarr

import converters as pz
from conftest import shared
from converters.stats import STATS, Pool, WellStats, bin_lows, bin_widths, well_stats
from sources import write_metadata, write_rxrx_source
from test_resume import kill_when

CLI = [sys.executable, "-m", "converters.cli"]
PLATES = {("HUVEC-01", 1): ["B02", "B03", "C04"], ("HUVEC-01", 2): ["B02", "D05"], ("RPE-01", 1): ["B02", "C02", "E07"]}
SKIPPED = frozenset({"HUVEC-01/Plate1/B03_s2_w3.png", "RPE-01/Plate1/E07_s1_w1.png", "RPE-01/Plate1/E07_s1_w2.png"})
PERCENTILES = [1, 50, 99]


def expected_stats(pixels: np.ndarray) -> dict[str, float]:
    """What numpy says of one image's (or a concatenation's) pixels."""
    x = pixels.ravel()
    p1, p50, p99 = np.percentile(x, PERCENTILES)
    return {"count": x.size, "sum": float(x.sum(dtype=np.float64)), "sumsq": float(np.sum(x.astype(np.float64) ** 2)),
            "mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(x.min()), "max": float(x.max()),
            "p1": p1, "p50": p50, "p99": p99}


def assert_stats(found: np.ndarray, pixels: np.ndarray, where: str, exact_percentiles: bool = True) -> None:
    """`found` (len(STATS),) against numpy: exact but for std (independent rounding) and, for pooled 16-bit
    pixels, the percentiles (within their histogram bin)."""
    expected = expected_stats(pixels)
    for i, name in enumerate(STATS):
        if name == "std":
            np.testing.assert_allclose(found[i], expected[name], rtol=1e-12, err_msg=f"{where} {name}")
        elif name in ("p1", "p50", "p99") and not exact_percentiles:
            assert abs(found[i] - expected[name]) <= max(1.0, expected[name] / 128), (where, name, found[i], expected[name])
        elif name == "sumsq":
            np.testing.assert_allclose(found[i], expected[name], rtol=1e-15, err_msg=f"{where} {name}")
        else:
            assert found[i] == expected[name], (where, name, found[i], expected[name])


@pytest.fixture(scope="module")
def rxrx1_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = shared("rxrx1")
    out = tmp_path_factory.mktemp("stats") / "rxrx1.zarr"
    pz.convert(base / "images", out, "rxrx1", base / "metadata.csv", workers=2)
    return out


def rxrx1_sources(base: Path) -> dict[tuple[str, str, str, int, int], np.ndarray]:
    """{(experiment, plate group, well, site, channel number): pixels} of the real sample, decoded by imageio."""
    found = {}
    for path in sorted((base / "images").rglob("*.png")):
        experiment, plate = path.parts[-3], path.parts[-2]
        well, site, channel = path.stem.split("_")
        found[(experiment, plate, well, int(site[1:]), int(channel[1:]))] = iio.imread(path)
    return found


def test_every_image_statistic_of_the_real_rxrx1_sample_equals_numpy(rxrx1_store: Path) -> None:
    sources = rxrx1_sources(shared("rxrx1"))
    root = zarr.open_group(rxrx1_store, mode="r")
    checked = missing = 0
    for group in ("HUVEC-01/Plate1", "HUVEC-01/Plate4", "RPE-01/Plate2", "HEPG2-01/Plate1"):
        ds = xr.open_zarr(rxrx1_store, group=group)
        experiment, plate = group.split("/")
        for site in (1, 2):
            for channel in range(1, 7):
                found = ds["pixel_stats"].sel(well="B02", site=site, channel=f"w{channel}").values
                pixels = sources.get((experiment, plate, "B02", site, channel))
                if pixels is None:  # site 2 has only w1..w4 in the real sample
                    assert np.isnan(found).all() and not ds["present"].sel(
                        well="B02", site=site, channel=f"w{channel}").values.item()
                    missing += 1
                    continue
                assert_stats(found, pixels, f"{group} s{site} w{channel}")
                checked += 1
        assert list(ds["stat"].values) == list(STATS)
        assert root[group].attrs["pixel_stats"]["channels"] == [f"w{c}" for c in range(1, 7)]
    assert checked == 4 * 10 and missing == 4 * 2


def test_pooled_statistics_of_the_real_rxrx1_sample_equal_those_of_the_concatenated_pixels(rxrx1_store: Path) -> None:
    sources = rxrx1_sources(shared("rxrx1"))
    root = zarr.open_group(rxrx1_store, mode="r")
    scopes = {group: [k for k in sources if f"{k[0]}/{k[1]}" == group] for group in
              [f"{e}/{p}" for e, p in sorted({(k[0], k[1]) for k in sources})]}
    for experiment in {k[0] for k in sources}:
        scopes[experiment] = [k for k in sources if k[0] == experiment]
    scopes[""] = list(sources)
    for scope, keys in scopes.items():
        attrs = root.attrs["platezarr"]["pixel_stats"] if scope == "" else root[scope].attrs["pixel_stats"]
        for channel in range(1, 7):
            pixels = np.concatenate([sources[k].ravel() for k in keys if k[4] == channel])
            found = np.array([attrs["all"][name][channel - 1] for name in STATS], dtype=np.float64)
            assert_stats(found, pixels, f"{scope or 'store'} w{channel}")
            # every well of the sample is B02, RxRx1's negative control: the control pool is the same pixels
            controls = np.array([attrs["negative_controls"][name][channel - 1] for name in STATS], dtype=np.float64)
            assert_stats(controls, pixels, f"{scope or 'store'} controls w{channel}")
        assert attrs["negative_control_wells"]["column"] == "well_type"
    plate = xr.open_zarr(rxrx1_store, group="RPE-01/Plate3")
    attrs = root["RPE-01/Plate3"].attrs["pixel_stats"]
    np.testing.assert_array_equal(plate["plate_stats"].sel(pool="all", channel="w2").values,
                                  [attrs["all"][name][1] for name in STATS])


def test_index_columns_and_pixel_stats_table_hold_each_sample(rxrx1_store: Path, tmp_path: Path) -> None:
    sources = rxrx1_sources(shared("rxrx1"))
    index = pz.open_index(rxrx1_store).to_dataframe()
    assert len(index) == 20
    for row in index.itertuples():
        for channel in range(1, 7):
            pixels = sources.get((row.experiment, f"Plate{row.plate}", row.well, row.site, channel))
            mean = getattr(row, f"mean_w{channel}")
            assert np.isnan(mean) if pixels is None else mean == np.mean(pixels)
            if pixels is not None:
                assert getattr(row, f"p99_w{channel}") == np.percentile(pixels, 99)
    table_path = tmp_path / "pixel_stats.csv"
    result = subprocess.run([*CLI, "stats", str(rxrx1_store), "--table", str(table_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "already has pixel statistics" in result.stdout and "120 rows" in result.stdout
    table = pd.read_csv(table_path)
    assert list(table.columns[:11]) == ["id_code", "experiment", "plate", "well", "site", "channel", "mean", "std",
                                        "median", "min", "max"]
    assert len(table) == 20 * 6
    for row in table.itertuples():
        pixels = sources.get((row.experiment, f"Plate{row.plate}", row.well, row.site, row.channel))
        assert row.id_code == f"{row.experiment}_{row.plate}_{row.well}"
        if pixels is None:
            assert np.isnan(row.mean) and not row.present
        else:
            assert (row.mean, row.median, row.min, row.max) == (np.mean(pixels), np.median(pixels), pixels.min(), pixels.max())
            np.testing.assert_allclose(row.std, np.std(pixels), rtol=1e-12)
    parquet = pd.read_parquet(pz.compute_stats(rxrx1_store, tmp_path / "t.parquet")["table"])
    pd.testing.assert_frame_equal(parquet, pz.pixel_stats_table(rxrx1_store))


def test_real_cpjump1_uint16_fields_exact_per_image_and_within_a_bin_pooled(tmp_path: Path) -> None:
    images = shared("cpjump1", "example_images")
    plate_map = shared("cpjump1", "metadata", "cpjump1_metadata.csv")
    out = tmp_path / "cp.zarr"
    pz.convert(images, out, metadata=plate_map, experiment="2020_11_04_CPJUMP1", plate="BR00117010")
    group = "2020_11_04_CPJUMP1/BR00117010"
    ds = xr.open_zarr(out, group=group)
    by_channel: dict[int, list[np.ndarray]] = {}
    controls: dict[int, list[np.ndarray]] = {}
    negcon = set(ds["well"].values[ds["Metadata_control_type"].values == "negcon"])
    for tiff in sorted(images.rglob("*.tiff")):
        row, column, channel = int(tiff.name[1:3]), int(tiff.name[4:6]), int(tiff.name.split("-ch")[1][0])
        well = f"{'ABCDEFGHIJKLMNOP'[row - 1]}{column:02d}"
        pixels = tifffile.imread(tiff)
        assert pixels.dtype == np.uint16
        assert_stats(ds["pixel_stats"].sel(well=well, site=5, channel=f"ch{channel}").values, pixels, tiff.name)
        by_channel.setdefault(channel, []).append(pixels.ravel())
        if well in negcon:
            controls.setdefault(channel, []).append(pixels.ravel())
    assert negcon & {"D14", "D08", "L09"}, "the plate map marks one of the example wells negcon"
    for channel, parts in by_channel.items():
        pooled = ds["plate_stats"].sel(pool="all", channel=f"ch{channel}").values
        assert_stats(pooled, np.concatenate(parts), f"ch{channel} pooled", exact_percentiles=False)
        pooled = ds["plate_stats"].sel(pool="negative_controls", channel=f"ch{channel}").values
        assert_stats(pooled, np.concatenate(controls[channel]), f"ch{channel} controls", exact_percentiles=False)
    assert np.isnan(ds["pixel_stats"].sel(well="A01").values).all()  # a well of the plate map with no image


def test_16_bit_histogram_bins_and_pooled_percentiles_of_values_below_256_are_exact() -> None:
    lows = bin_lows(np.dtype("uint16"))
    widths = bin_widths(lows, np.dtype("uint16"))
    assert len(lows) == 1280 and lows[255] == 255 and lows[256] == 256 and widths[-1] == 256
    assert (widths[256:] <= lows[256:] / 128).all() and widths.sum() == 65536
    assert len(bin_lows(np.dtype("uint8"))) == 256
    rng = np.random.default_rng(3)
    block = rng.integers(0, 256, size=(2, 3, 40, 50)).astype(np.uint16)
    present = np.ones((2, 3), dtype=bool)
    stats = well_stats(block, present)
    pool = Pool.empty(3, len(lows))
    pool.add(stats)
    summary = pool.summary(np.dtype("uint16"))
    for c in range(3):
        assert_stats(summary[c], block[:, c], f"channel {c}")


def test_well_stats_survive_the_completion_record_exactly() -> None:
    rng = np.random.default_rng(1)
    block = rng.integers(0, 65536, size=(3, 2, 30, 20)).astype(np.uint16)
    present = np.array([[True, False], [True, True], [False, False]])
    stats = well_stats(block, present)
    again = WellStats.from_record(json.loads(json.dumps(stats.record())))
    np.testing.assert_array_equal(again.images, stats.images)
    np.testing.assert_array_equal(again.histogram, stats.histogram)
    assert np.isnan(stats.images[0, 1]).all() and not np.isnan(stats.images[0, 0]).any()
    assert len(json.dumps(stats.record())) < 25_000  # 1,280 bins per channel, sparse: a small record


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three plates of 128x128 tiles of the real RxRx1 PNGs with three images left out, and RxRx1 metadata
    (B02 the negative control of each plate)."""
    root = tmp_path_factory.mktemp("generated")
    written = write_rxrx_source(root / "images", PLATES, size=128, skip=SKIPPED)
    write_metadata(root / "metadata.csv", PLATES)
    return root, written


def convert_generated(root: Path, out: Path, **options: object) -> None:
    pz.convert(root / "images", out, "rxrx1_demo", root / "metadata.csv", **options)


def test_generated_plates_pool_controls_experiments_and_the_store(generated, tmp_path: Path) -> None:
    root, written = generated
    out = tmp_path / "g.zarr"
    convert_generated(root, out, workers=2)
    store = zarr.open_group(out, mode="r")

    def pixels(select) -> dict[int, np.ndarray]:
        keys = [k for k in written if select(k)]
        return {c: np.concatenate([written[k].ravel() for k in keys if k.endswith(f"_w{c}.png")]) for c in range(1, 7)}

    scopes = {
        ("HUVEC-01/Plate1", "all"): lambda k: k.startswith("HUVEC-01/Plate1/"),
        ("HUVEC-01/Plate1", "negative_controls"): lambda k: k.startswith("HUVEC-01/Plate1/B02"),
        ("RPE-01/Plate1", "negative_controls"): lambda k: k.startswith("RPE-01/Plate1/B02"),
        ("HUVEC-01", "all"): lambda k: k.startswith("HUVEC-01/"),
        ("HUVEC-01", "negative_controls"): lambda k: k.startswith("HUVEC-01/") and "/B02_" in k,
        ("", "all"): lambda k: True,
        ("", "negative_controls"): lambda k: "/B02_" in k,
    }
    for (scope, pool), select in scopes.items():
        attrs = store.attrs["platezarr"]["pixel_stats"] if scope == "" else store[scope].attrs["pixel_stats"]
        for channel, values in pixels(select).items():
            found = np.array([attrs[pool][name][channel - 1] for name in STATS], dtype=np.float64)
            assert_stats(found, values, f"{scope} {pool} w{channel}")
    assert store["HUVEC-01"].attrs["pixel_stats"]["negative_control_wells"]["wells"] == 2
    ds = xr.open_zarr(out, group="RPE-01/Plate1")
    assert np.isnan(ds["pixel_stats"].sel(well="E07", site=1, channel="w1", stat="mean").values)
    hist = ds["plate_histogram"].sel(pool="all").values
    assert (hist.sum(axis=1) == ds["plate_stats"].sel(pool="all", stat="count").values).all()


def strip_stats(out: Path, index_columns: bool = True) -> None:
    """Make `out` a store as platezarr wrote it before statistics: no statistic arrays, attributes or (unless
    `index_columns` is False) index columns."""
    root = zarr.open_group(out, mode="r+")
    for experiment in [e for e, _ in root.groups() if e != "index"]:
        group = root[experiment]
        for plate, node in list(group.groups()):
            for name in ("pixel_stats", "plate_stats", "plate_histogram", "stat", "pool", "bin_low"):
                del node[name]
            node.attrs.put({k: v for k, v in node.attrs.items() if k != "pixel_stats"})
        group.attrs.put({k: v for k, v in group.attrs.items() if k != "pixel_stats"})
    index = root["index"]
    if index_columns:
        stats = ("mean", "std", "min", "max", "p1", "p50", "p99")
        for name in [n for n, _ in index.arrays() if n.split("_")[0] in stats]:
            del index[name]
    zarr.consolidate_metadata(out, path="index")
    attrs = dict(root.attrs)
    attrs["platezarr"] = {k: v for k, v in attrs["platezarr"].items() if k != "pixel_stats"}
    root.attrs.put(attrs)
    zarr.consolidate_metadata(out)


def stat_arrays(out: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(out, mode="r")
    found = {}
    for group in ("HUVEC-01/Plate1", "HUVEC-01/Plate2", "RPE-01/Plate1"):
        for name in ("pixel_stats", "plate_stats", "plate_histogram"):
            found[f"{group}/{name}"] = root[f"{group}/{name}"][...]
        found[f"{group}/attrs"] = np.array(json.dumps(root[group].attrs["pixel_stats"], sort_keys=True))
    found["root"] = np.array(json.dumps(root.attrs["platezarr"]["pixel_stats"], sort_keys=True))
    index = pz.open_index(out).to_dataframe()
    for name in ("mean_w3", "p1_w6", "max_w2"):
        found[f"index/{name}"] = index[name].to_numpy()
    return found


def test_stats_command_adds_the_same_statistics_to_a_store_made_without_them(generated, tmp_path: Path) -> None:
    root, _ = generated
    fresh, old = tmp_path / "fresh.zarr", tmp_path / "old.zarr"
    convert_generated(root, fresh, workers=2)
    convert_generated(root, old, workers=2)
    strip_stats(old)
    assert "pixel_stats" not in xr.open_zarr(old, group="HUVEC-01/Plate1")
    with pytest.raises(pz.PlatezarrError, match="platezarr stats"):
        pz.SiteDataset(old, normalize="plate")
    result = subprocess.run([*CLI, "stats", str(old), "--workers", "2", "--no-progress"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "measured 8 wells" in result.stdout
    expected, found = stat_arrays(fresh), stat_arrays(old)
    for key in expected:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)
    assert not (old / "_platezarr" / "stats").exists()
    assert pz.SiteDataset(old, normalize="plate")[0][0].dtype == np.float32


def test_stats_replaces_index_columns_left_by_a_run_stopped_before_its_end(generated, tmp_path: Path) -> None:
    """As a `platezarr stats` stopped after writing the index and before the root: the index holds statistics
    columns (here zeros) while the store has no statistics; the next run writes them again, each once."""
    root, _ = generated
    fresh, old = tmp_path / "fresh.zarr", tmp_path / "old.zarr"
    convert_generated(root, fresh, workers=1)
    convert_generated(root, old, workers=1)
    strip_stats(old, index_columns=False)
    index = zarr.open_group(old, mode="r+")["index"]
    for name in ("mean_w3", "p1_w6", "max_w2"):
        index[name][...] = 0
    assert pz.compute_stats(old)["computed"]
    expected, found = stat_arrays(fresh), stat_arrays(old)
    for key in expected:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)
    assert sorted(pz.open_index(old).data_vars) == sorted(pz.open_index(fresh).data_vars)
    assert sorted(pz.open_index(old).coords) == sorted(pz.open_index(fresh).coords)


def test_stats_command_on_a_dask_cluster(generated, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    root, _ = generated
    fresh, old = tmp_path / "fresh.zarr", tmp_path / "old.zarr"
    convert_generated(root, fresh, workers=1)
    convert_generated(root, old, workers=1)
    strip_stats(old)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = pz.compute_stats(old, scheduler=cluster.scheduler_address)
    assert report["computed"] and report["wells"] == 8
    expected, found = stat_arrays(fresh), stat_arrays(old)
    for key in expected:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)


def test_stats_command_resumes_after_sigkill(tmp_path: Path) -> None:
    plates = {(f"HUVEC-{e:02d}", p): ["B02", "B03", "C02", "C03"] for e in range(1, 6) for p in (1, 2, 3)}
    written = write_rxrx_source(tmp_path / "images", plates, size=128)
    write_metadata(tmp_path / "metadata.csv", plates)
    fresh, old = tmp_path / "fresh.zarr", tmp_path / "old.zarr"
    for out in (fresh, old):
        pz.convert(tmp_path / "images", out, "rxrx1_demo", tmp_path / "metadata.csv", workers=2)
    strip_stats(old)
    records = old / "_platezarr" / "stats"
    cmd = [*CLI, "stats", str(old), "--workers", "1", "--no-progress", "--json"]
    assert kill_when(cmd, lambda: records.exists() and len(list(records.rglob("*.json"))) >= 5)
    assert "pixel_stats" not in zarr.open_group(old, mode="r").attrs["platezarr"]  # still readable, no statistics
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["wells"] == 60 and 5 <= report["resumed_wells"] < 60
    a, b = zarr.open_group(fresh, mode="r"), zarr.open_group(old, mode="r")
    for group in ("HUVEC-01/Plate1", "HUVEC-05/Plate3"):
        np.testing.assert_array_equal(b[f"{group}/pixel_stats"][...], a[f"{group}/pixel_stats"][...])
    assert b.attrs["platezarr"]["pixel_stats"] == a.attrs["platezarr"]["pixel_stats"]
    assert len(written) == 60 * 12


def test_a_resumed_conversion_keeps_the_statistics_of_the_wells_it_had_written(tmp_path: Path) -> None:
    plates = {(f"HUVEC-{e:02d}", p): ["B02", "B03", "C02", "C03"] for e in range(1, 6) for p in (1, 2, 3)}
    write_rxrx_source(tmp_path / "images", plates, size=128)
    write_metadata(tmp_path / "metadata.csv", plates)
    fresh, resumed = tmp_path / "fresh.zarr", tmp_path / "resumed.zarr"
    pz.convert(tmp_path / "images", fresh, "rxrx1_demo", tmp_path / "metadata.csv", workers=2)
    cmd = [*CLI, "convert", str(tmp_path / "images"), str(resumed), "--dataset", "rxrx1_demo", "--metadata",
           str(tmp_path / "metadata.csv"), "--workers", "1", "--no-progress", "--json"]
    wells = resumed / "_platezarr" / "wells"
    assert kill_when(cmd, lambda: wells.exists() and len(list(wells.rglob("*.json"))) >= 5)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resumed_wells"] >= 5
    a, b = zarr.open_group(fresh, mode="r"), zarr.open_group(resumed, mode="r")
    for group in ("HUVEC-01/Plate1", "HUVEC-03/Plate2", "HUVEC-05/Plate3"):
        for name in ("pixel_stats", "plate_stats", "plate_histogram"):
            np.testing.assert_array_equal(b[f"{group}/{name}"][...], a[f"{group}/{name}"][...])
    assert b.attrs["platezarr"]["pixel_stats"] == a.attrs["platezarr"]["pixel_stats"]


def test_stats_command_errors(generated, tmp_path: Path) -> None:
    root, _ = generated
    out = tmp_path / "g.zarr"
    convert_generated(root, out, workers=1)
    result = subprocess.run([*CLI, "stats", str(out), "--table", str(tmp_path / "t.xlsx")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "error:" in result.stderr and ".csv or .parquet" in result.stderr
    result = subprocess.run([*CLI, "stats", str(tmp_path / "nothing.zarr")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "no Zarr store here" in result.stderr


def test_a_conversion_resumed_from_records_without_statistics_finishes_without_them(tmp_path: Path, caplog) -> None:
    """Records written by a platezarr that computed no statistics (simulated: their `stats` removed after a kill)
    leave the store without any, with a warning, rather than with pools of part of the wells."""
    plates = {(f"HUVEC-{e:02d}", p): ["B02", "B03", "C02", "C03"] for e in range(1, 6) for p in (1, 2, 3)}
    write_rxrx_source(tmp_path / "images", plates, size=128)
    out = tmp_path / "o.zarr"
    cmd = [*CLI, "convert", str(tmp_path / "images"), str(out), "--dataset", "rxrx1_demo", "--workers", "1",
           "--no-progress"]
    wells = out / "_platezarr" / "wells"
    assert kill_when(cmd, lambda: wells.exists() and len(list(wells.rglob("*.json"))) >= 5)
    for record in wells.rglob("*.json"):
        data = json.loads(record.read_text())
        data.pop("stats", None)
        record.write_text(json.dumps(data))
    pz.convert(tmp_path / "images", out, "rxrx1_demo", workers=2)
    assert "without pixel statistics" in caplog.text and f"platezarr stats {out}" in caplog.text
    root = zarr.open_group(out, mode="r")
    assert "pixel_stats" not in root.attrs["platezarr"] and "pixel_stats" not in root["HUVEC-01/Plate1"]
    assert pz.compute_stats(out)["computed"]
    assert zarr.open_group(out, mode="r").attrs["platezarr"]["pixel_stats"]["all"]["count"] == [60 * 2 * 128 * 128] * 6


def test_percentiles_from_histograms_interpolate_as_numpy_does() -> None:
    """Few, spread values (so neighbouring order statistics differ and the interpolation shows), empty rows among
    them, and percentiles other than the stored ones."""
    from converters.stats import percentiles

    rng = np.random.default_rng(5)
    samples = [rng.integers(0, 65536, int(rng.integers(1, 400))) if k not in (0, 5, 12) else np.array([], np.int64)
               for k in range(15)]
    hist = np.stack([np.bincount(s, minlength=65536) for s in samples])
    qs = (1.0, 50.0, 99.0, 12.5, 99.9)
    found = percentiles(hist, np.arange(65536), np.ones(65536, dtype=np.int64), qs)
    expected = [np.percentile(s, qs) if len(s) else [np.nan] * len(qs) for s in samples]
    np.testing.assert_array_equal(found, np.array(expected))


def test_stats_and_pictures_of_a_store_in_a_bucket(s3, generated, tmp_path: Path) -> None:
    """A store made without statistics, in a bucket of the local S3 server (moto on 127.0.0.1): `platezarr stats`
    measures it there, and a site and a plate draw as from the same store on disk."""
    import boto3

    from test_buckets import upload

    root, _ = generated
    fresh, old = tmp_path / "fresh.zarr", tmp_path / "old.zarr"
    convert_generated(root, fresh, workers=2)
    convert_generated(root, old, workers=2)
    strip_stats(old)
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="stats-out")
    url = "s3://stats-out/old.zarr"
    upload(old, url)
    result = subprocess.run([*CLI, "stats", url, "--table", str(tmp_path / "t.csv"), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    options = {"endpoint_url": s3.endpoint}
    for group in ("HUVEC-01/Plate1", "RPE-01/Plate1"):
        remote = xr.open_zarr(url, group=group, storage_options=options)
        local = xr.open_zarr(fresh, group=group)
        for name in ("pixel_stats", "plate_stats", "plate_histogram"):
            np.testing.assert_array_equal(remote[name].values, local[name].values)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), pz.pixel_stats_table(fresh), check_dtype=False)
    np.testing.assert_array_equal(pz.site_rgb(url, "RPE-01/Plate1", "C02", 2), pz.site_rgb(fresh, "RPE-01/Plate1", "C02", 2))
    np.testing.assert_array_equal(pz.plate_montage(url, "HUVEC-01/Plate2"), pz.plate_montage(fresh, "HUVEC-01/Plate2"))
