"""Synthetic demo dataset in the RxRx1 (2020 release) layout, drawn at run time.

Lets the converters, tests and docs run end to end without downloading the real
RxRx1 release (~46 GB): same directory tree, file names, 8-bit grayscale PNGs and
``metadata.csv`` schema, but small images of procedurally drawn cartoon cells.
Nothing is fetched or copied; the output is a pure function of the arguments.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import imagecodecs
import numpy as np

METADATA_COLUMNS = ("site_id", "well_id", "cell_type", "dataset", "experiment", "plate",
                    "well", "site", "well_type", "sirna", "sirna_id")
#: Deliberately absent image (relative to ``images/``) that exercises missing-file handling.
MISSING_IMAGE = Path("RPE-01/Plate2/C03_s2_w6.png")
N_CHANNELS = 6  # Hoechst, ConA, actin, Syto14, MitoTracker, WGA
N_TREATMENT_SIRNAS = 1108  # treatment sirna_id range is 0..1107, as in RxRx1
CONTROL_WELLS = {"B02": ("negative_control", "EMPTY", 1138),
                 "C02": ("positive_control", "s501307", 1124)}
# Peak intensity (8-bit DN) per channel, so channels differ in brightness as in real data.
CHANNEL_GAIN = np.array([210, 110, 150, 140, 180, 170], dtype=np.float32)[:, None, None]
BACKGROUND = 8.0


def _rng(seed: int, key: str) -> np.random.Generator:
    """Independent stream per key, so one site's pixels don't depend on which others are written."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _box_blur(img: np.ndarray, r: int = 1) -> np.ndarray:
    """Separable (2r+1)-box blur over the last two axes with edge padding (no scipy needed)."""
    k, (h, w) = 2 * r + 1, img.shape[-2:]
    p = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(r, r), (r, r)], mode="edge")
    rows = np.sum([p[..., i:i + h, :] for i in range(k)], axis=0) / k
    return np.sum([rows[..., j:j + w] for j in range(k)], axis=0) / k


def draw_site(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw one field of view of 15-40 cells as a (6, size, size) uint8 stack (channels 1..6)."""
    n = int(rng.integers(15, 41))
    cy, cx = rng.uniform(0, size, (2, n)).astype(np.float32)
    r = (rng.uniform(0.025, 0.04, n) * size).astype(np.float32)  # nucleus semi-major axis, px
    aspect = rng.uniform(0.6, 1.0, n).astype(np.float32)
    theta, phi = rng.uniform(0, 2 * np.pi, (2, n)).astype(np.float32)  # nucleus axis, Golgi side
    extent = rng.uniform(2.0, 2.8, n).astype(np.float32)  # cell radius in nucleus radii
    cell_gain = rng.uniform(0.6, 1.0, (n, N_CHANNELS)).astype(np.float32)  # per-cell stain level

    # Distances are (y, x, cell) with cells last, broadcast from (1, size, n) and (size, 1, n)
    # terms; the argmin over the contiguous cell axis keeps a site at a few milliseconds.
    coord = np.arange(size, dtype=np.float32)
    dx, dy = (coord[:, None] - cx)[None], (coord[:, None] - cy)[:, None]
    cos, sin = np.cos(theta) / (r * extent), np.sin(theta) / (r * extent)
    u, v = dx * cos + dy * sin, (dy * cos - dx * sin) / aspect
    dn2 = u * u + v * v  # squared elliptical distance in cell radii, 1 = cell membrane
    # Each pixel belongs to the nearest cell relative to its size, so touching cells tile.
    owner = np.argmin(dn2, axis=-1)
    dn = np.sqrt(np.take_along_axis(dn2, owner[..., None], axis=-1)[..., 0])
    d = dn * extent[owner]  # in nucleus radii, 1 = nuclear envelope
    inside, cyto = dn < 1, (dn < 1) & (d > 1)
    junction = inside & ((np.diff(owner, axis=0, prepend=owner[:1]) != 0)  # cell-cell contacts
                         | (np.diff(owner, axis=1, prepend=owner[:, :1]) != 0))
    gx = coord - cx[owner] - 1.5 * r[owner] * np.cos(phi[owner])
    gy = coord[:, None] - cy[owner] - 1.5 * r[owner] * np.sin(phi[owner])
    golgi = np.hypot(gx, gy) / (0.7 * r[owner])  # Golgi blob beside each cell's own nucleus

    speckle, dots = rng.random((2, size, size), dtype=np.float32)
    signal = np.stack([
        np.clip((1 - d) * 3, 0, 1),                                 # 1 Hoechst: filled nucleus
        inside * (0.3 + 0.5 * (1 - dn)),                            # 2 ConA: faint, perinuclear ER
        np.exp(-(((dn - 1) / 0.12) ** 2)) + 0.8 * junction + 0.1 * inside,  # 3 actin: cortex
        inside * (0.15 + 0.4 * cyto + 0.8 * cyto * speckle ** 4),   # 4 Syto14: speckled cytoplasm
        cyto * (0.1 + 0.9 * (dots > 0.85)),                         # 5 MitoTracker: cytoplasm dots
        np.clip((1 - golgi) * 2, 0, 1),                             # 6 WGA: Golgi blob by nucleus
    ]) * np.moveaxis(cell_gain[owner], -1, 0)
    expected = BACKGROUND + CHANNEL_GAIN * _box_blur(signal)  # optical blur, then noise
    # Gaussian approximation of shot + read noise (variance = mean + 1.5^2), cheaper than Poisson.
    noise = rng.standard_normal(expected.shape, dtype=np.float32)
    noisy = expected + np.sqrt(expected + 2.25) * noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _sirna(seed: int, well_id: str, well: str) -> tuple[str, str, int]:
    """(well_type, sirna, sirna_id) for a well: fixed controls, else a seeded treatment siRNA."""
    if well in CONTROL_WELLS:
        return CONTROL_WELLS[well]
    sirna_id = int(_rng(seed, well_id).integers(N_TREATMENT_SIRNAS))
    # Name derived from the id, so one sirna_id always maps to one siRNA name across the dataset.
    return "treatment", f"s{int(_rng(seed, f'sirna{sirna_id}').integers(10**6)):06d}", sirna_id


def write_demo_dataset(
    root: Path,
    *,
    experiments: tuple[str, ...] = ("HUVEC-01", "RPE-01"),
    plates: tuple[int, ...] = (1, 2),
    wells: tuple[str, ...] = ("B02", "B03", "C02", "C03"),
    sites: tuple[int, ...] = (1, 2),
    size: int = 128,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write a small RxRx1-layout dataset under `root`; return (images_dir, metadata_csv).

    Images go to ``images/{experiment}/Plate{plate}/{well}_s{site}_w{channel}.png``
    (channels 1..6, ``size`` x ``size`` uint8), metadata to ``metadata.csv`` with one row
    per (experiment, plate, well, site). Plate 1 is "train", other plates "test"; B02 is
    the negative control (EMPTY), C02 the positive control, other wells are treatments.

    One image is deliberately not written, `MISSING_IMAGE` = ``RPE-01/Plate2/C03_s2_w6.png``
    (when that site is requested), so converters must report a missing channel; the
    site's metadata row and its other five channels are still written.
    """
    root = Path(root)
    images_dir, metadata_csv = root / "images", root / "metadata.csv"
    rows = []
    for experiment in experiments:
        for plate in plates:
            plate_dir = images_dir / experiment / f"Plate{plate}"
            plate_dir.mkdir(parents=True, exist_ok=True)
            for well in wells:
                well_id = f"{experiment}_{plate}_{well}"
                well_type, sirna, sirna_id = _sirna(seed, well_id, well)
                for site in sites:
                    site_id = f"{well_id}_{site}"
                    for channel, img in enumerate(draw_site(_rng(seed, site_id), size), start=1):
                        path = plate_dir / f"{well}_s{site}_w{channel}.png"
                        if path.relative_to(images_dir) != MISSING_IMAGE:
                            path.write_bytes(imagecodecs.png_encode(img))
                    rows.append((site_id, well_id, experiment.split("-")[0],
                                 "train" if plate == 1 else "test", experiment, plate, well,
                                 site, well_type, sirna, sirna_id))
    with metadata_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(rows)
    return images_dir, metadata_csv
