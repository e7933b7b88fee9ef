"""How long the pictures take (issue 13): a plate montage of a full 384-well RxRx1-sized plate, a site composite,
and the montage's cost per well for RxRx3-sized sites (2048x2048, 16-bit, six channels), stored as one chunk a site
(the whole site decoded and shrunk) and in the rxrx3 schema's 256² tiles (only the central 512² read).

    python benchmarks/pictures.py

Input: a 384-well plate (every well A01..P24, two sites, six 512x512 8-bit channels) whose PNGs are hard
links to the real RxRx1 PNGs of ../shared/data/rxrx1, converted with default settings; and four wells of
an RxRx3 tar of 2048x2048 16-bit tiles cut from the real CPJUMP1 fields (tests/sources.py). Each timing is
the median of 3 calls in this process, the store's files in the page cache after the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))
from run import DEFAULT_SOURCE, link, real_sites  # noqa: E402

WELLS_384 = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]


def timed(fn, repeats: int = 3) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def full_plate(pool: list[list[Path]], root: Path) -> tuple[Path, Path]:
    """A 384-well RxRx1-layout plate of hard links to the real PNGs, and its metadata; well H12 has no image
    (a metadata row only) and C05's site 1 lacks w3, so that the montage marks them."""
    from sources import write_metadata

    folder = root / "images" / "HUVEC-01" / "Plate1"
    folder.mkdir(parents=True)
    k = 0
    for well in WELLS_384:
        for site in (1, 2):
            for channel, target in enumerate(pool[k % len(pool)], start=1):
                if well != "H12" and (well, site, channel) != ("C05", 1, 3):
                    link(target, folder / f"{well}_s{site}_w{channel}.png")
            k += 1
    write_metadata(root / "metadata.csv", {("HUVEC-01", 1): WELLS_384})
    return root / "images", root / "metadata.csv"


def write_docs_pictures(out: Path, docs: Path) -> None:
    """The pictures of docs/looking-at-the-data.md, from the 384-well plate `out`."""
    import imagecodecs

    import converters as pz
    from converters.pictures import png_bytes, show

    site = pz.site_rgb(out, "HUVEC-01/Plate1", "B02", 1)
    (docs / "site.png").write_bytes(png_bytes(site[128:384, 128:384]))  # the centre, at full resolution
    fixed = pz.site_rgb(out, "HUVEC-01/Plate1", "B02", 1, ranges="fixed")
    (docs / "site-fixed.png").write_bytes(png_bytes(fixed[128:384, 128:384]))
    grid = pz.site_grid(out, "HUVEC-01/Plate1", "B02", 1)
    (docs / "site-grid.png").write_bytes(png_bytes(grid[:, :, :][::2, ::2]))
    (docs / "plate.png").write_bytes(png_bytes(pz.plate_montage(out, "HUVEC-01/Plate1", cell=32)))
    show(out, "HUVEC-01/Plate1", docs / "qc.png", qc="mean:w1")
    for name in ("site", "site-fixed", "site-grid", "plate", "qc"):
        shape = imagecodecs.png_decode((docs / f"{name}.png").read_bytes()).shape
        print(f"wrote {docs / name}.png {shape[1]}x{shape[0]}, {(docs / f'{name}.png').stat().st_size:,} bytes",
              file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument("--docs", type=Path, help="also write the pictures of docs/looking-at-the-data.md into this folder")
    args = p.parse_args()
    import converters as pz
    from converters.schema import load_schema
    from sources import write_rxrx3_source

    work = Path(tempfile.mkdtemp(prefix="platezarr-pictures-"))
    try:
        out = work / "plate.zarr"
        start = time.perf_counter()
        images, metadata = full_plate(real_sites(args.source), work / "rxrx1")
        pz.convert(images, out, "rxrx1", metadata)
        convert_seconds = time.perf_counter() - start
        if args.docs:
            write_docs_pictures(out, args.docs)
        montage = pz.plate_montage(out, "HUVEC-01/Plate1")
        result = {
            "rxrx1_384_wells": {"convert_seconds": convert_seconds, "montage_shape": list(montage.shape),
                                "montage_seconds": timed(lambda: pz.plate_montage(out, "HUVEC-01/Plate1")),
                                "site_rgb_seconds": timed(lambda: pz.site_rgb(out, "HUVEC-01/Plate1", "H11", 1))},
        }
        wells = ["A02", "A03", "B02", "B03"]
        write_rxrx3_source(work / "tars", {("gene-001", 1): wells}, size=2048)
        schema = dataclasses.replace(load_schema("rxrx3"), image_shape=(2048, 2048))
        for name, chunks in (("rxrx3_2048_uint16_one_chunk_a_site", "site"), ("rxrx3_2048_uint16_256_tiles", None)):
            big = work / f"{name}.zarr"
            pz.convert(work / "tars", big, schema, chunks=chunks)  # None: the schema's default, 256² tiles
            seconds = timed(lambda: pz.plate_montage(big, "gene-001/Plate1"))
            result[name] = {"wells": len(wells), "montage_seconds": seconds, "seconds_per_well": seconds / len(wells),
                            "estimated_1536_well_plate_seconds": seconds / len(wells) * 1536}
        one, tiled = (result[k]["montage_seconds"] for k in ("rxrx3_2048_uint16_one_chunk_a_site",
                                                              "rxrx3_2048_uint16_256_tiles"))
        result["rxrx3_montage_one_chunk_over_tiles"] = one / tiled
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
