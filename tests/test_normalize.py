"""SiteDataset's normalization and crops against numpy on the same pixels.

The source: three plates in two experiments of 96x96 tiles cut from the real RxRx1 PNGs (tests/sources.py),
three images left out, with RxRx1 metadata (B02 the negative control of each plate). The expected
statistics are numpy's over the source pixels of each scope, not the store's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import converters as pz
from converters.schema import DatasetSchema, load_schema
from sources import write_metadata, write_rxrx_source

PLATES = {("HUVEC-01", 1): ["B02", "B03", "C04"], ("HUVEC-01", 2): ["B02", "D05"], ("RPE-01", 1): ["C02", "E07"]}
SKIPPED = frozenset({"HUVEC-01/Plate1/B03_s2_w3.png", "RPE-01/Plate1/E07_s1_w1.png"})
SIZE = 96


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("normalize")
    written = write_rxrx_source(root / "images", PLATES, size=SIZE, skip=SKIPPED)
    write_metadata(root / "metadata.csv", PLATES)
    out = root / "s.zarr"
    pz.convert(root / "images", out, _small_schema(), root / "metadata.csv", workers=2)
    return out, written


def _small_schema() -> DatasetSchema:
    return dataclasses.replace(load_schema("rxrx1"), image_shape=(SIZE, SIZE))


def source_site(written: dict[str, np.ndarray], meta: dict) -> np.ndarray:
    """(6, y, x) float64 source pixels of a sample (zeros for a missing image), from its metadata."""
    prefix = f"{meta['experiment']}/Plate{meta['plate']}/{meta['well']}_s{meta['site']}"
    return np.stack([written.get(f"{prefix}_w{c}.png", np.zeros((SIZE, SIZE), np.uint8)) for c in range(1, 7)]
                    ).astype(np.float64)


def pooled(written: dict[str, np.ndarray], select) -> tuple[np.ndarray, np.ndarray]:
    """numpy's per-channel mean and std of every source image whose name `select` accepts."""
    means, stds = [], []
    for c in range(1, 7):
        values = np.concatenate([v.ravel() for k, v in written.items() if k.endswith(f"_w{c}.png") and select(k)])
        means.append(values.mean())
        stds.append(values.std())
    return np.array(means), np.array(stds)


def expected(written: dict[str, np.ndarray], meta: dict, scope: str) -> np.ndarray:
    pixels = source_site(written, meta)
    plate = f"{meta['experiment']}/Plate{meta['plate']}/"
    if scope == "sample":
        prefix = f"{plate}{meta['well']}_s{meta['site']}_"
        mean, std = np.zeros(6), np.ones(6)
        for c in range(6):
            image = written.get(f"{prefix}w{c + 1}.png")
            if image is not None:  # a missing image stays 0
                mean[c], std[c] = image.mean(), image.std()
    else:
        select = {"plate": lambda k: k.startswith(plate),
                  "plate_controls": lambda k: k.startswith(plate + "B02_"),
                  "experiment": lambda k: k.startswith(f"{meta['experiment']}/"),
                  "global": lambda k: True}[scope]
        mean, std = pooled(written, select)
    return ((pixels - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


@pytest.mark.parametrize("scope", ["sample", "plate", "experiment", "global"])
def test_normalized_sites_equal_numpy(store, scope: str) -> None:
    out, written = store
    ds = pz.SiteDataset(out, normalize=scope)
    assert len(ds) == 14
    for i in range(len(ds)):
        pixels, meta = ds[i]
        assert pixels.dtype == np.float32 and pixels.shape == (6, SIZE, SIZE)
        np.testing.assert_allclose(pixels, expected(written, meta, scope), rtol=2e-6, atol=2e-6, err_msg=f"{i} {meta}")


def test_plate_controls_normalization_uses_each_plates_negative_controls(store) -> None:
    out, written = store
    ds = pz.SiteDataset(out, normalize="plate_controls", where={"experiment": "HUVEC-01"})
    for i in range(len(ds)):
        pixels, meta = ds[i]
        np.testing.assert_allclose(pixels, expected(written, meta, "plate_controls"), rtol=2e-6, atol=2e-6)
    with pytest.raises(pz.PlatezarrError, match="RPE-01/Plate1's negative controls have no pixels"):
        pz.SiteDataset(out, normalize="plate_controls")  # RPE-01/Plate1 has no B02 well


def test_channels_pick_their_own_statistics(store) -> None:
    out, written = store
    ds = pz.SiteDataset(out, normalize="global", channels=["w5", "Hoechst"])
    pixels, meta = ds[3]
    full = expected(written, meta, "global")
    np.testing.assert_allclose(pixels, full[[4, 0]], rtol=2e-6, atol=2e-6)


def test_random_crops_are_fixed_by_seed_and_index(store) -> None:
    out, written = store
    ds = pz.SiteDataset(out, crop=40, seed=7)
    again = pz.SiteDataset(out, crop=40, seed=7)
    other = pz.SiteDataset(out, crop=40, seed=8)
    offsets = set()
    for i in range(len(ds)):
        pixels, meta = ds[i]
        assert pixels.shape == (6, 40, 40) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, again[i][0])
        y, x = (int(v) for v in np.random.default_rng([7, i]).integers(0, [SIZE - 40 + 1, SIZE - 40 + 1]))
        np.testing.assert_array_equal(pixels, source_site(written, meta)[:, y: y + 40, x: x + 40].astype(np.uint8))
        offsets.add((y, x))
    assert len(offsets) > 1
    assert any(not np.array_equal(ds[i][0], other[i][0]) for i in range(len(ds)))
    assert ds.shape == (6, 40, 40)


def test_center_crop_then_normalize(store) -> None:
    out, written = store
    ds = pz.SiteDataset(out, crop=31, crop_mode="center", normalize="plate")
    for i in (0, 5, 13):
        pixels, meta = ds[i]
        start = (SIZE - 31) // 2
        np.testing.assert_allclose(pixels, expected(written, meta, "plate")[:, start: start + 31, start: start + 31],
                                   rtol=2e-6, atol=2e-6)


def test_bad_options_are_refused(store) -> None:
    out, _ = store
    for options, message in [({"normalize": "batch"}, "normalize must be one of"),
                             ({"crop": SIZE + 1}, "does not fit"),
                             ({"crop": 8, "crop_mode": "corner"}, "crop_mode must be one of"),
                             ({"crop": 8, "seed": -1}, "seed must be")]:
        with pytest.raises(pz.PlatezarrError, match=message):
            pz.SiteDataset(out, **options)


def test_a_torch_dataloader_batches_normalized_crops(store) -> None:
    torch = pytest.importorskip("torch")
    out, _ = store
    ds = pz.SiteDataset(out, normalize="sample", crop=32, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda batch: batch)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(ds)
    for k, (pixels, _) in enumerate(item for batch in batches for item in batch):
        np.testing.assert_array_equal(pixels, ds[k][0])
