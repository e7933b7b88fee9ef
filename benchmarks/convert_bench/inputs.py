"""The benchmark's input: the real RxRx1 PNGs replicated (hard links) into an RxRx1-layout dataset of any size."""

from __future__ import annotations

import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = Path(os.environ.get("PLATEZARR_SHARED_DATA", REPO.parent / "shared" / "data")) / "rxrx1"
PNG_NAME = re.compile(r"(?P<well>[A-Z]+\d+)_s(?P<site>\d+)_w(?P<channel>\d+)\.png$")
WELLS = [f"{r}{c:02d}" for r in "BCDEFGHIJKLMNO" for c in range(2, 24)]  # RxRx1's 308 wells per plate
SITES_PER_WELL, PLATES_PER_EXPERIMENT = 2, 4


def real_sites(source: Path) -> list[list[Path]]:
    """Every real site under `source` that has the full set of channels, as its channel files in order."""
    sites: dict[tuple, dict[int, Path]] = defaultdict(dict)
    for path in sorted(source.rglob("*.png")):
        match = PNG_NAME.match(path.name)
        if match:
            sites[(path.parent, match["well"], match["site"])][int(match["channel"])] = path
    channels = sorted({c for files in sites.values() for c in files})
    complete = [[files[c] for c in channels] for files in sites.values() if sorted(files) == channels]
    if not complete:
        sys.exit(f"no site with all channels {channels} among the RxRx-named PNGs under {source}")
    return complete


def link(target: Path, path: Path) -> None:
    """A hard link to `target` (same bytes, no copy); a symlink where hard links are not allowed."""
    try:
        os.link(target, path)
    except OSError:
        os.symlink(target, path)


def build_input(pool: list[list[Path]], n_sites: int, root: Path) -> list[dict]:
    """An RxRx1-layout dataset of `n_sites` sites in root/images, replicating the real sites of `pool`.

    Returns the manifest: one dict per site (dataset, experiment, plate, well, site, files).
    """
    manifest: list[dict] = []
    for w in range(math.ceil(n_sites / SITES_PER_WELL)):
        plate_number, well = divmod(w, len(WELLS))
        experiment = f"HUVEC-{plate_number // PLATES_PER_EXPERIMENT + 1:02d}"
        plate = plate_number % PLATES_PER_EXPERIMENT + 1
        folder = root / "images" / experiment / f"Plate{plate}"
        folder.mkdir(parents=True, exist_ok=True)
        for site in range(1, SITES_PER_WELL + 1):
            files = []
            for channel, target in enumerate(pool[len(manifest) % len(pool)], start=1):
                path = folder / f"{WELLS[well]}_s{site}_w{channel}.png"
                link(target, path)
                files.append(str(path))
            manifest.append({"dataset": "train", "experiment": experiment, "plate": plate, "well": WELLS[well],
                             "site": site, "files": files})
    return manifest


def by_well(manifest: list[dict]) -> list[list[dict]]:
    """The manifest's sites grouped by (experiment, plate, well): one list per well, as the converter's tasks."""
    wells: dict[tuple, list[dict]] = defaultdict(list)
    for site in manifest:
        wells[(site["experiment"], site["plate"], site["well"])].append(site)
    return list(wells.values())
