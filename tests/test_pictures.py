"""Pictures: the site composite against rxrx1-utils' formula on the real RxRx1 sample, the montage's geometry
(well positions, absent and missing wells), the heat map's values, and every PNG decoded at its announced size.

Generated plates are 128x128 tiles cut from the real RxRx1 PNGs (tests/sources.py) in the RxRx1 layout,
converted as `rxrx1_demo` (RxRx1's schema, colours and ranges at 128x128).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import imageio.v3 as iio
import numpy as np
import pytest
import xarray as xr

import converters as pz
from conftest import shared
from converters.pictures import ABSENT, LABEL, MISSING, PlateGrid, show
from sources import write_metadata, write_rxrx_source

CLI = [sys.executable, "-m", "converters.cli"]
# rxrx1-utils (github.com/recursionpharma/rxrx1-utils, rxrx/io.py): RGB_MAP and convert_tensor_to_rgb, as published
RGB_MAP = {
    1: {"rgb": np.array([19, 0, 249]), "range": [0, 51]},
    2: {"rgb": np.array([42, 255, 31]), "range": [0, 107]},
    3: {"rgb": np.array([255, 0, 25]), "range": [0, 64]},
    4: {"rgb": np.array([45, 255, 252]), "range": [0, 191]},
    5: {"rgb": np.array([250, 0, 253]), "range": [0, 89]},
    6: {"rgb": np.array([254, 255, 40]), "range": [0, 191]},
}


def convert_tensor_to_rgb(t: np.ndarray, channels: tuple[int, ...], vmax: int = 255) -> np.ndarray:
    colored_channels = []
    for i, channel in enumerate(channels):
        x = (t[:, :, i] / vmax) / \
            ((RGB_MAP[channel]["range"][1] - RGB_MAP[channel]["range"][0]) / 255) + \
            RGB_MAP[channel]["range"][0] / 255
        x = np.where(x > 1., 1., x)
        x_rgb = np.array(np.outer(x, RGB_MAP[channel]["rgb"]).reshape(t.shape[0], t.shape[1], 3), dtype=int)
        colored_channels.append(x_rgb)
    im = np.array(np.array(colored_channels).sum(axis=0), dtype=int)
    im = np.where(im > 255, 255, im)
    return im


def windowed_rgb(t: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """The same composite with any (low, high) window per channel, written plainly: clip((t - low) / (high - low))."""
    out = np.zeros((*t.shape[1:], 3), dtype=np.int64)
    for c, (low, high) in enumerate(windows):
        x = np.clip((t[c].astype(np.float64) - low) / (high - low), 0, 1)
        out += np.floor(x[..., None] * RGB_MAP[c + 1]["rgb"]).astype(np.int64)
    return np.minimum(out, 255)


@pytest.fixture(scope="module")
def rxrx1_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real sample converted as `platezarr convert` does by default: dataset detected, no metadata table."""
    out = tmp_path_factory.mktemp("pictures") / "rxrx1.zarr"
    return Path(pz.convert(shared("rxrx1", "images"), out).out)


def real_site(plate: str, site: int) -> np.ndarray:
    """(512, 512, 6) of a real B02 site decoded by imageio, zeros for its missing channels, as rxrx1-utils stacks them."""
    folder = shared("rxrx1", "images", "train", *plate.split("/"))
    channels = [folder / f"B02_s{site}_w{c}.png" for c in range(1, 7)]
    return np.stack([iio.imread(p) if p.exists() else np.zeros((512, 512), np.uint8) for p in channels], axis=-1)


@pytest.mark.parametrize("plate", ["HUVEC-01/Plate1", "RPE-01/Plate3", "HEPG2-01/Plate2"])
def test_the_composite_with_fixed_ranges_is_rxrx1_utils_on_the_real_sample(rxrx1_store: Path, plate: str) -> None:
    for site in (1, 2):  # site 2 lacks w5 and w6 in the real sample: zeros, as a missing file
        rgb = pz.site_rgb(rxrx1_store, plate, "B02", site, ranges="fixed")
        assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
        expected = convert_tensor_to_rgb(real_site(plate, site), (1, 2, 3, 4, 5, 6))
        np.testing.assert_array_equal(rgb, expected)
        assert rgb.std() > 10  # cells, not a flat picture


def plate_windows(images: list[np.ndarray], high: float = 99.9) -> np.ndarray:
    """(6, 2): numpy's 50th and `high` percentile of each channel's pixels over (6, y, x) sites (missing images
    given as None channels are left out)."""
    return np.array([np.percentile(np.concatenate([site[c].ravel() for site in images if site[c] is not None]),
                                   [50, high]) for c in range(6)])


def test_the_composite_with_the_plates_percentiles(rxrx1_store: Path) -> None:
    plate = "HUVEC-01/Plate2"
    folder = shared("rxrx1", "images", "train", "HUVEC-01", "Plate2")
    sites = [[iio.imread(folder / f"B02_s{s}_w{c}.png") if (folder / f"B02_s{s}_w{c}.png").exists() else None
              for c in range(1, 7)] for s in (1, 2)]
    windows = plate_windows(sites)
    rgb = pz.site_rgb(rxrx1_store, plate, "B02", 1)
    expected = windowed_rgb(np.moveaxis(real_site(plate, 1), -1, 0), windows)
    differ = rgb.astype(int) != expected
    assert np.abs(rgb.astype(int) - expected).max() <= 1 and differ.mean() < 1e-3  # float rounding at most
    assert (rgb == 255).mean() > 0.001 and (rgb.max(axis=2) < 20).mean() > 0.05  # bright cells on a dark ground


def test_the_grid_draws_each_channel_under_its_label(rxrx1_store: Path) -> None:
    grid = pz.site_grid(rxrx1_store, "HUVEC-01/Plate1", "B02", 1, ranges="fixed")
    label = 20
    assert grid.shape == (2 * (label + 512 + 4), 3 * 516 - 4, 3)
    pixels = real_site("HUVEC-01/Plate1", 1)
    for k in range(6):
        y, x = (k // 3) * (label + 512 + 4), (k % 3) * 516
        tile = grid[y + label: y + label + 512, x: x + 512]
        high = RGB_MAP[k + 1]["range"][1]
        expected = (np.clip(pixels[..., k] / high, 0, 1) * 255).astype(int)
        assert (np.abs(tile[..., 0].astype(int) - expected) <= 1).all()
        assert (tile[..., 0] == tile[..., 1]).all()  # grey
        assert (grid[y: y + label, x: x + 200] == LABEL).all(axis=2).any()


@pytest.fixture(scope="module")
def plate_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """One plate: B02, B03 (site 1 lacks w3), C04, D05 (site 1 has no image: site 2 is shown), O23, and E06, a
    metadata row with no images."""
    root = tmp_path_factory.mktemp("plate")
    wells = ["B02", "B03", "C04", "D05", "O23"]
    skip = {"HUVEC-01/Plate1/B03_s1_w3.png"} | {f"HUVEC-01/Plate1/D05_s1_w{c}.png" for c in range(1, 7)}
    written = write_rxrx_source(root / "images", {("HUVEC-01", 1): wells}, size=128, skip=frozenset(skip))
    write_metadata(root / "metadata.csv", {("HUVEC-01", 1): wells + ["E06"]})
    out = root / "p.zarr"
    pz.convert(root / "images", out, "rxrx1_demo", root / "metadata.csv", workers=2)
    return out, written


def thumbnail(written: dict[str, np.ndarray], well: str, site: int, windows: np.ndarray) -> np.ndarray:
    """64x64 block means (2x2) of the source site, drawn as the composite."""
    t = np.stack([written.get(f"HUVEC-01/Plate1/{well}_s{site}_w{c}.png", np.zeros((128, 128), np.uint8))
                  for c in range(1, 7)]).astype(np.float64)
    small = t.reshape(6, 64, 2, 64, 2).mean(axis=(2, 4))
    return windowed_rgb(small, windows)


def test_the_montage_puts_each_well_at_its_plate_position_and_marks_what_is_missing(plate_store) -> None:
    out, written = plate_store
    montage = pz.plate_montage(out, "HUVEC-01/Plate1")
    grid = PlateGrid(16, 24, 64)
    assert montage.shape == (*grid.size, 3) == (20 + 16 * 66, 28 + 24 * 66, 3)
    sites = sorted({k.rsplit("_", 1)[0] for k in written})
    windows = plate_windows([[written.get(f"{site}_w{c}.png") for c in range(1, 7)] for site in sites], high=99)

    def cell(well: str) -> np.ndarray:
        row, column = "ABCDEFGHIJKLMNOP".index(well[0]), int(well[1:]) - 1
        y, x = grid.origin(row, column)
        return montage[y: y + 64, x: x + 64].astype(int)

    for well, site in (("B02", 1), ("C04", 1), ("O23", 1), ("D05", 2)):
        expected = thumbnail(written, well, site, windows)
        assert np.abs(cell(well) - expected).max() <= 1, well
    inner = cell("B03")[2:-2, 2:-2]
    assert np.abs(inner - thumbnail(written, "B03", 1, windows)[2:-2, 2:-2]).max() <= 1
    assert (cell("B03")[:2] == MISSING).all() and (cell("B03")[:, -2:] == MISSING).all()  # framed: w3 missing
    crossed = cell("E06")
    middle = np.arange(12, 52)
    assert (crossed[middle, middle] == MISSING).all() and (crossed[middle, 63 - middle] == MISSING).all()
    assert (crossed[10, 30] == 0).all() and (crossed[:12] == 0).all() and (crossed[52:] == 0).all()
    for well in ("A01", "P24", "B01", "H12"):
        assert (cell(well) == ABSENT).all(), well
    assert (montage[:20, grid.origin(0, 1)[1]: grid.origin(0, 1)[1] + 64] == LABEL).all(axis=2).any()  # "2"
    assert (montage[grid.origin(1, 0)[0]: grid.origin(1, 0)[0] + 64, :30] == LABEL).all(axis=2).any()  # "B"


def test_the_qc_heat_map_shows_each_wells_statistic(plate_store) -> None:
    out, written = plate_store
    figure = pz.plate_qc_figure(out, "HUVEC-01/Plate1", "mean:w2")
    values = figure.axes[0].images[0].get_array()
    for well in ("B02", "B03", "C04", "D05", "O23"):
        row, column = "ABCDEFGHIJKLMNOP".index(well[0]), int(well[1:]) - 1
        means = [v.mean() for k, v in written.items() if k.startswith(f"HUVEC-01/Plate1/{well}_") and k.endswith("_w2.png")]
        np.testing.assert_allclose(values[row, column], np.mean(means), rtol=1e-12)
    assert values.mask[4, 5] and values.mask[0, 0]  # E06 has no image; A01 is no well of the store
    present = pz.plate_qc_figure(out, "HUVEC-01/Plate1", "present").axes[0].images[0].get_array()
    assert present[1, 2] == 11 / 12 and present[3, 4] == 6 / 12 and present[4, 5] == 0 and present[1, 1] == 1
    assert "mean of w2 (ConA)" in figure.axes[0].get_title()


def test_show_writes_pngs_of_the_size_it_announces(plate_store, tmp_path: Path) -> None:
    out, _ = plate_store
    cases = [
        (["HUVEC-01/Plate1/B02/1"], (128, 128)),
        (["HUVEC-01/Plate1/B02/2", "--grid", "--channels", "w1,ConA"], None),
        (["HUVEC-01/Plate1", "--range", "fixed"], None),
        (["HUVEC-01/Plate1", "--qc", "p99:w4"], None),
        (["HUVEC-01/Plate1", "--qc", "present"], None),
    ]
    for k, (args, size) in enumerate(cases):
        picture = tmp_path / f"p{k}.png"
        result = subprocess.run([*CLI, "show", str(out), *args, "-o", str(picture)], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        decoded = imagecodecs.png_decode(picture.read_bytes())
        height, width = decoded.shape[:2]
        assert result.stdout.strip() == f"wrote {picture} ({width}x{height} pixels)"
        assert decoded.ndim == 3 and decoded.shape[2] == 3
        if size:
            assert (width, height) == size
    site = imagecodecs.png_decode((tmp_path / "p0.png").read_bytes())
    np.testing.assert_array_equal(site, pz.site_rgb(out, "HUVEC-01/Plate1", "B02", 1))


def test_show_errors_name_what_is_wrong(plate_store, tmp_path: Path) -> None:
    out, _ = plate_store
    for args, code, message in [
        (["HUVEC-01/Plate1/Z99/1"], 1, "no well 'Z99'"),
        (["HUVEC-01/Plate9"], 1, "no plate"),
        (["HUVEC-01/Plate1/E06/1"], 1, "has no image"),
        (["HUVEC-01/Plate1", "--qc", "mean"], 1, "STAT:CHANNEL"),
        (["HUVEC-01/Plate1/B02/1", "--channels", "w9"], 1, "unknown channels"),
        (["HUVEC-01"], 1, "EXPERIMENT/PLATE"),
        (["HUVEC-01/Plate1", "--range", "auto"], 2, "Invalid value"),
    ]:
        result = subprocess.run([*CLI, "show", str(out), *args, "-o", str(tmp_path / "x.png")], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == code and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_cpjump1_draws_five_colours_and_leaves_brightfield_out(tmp_path: Path) -> None:
    fields = shared("cpjump1", "example_images", "DMSO")
    out = tmp_path / "cp.zarr"
    pz.convert(fields, out, experiment="2020_11_04_CPJUMP1", plate="BR00117010")
    group = "2020_11_04_CPJUMP1/BR00117010"
    rgb = pz.site_rgb(out, group, "D14", 5)
    assert rgb.shape == (1080, 1080, 3)
    np.testing.assert_array_equal(rgb, pz.site_rgb(out, group, "D14", 5, channels=["ch1", "ch2", "ch3", "ch4", "ch5"]))
    assert not np.array_equal(rgb, pz.site_rgb(out, group, "D14", 5, channels=["ch1", "ch2", "ch3", "ch4", "ch5", "ch6"]))
    with pytest.raises(pz.PlatezarrError, match="no fixed display range"):
        pz.site_rgb(out, group, "D14", 5, ranges="fixed")


def test_demo_writes_a_site_and_a_plate_picture(tmp_path: Path) -> None:
    from converters.demo import run_demo

    demo = run_demo(tmp_path / "demo.zarr")
    site, plate = demo.pictures
    assert (site.name, plate.name) == ("demo-site.png", "demo-plate.png")
    assert imagecodecs.png_decode(site.read_bytes()).shape == (128, 128, 3)
    assert imagecodecs.png_decode(plate.read_bytes()).shape == (*PlateGrid(16, 24, 32).size, 3)
    result = subprocess.run([*CLI, "demo", str(tmp_path / "again.zarr"), "--no-progress"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'again-site.png'}, {tmp_path / 'again-plate.png'}" in result.stdout


def test_show_returns_the_written_file(plate_store, tmp_path: Path) -> None:
    out, _ = plate_store
    path, (width, height) = show(out, "HUVEC-01/Plate1", tmp_path / "m.png")
    assert path.exists() and (height, width) == PlateGrid(16, 24, 64).size


def test_the_montage_of_large_tiled_sites_shows_their_centre(tmp_path: Path) -> None:
    """RxRx3's layout at 1024² (16-bit tiles cut from the real CPJUMP1 fields, tests/sources.py `tile16`), stored in
    the rxrx3 schema's 256² tiles: each well's thumbnail is the central 512² of its site (the only tiles read),
    shrunk, in the plate's display ranges."""
    import dataclasses

    from converters.pictures import MONTAGE_WINDOW, THUMBNAIL_WINDOW, PlateView, composite, shrink
    from converters.schema import load_schema
    from sources import write_rxrx3_source

    written = write_rxrx3_source(tmp_path / "tars", {("gene-001", 1): ["AA02", "AB05"]}, size=1024)
    out = tmp_path / "o.zarr"
    pz.convert(tmp_path / "tars", out, dataclasses.replace(load_schema("rxrx3"), image_shape=(1024, 1024)))
    group = "gene-001/Plate1"
    assert xr.open_zarr(out, group=group)["images"].encoding["chunks"][-2:] == (256, 256)
    montage = pz.plate_montage(out, group)
    view = PlateView.open(out, group)
    picked = view.channels(None)
    ranges = view.ranges("plate", picked, window=THUMBNAIL_WINDOW)
    grid = PlateGrid(32, 48, 64)
    start = (1024 - MONTAGE_WINDOW) // 2
    for well, (row, column) in (("AA02", (26, 1)), ("AB05", (27, 4))):
        site = np.stack([written[f"gene-001/1/{well}_s1_w{c}.png"] for c in range(1, 7)])
        centre = site[:, start:start + MONTAGE_WINDOW, start:start + MONTAGE_WINDOW]
        expected = composite(shrink(centre[picked], MONTAGE_WINDOW // 64, 64), view.colors(picked), ranges, view.vmax)
        y, x = grid.origin(row, column)
        np.testing.assert_array_equal(montage[y: y + 64, x: x + 64], expected, err_msg=well)
