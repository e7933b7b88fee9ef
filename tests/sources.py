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

    Sizes above 512 (RxRx2 and RxRx19a's 1024², RxRx19b's 2048²) are cut from the real image repeated
    side by side. For uint16 the 8-bit pixels are scaled by 257 and a per-pixel offset 0..256 is
    added, so the full 16-bit range is used and truncation to 8 bits would show.
    """
    image = real_channels()[channel % 6]
    if size > 512:
        repeats = -(-size // 512) + 1
        image, size_in = np.tile(image, (repeats, repeats)), 512 * repeats
    else:
        size_in = 512
    steps = size_in - size + 1
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


REAL_FIELD = SHARED_DATA / "cpjump1" / "example_images" / "DMSO"


@cache
def real_u16_channels() -> np.ndarray:
    """(6, 1080, 1080) uint16: channels ch1..ch6 of one real CPJUMP1 field (Opera Phenix TIFFs).

    Without ../shared/data, the 16-bit tiles of `tile` (RxRx1 or drawn cells) stand in.
    """
    if (REAL_FIELD / "r04c14f05p01-ch1sk1fk1fl1.tiff").is_file():
        import tifffile

        return np.stack([tifffile.imread(REAL_FIELD / f"r04c14f05p01-ch{c}sk1fk1fl1.tiff") for c in range(1, 7)])
    return np.stack([tile(c, 0, 512, np.dtype("uint16")) for c in range(6)])


def tile16(channel: int, index: int, size: int) -> np.ndarray:
    """A `size`² uint16 tile of real 16-bit channel `channel` (0-based) at an offset chosen by `index`;
    sizes above the field's (RxRx3's 2048²) are cut from the field repeated side by side."""
    image = real_u16_channels()[channel % 6]
    side = image.shape[0]
    repeats = -(-size // side) + 1
    big = np.tile(image, (repeats, repeats)) if size > side // 2 else image
    steps = big.shape[0] - size + 1
    y, x = (index * 53) % steps, (index * 97 + channel * 17) % steps
    return big[y : y + size, x : x + size].copy()


def write_csv(path: Path, rows: list[dict]) -> list[dict]:
    """A CSV with the rows' keys as header, quoted where needed (SMILES hold commas); None is a blank cell."""
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return rows


def pack_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """An uncompressed tar of `members` (name, bytes), in the order given, written straight from memory."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_rxrx3_source(
    root: Path,
    plates: dict[tuple[str, int], list[str]],
    size: int = 64,
    tar_names: dict[tuple[str, int], str] | None = None,
    skip: frozenset[str] = frozenset(),
    corrupt: frozenset[str] = frozenset(),
    shuffle: bool = False,
) -> dict[str, np.ndarray]:
    """RxRx3's layout: one tar per experiment plate (`{experiment}/Plate{plate}.tar` unless `tar_names` says
    otherwise) of 16-bit `AA02_s1_w3.png` members (site 1, w1..w6), well by well unless `shuffle`. `skip` names
    `experiment/plate/member` to leave out, `corrupt` those to cut short. Returns {that name: pixels}."""
    written = {}
    index = 0
    for (experiment, plate), wells in plates.items():
        members = []
        for well in wells:
            for c in range(6):
                name = f"{well}_s1_w{c + 1}.png"
                index += 1
                key = f"{experiment}/{plate}/{name}"
                if key in skip:
                    continue
                pixels = tile16(c, index, size)
                data = imagecodecs.png_encode(pixels)
                members.append((name, data[: len(data) // 2] if key in corrupt else data))
                written[key] = pixels
        if shuffle:
            members = [members[i] for i in np.random.default_rng(plate).permutation(len(members))]
        name = (tar_names or {}).get((experiment, plate), "{experiment}/Plate{plate}.tar")
        pack_tar(root / name.format(experiment=experiment, plate=plate), members)
    return written


def write_site_embeddings(path: Path, site_ids: list[str], features: int, seed: int = 0,
                          names: str = "feature_{}") -> dict[str, np.ndarray]:
    """An embeddings CSV of `site_id` and one column per feature (random float32 written in their shortest
    decimal form, so they parse back exactly); returns {site_id: vector}."""
    rng = np.random.default_rng(seed)
    vectors = {site: rng.standard_normal(features).astype(np.float32) for site in site_ids}
    header = ",".join(["site_id"] + [names.format(i) for i in range(features)])
    lines = [",".join([site] + [str(v) for v in vector]) for site, vector in vectors.items()]
    path.write_text("\n".join([header, *lines]) + "\n")
    return vectors
