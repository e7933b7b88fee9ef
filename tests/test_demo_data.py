"""Tests for the synthetic RxRx1-layout demo dataset (converters.demo_data)."""

import csv
import itertools
import re
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from converters.demo_data import METADATA_COLUMNS, MISSING_IMAGE, write_demo_dataset

EXPERIMENTS, PLATES, SITES = ("HUVEC-01", "RPE-01"), (1, 2), (1, 2)
WELLS = ("B02", "B03", "C02", "C03")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    return (root, *write_demo_dataset(root))


def read_png(path: Path) -> np.ndarray:
    return imagecodecs.png_decode(path.read_bytes())


def read_rows(metadata_csv: Path) -> tuple[list[str], list[dict[str, str]]]:
    with metadata_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_returns_paths_under_root(demo):
    root, images_dir, metadata_csv = demo
    assert images_dir == root / "images" and images_dir.is_dir()
    assert metadata_csv == root / "metadata.csv" and metadata_csv.is_file()


def test_layout_and_count(demo):
    _, images_dir, _ = demo
    expected = {
        Path(e, f"Plate{p}", f"{w}_s{s}_w{c}.png")
        for e, p, w, s, c in itertools.product(EXPERIMENTS, PLATES, WELLS, SITES, range(1, 7))
    }
    found = {p.relative_to(images_dir) for p in images_dir.rglob("*") if p.is_file()}
    assert len(found) == 191
    assert found == expected - {MISSING_IMAGE}


def test_missing_image(demo):
    _, images_dir, _ = demo
    assert MISSING_IMAGE == Path("RPE-01/Plate2/C03_s2_w6.png")
    assert not (images_dir / MISSING_IMAGE).exists()
    for channel in range(1, 6):  # the rest of that site is present
        assert (images_dir / f"RPE-01/Plate2/C03_s2_w{channel}.png").is_file()


def test_images_decode_with_content(demo):
    _, images_dir, _ = demo
    for path in images_dir.rglob("*.png"):
        img = read_png(path)
        assert img.dtype == np.uint8 and img.shape == (128, 128), path
        assert img.std() > 5, path
        assert 0 < np.median(img) < 40, path  # dark background, cells brighter


def test_channels_differ(demo):
    _, images_dir, _ = demo
    site = images_dir / "HUVEC-01/Plate1"
    chans = np.stack([read_png(site / f"B03_s1_w{c}.png") for c in range(1, 7)])
    flat = chans.reshape(6, -1).astype(np.float64)
    corr = np.corrcoef(flat)
    assert np.all(corr[~np.eye(6, dtype=bool)] < 0.95)
    # Nuclei (w1) are bright where the actin cortex (w3) is not.
    nuclei = chans[0] > np.percentile(chans[0], 97)
    assert chans[0][nuclei].mean() > 2 * chans[2][nuclei].mean()


def test_sites_differ(demo):
    _, images_dir, _ = demo
    a = read_png(images_dir / "HUVEC-01/Plate1/B03_s1_w1.png")
    b = read_png(images_dir / "HUVEC-01/Plate1/B03_s2_w1.png")
    assert not np.array_equal(a, b)


def test_metadata(demo):
    _, _, metadata_csv = demo
    assert metadata_csv.read_text().splitlines()[0] == (
        "site_id,well_id,cell_type,dataset,experiment,plate,well,site,well_type,sirna,sirna_id"
    )
    header, rows = read_rows(metadata_csv)
    assert tuple(header) == METADATA_COLUMNS
    assert len(rows) == 32
    assert [r["site_id"] for r in rows] == [
        f"{e}_{p}_{w}_{s}" for e, p, w, s in itertools.product(EXPERIMENTS, PLATES, WELLS, SITES)
    ]
    assert rows[0] == {
        "site_id": "HUVEC-01_1_B02_1", "well_id": "HUVEC-01_1_B02", "cell_type": "HUVEC",
        "dataset": "train", "experiment": "HUVEC-01", "plate": "1", "well": "B02", "site": "1",
        "well_type": "negative_control", "sirna": "EMPTY", "sirna_id": "1138",
    }
    pos = next(r for r in rows if r["site_id"] == "RPE-01_2_C02_2")
    assert pos == {
        "site_id": "RPE-01_2_C02_2", "well_id": "RPE-01_2_C02", "cell_type": "RPE",
        "dataset": "test", "experiment": "RPE-01", "plate": "2", "well": "C02", "site": "2",
        "well_type": "positive_control", "sirna": "s501307", "sirna_id": "1124",
    }
    # The missing image's site still has its metadata row.
    assert any(r["site_id"] == "RPE-01_2_C03_2" for r in rows)


def test_treatment_sirnas(demo):
    _, _, metadata_csv = demo
    _, rows = read_rows(metadata_csv)
    treatments = [r for r in rows if r["well"] in ("B03", "C03")]
    assert len(treatments) == 16
    by_well: dict[str, set[tuple[str, str]]] = {}
    for r in treatments:
        assert r["well_type"] == "treatment"
        assert re.fullmatch(r"s\d{6}", r["sirna"])
        assert 0 <= int(r["sirna_id"]) <= 1107
        by_well.setdefault(r["well_id"], set()).add((r["sirna"], r["sirna_id"]))
    assert all(len(v) == 1 for v in by_well.values())  # sites of a well share the siRNA
    names_by_id: dict[str, set[str]] = {}
    for (name, sid), in by_well.values():
        names_by_id.setdefault(sid, set()).add(name)
    assert all(len(v) == 1 for v in names_by_id.values())  # one name per sirna_id


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(demo, tmp_path):
    root, _, _ = demo
    write_demo_dataset(tmp_path / "same")
    write_demo_dataset(tmp_path / "other", seed=1)
    assert snapshot(tmp_path / "same") == snapshot(root)
    other = snapshot(tmp_path / "other")
    assert other.keys() == snapshot(root).keys()
    assert other != snapshot(root)


def test_site_independent_of_selection(demo, tmp_path):
    """A site's pixels depend only on seed and site, not on which other sites are written."""
    _, images_dir, _ = demo
    sub_images, _ = write_demo_dataset(
        tmp_path, experiments=("RPE-01",), plates=(2,), wells=("C03",)
    )
    for path in sub_images.rglob("*.png"):
        assert path.read_bytes() == (images_dir / path.relative_to(sub_images)).read_bytes()


def test_custom_arguments(tmp_path):
    images_dir, metadata_csv = write_demo_dataset(
        tmp_path, experiments=("U2OS-03",), plates=(3,), wells=("D05",), sites=(1,), size=64, seed=7
    )
    pngs = sorted(images_dir.rglob("*.png"))
    assert [p.relative_to(images_dir).as_posix() for p in pngs] == [
        f"U2OS-03/Plate3/D05_s1_w{c}.png" for c in range(1, 7)
    ]
    assert all(read_png(p).shape == (64, 64) for p in pngs)
    _, rows = read_rows(metadata_csv)
    assert len(rows) == 1
    assert rows[0]["cell_type"] == "U2OS" and rows[0]["dataset"] == "test"
    assert rows[0]["well_type"] == "treatment"


def test_fast(tmp_path):
    start = time.perf_counter()
    write_demo_dataset(tmp_path)
    assert time.perf_counter() - start < 2.0
