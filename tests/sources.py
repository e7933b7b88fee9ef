"""Generated sources for tests, cut from the real RxRx1 PNGs so pixel statistics stay realistic.

Each generated image is a tile of a real 512x512 RxRx1 image (channel w of the same real site, at an
offset that depends on the well and site), so every image differs and looks like cells. Without
../shared/data the tiles come from the demo's procedurally drawn cells instead.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import imagecodecs
import numpy as np

from conftest import SHARED_DATA
from converters.demo_data import draw_site
from converters.schema import DatasetSchema, load_schema

REAL_SITE = SHARED_DATA / "rxrx1" / "images" / "train" / "HUVEC-01" / "Plate1"


@cache
def real_channels() -> np.ndarray:
    """(6, 512, 512) uint8: the six channels of one real RxRx1 site, or drawn cells without shared data."""
    if (REAL_SITE / "B02_s1_w1.png").is_file():
        return np.stack([imagecodecs.png_decode((REAL_SITE / f"B02_s1_w{c}.png").read_bytes()) for c in range(1, 7)])
    return draw_site(np.random.default_rng(0), 512)


def tile(channel: int, index: int, size: int, dtype: np.dtype = np.dtype("uint8")) -> np.ndarray:
    """A `size`² tile of real channel `channel` (0-based) at an offset chosen by `index`.

    For uint16 the 8-bit pixels are scaled by 257 and a per-pixel offset 0..256 is added, so the
    full 16-bit range is used and truncation to 8 bits would show.
    """
    image = real_channels()[channel % 6]
    steps = 512 - size + 1
    y, x = (index * 37) % steps, (index * 91 + channel * 13) % steps
    t = image[y : y + size, x : x + size]
    if dtype == np.uint16:
        return (t.astype(np.uint16) * 257 + (np.arange(size * size).reshape(size, size) % 257)).astype(np.uint16)
    return t.copy()


def small_rxrx1(size: int = 64) -> DatasetSchema:
    """The RxRx1 schema with small images, so full generated plates stay quick to write."""
    return dataclasses.replace(load_schema("rxrx1"), name="rxrx1", image_shape=(size, size))


def write_rxrx_source(
    root: Path,
    plates: dict[tuple[str, int], list[str]],
    sites: tuple[int, ...] = (1, 2),
    channels: int = 6,
    size: int = 64,
    dtype: np.dtype = np.dtype("uint8"),
    split: str | None = None,
    skip: frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """Write PNGs in the RxRx layout (2020, or 2019 with `split`); returns {relative path: pixels}."""
    written = {}
    index = 0
    for (experiment, plate), wells in plates.items():
        for well in wells:
            for site in sites:
                for c in range(channels):
                    rel = f"{experiment}/Plate{plate}/{well}_s{site}_w{c + 1}.png"
                    index += 1
                    if rel in skip:
                        continue
                    pixels = tile(c, index, size, np.dtype(dtype))
                    path = root / (f"{split}/{rel}" if split else rel)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(imagecodecs.png_encode(pixels))
                    written[rel] = pixels
    return written


def full_plate_wells() -> list[str]:
    """The 308 wells RxRx1 uses on a 384-well plate: rows B–O, columns 02–23."""
    return [f"{r}{c:02d}" for r in "BCDEFGHIJKLMNO" for c in range(2, 24)]


def write_metadata(path: Path, plates: dict[tuple[str, int], list[str]], sites: tuple[int, ...] = (1, 2)) -> list[dict]:
    """An official-schema RxRx1 metadata.csv for `plates`; B02 is the negative control as in RxRx1."""
    rows = []
    for (experiment, plate), wells in plates.items():
        for i, well in enumerate(wells):
            control = well == "B02"
            for site in sites:
                rows.append({
                    "site_id": f"{experiment}_{plate}_{well}_{site}",
                    "well_id": f"{experiment}_{plate}_{well}",
                    "cell_type": experiment.split("-")[0],
                    "dataset": "train",
                    "experiment": experiment,
                    "plate": plate,
                    "well": well,
                    "site": site,
                    "well_type": "negative_control" if control else "treatment",
                    "sirna": "EMPTY" if control else f"s{100000 + i}",
                    "sirna_id": 1138 if control else i,
                })
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return rows
