"""Crops of tiled chunks (issue 14): bytes and time of random crops and of whole sites, tiled against one chunk per site.

Run it from a checkout with ../shared/data beside it; a few minutes on 2 cores:

    python benchmarks/crops.py                  # 4 wells of 2048² x 6 channels uint16 (RxRx3 layout), tiles 256, 512
    python benchmarks/crops.py --wells 8 --crops 400 --tiles 256 512 1024 --json crops.json

It writes an RxRx3-layout source (one tar of 16-bit PNGs, one site per well) whose images are cut from
the real CPJUMP1 TIFFs of ../shared/data: by default each 2048² image is a mosaic of 1024² cuts of four
of the five real 1080² fields (same channel), so no image repeats itself; `--source tile16` uses
tests/sources.py's `write_rxrx3_source` instead, whose images repeat one field side by side (which
whole-site compression exploits and tiles cannot, so it favours the baseline). It converts it once per
chunk shape — `--chunks site` (one chunk per site: the baseline) and `--chunks N` for each tile — and
reads every store from local disk through `SiteDataset`, the stores taking turns in each repeat:

- whole sites: every site once per repeat; seconds per site (median of the repeats), bytes and reads per site;
- random crops (`SiteDataset(crop=256)`, the same positions in every store): bytes and reads per crop, seconds.

Bytes and reads are this process's read system calls (`rchar`, `syscr` of /proc/self/io): one `pread` per
range the reader asks for, so they count what a bucket would be asked for (one ranged GET per read).
It prints each store against the baseline: crop bytes over the same store's whole-site bytes (target ≤ 1/8)
and whole-site seconds over the baseline's (target ≤ 1.2x). Reads come from the page cache (sites are read
once before timing), so the times are the reader's CPU: checksums, zstd decoding, copies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' generated sources, cut from the real images

import converters as pz  # noqa: E402
from converters.schema import load_schema  # noqa: E402
from sources import REAL_FIELD, pack_tar, write_rxrx3_source  # noqa: E402


def io_counters() -> tuple[int, int]:
    """(bytes, calls) this process has read through read system calls so far."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["syscr"])


def real_fields() -> list[np.ndarray]:
    """(channels >= 6, 1080, 1080) uint16 of each real CPJUMP1 field in ../shared/data (five of them)."""
    import tifffile

    firsts = sorted(REAL_FIELD.parent.parent.glob("**/*-ch1sk1fk1fl1.tiff"))
    return [np.stack([tifffile.imread(str(f).replace("-ch1", f"-ch{c}")) for c in range(1, 7)]) for f in firsts]


def write_mosaic_source(tar: Path, wells: list[str], size: int) -> dict[str, np.ndarray]:
    """One RxRx3 plate tar of `wells` (site 1, w1..w6), each image a 2x2 mosaic of (size/2)² cuts of the same
    channel of four different real fields, at offsets that vary with the well; returns {name: pixels}."""
    fields, half = real_fields(), size // 2
    steps = fields[0].shape[-1] - half + 1
    written, members = {}, []
    for i, well in enumerate(wells):
        for c in range(6):
            quarters = []
            for q in range(4):
                y, x = (i * 53 + q * 29) % steps, (i * 97 + c * 17 + q * 11) % steps
                quarters.append(fields[(i + q) % len(fields)][c, y:y + half, x:x + half])
            pixels = np.block([[quarters[0], quarters[1]], [quarters[2], quarters[3]]])
            name = f"{well}_s1_w{c + 1}.png"
            members.append((name, imagecodecs.png_encode(pixels)))
            written[f"gene-001/1/{name}"] = pixels
    pack_tar(tar, members)
    return written


def measured(fn, items: list[int]) -> dict[str, float]:
    """Seconds, bytes and read calls per item of calling fn on each item (less those of reading the counters)."""
    (bytes0, calls0), (bytes1, calls1) = io_counters(), io_counters()
    own_bytes, own_calls = bytes1 - bytes0, calls1 - calls0
    (bytes0, calls0), started = io_counters(), time.perf_counter()
    for i in items:
        fn(i)
    seconds = time.perf_counter() - started
    bytes1, calls1 = io_counters()
    return {"seconds": seconds / len(items), "bytes": (bytes1 - bytes0 - own_bytes) / len(items),
            "reads": (calls1 - calls0 - own_calls) / len(items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048, help="image side (RxRx3: 2048)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--crops", type=int, default=200, help="random crops per store and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", choices=["mosaic", "tile16"], default="mosaic")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (REAL_FIELD / "r04c14f05p01-ch1sk1fk1fl1.tiff").is_file():
        sys.exit(f"the real CPJUMP1 TIFFs are not at {REAL_FIELD}")

    layouts = ["site"] + [str(t) for t in args.tiles]
    results: dict = {"source": args.source, "wells": args.wells, "size": args.size, "crop": args.crop, "crops": args.crops,
                     "repeats": args.repeats, "stores": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        wells = [f"A{c:02d}" for c in range(1, args.wells + 1)]
        if args.source == "tile16":
            written = write_rxrx3_source(src, {("gene-001", 1): wells}, size=args.size)
        else:
            written = write_mosaic_source(src / "gene-001" / "Plate1.tar", wells, args.size)
        schema = dataclasses.replace(load_schema("rxrx3"), image_shape=(args.size, args.size))
        datasets, crops = {}, {}
        for layout in layouts:
            out = Path(tmp) / f"{layout}.zarr"
            started = time.perf_counter()
            summary = pz.convert(src, out, schema, chunks=layout, workers=2)
            results["stores"][layout] = {"convert_seconds": round(time.perf_counter() - started, 2),
                                         "bytes": summary.bytes_out}
            datasets[layout] = pz.SiteDataset(out)
            crops[layout] = pz.SiteDataset(out, crop=args.crop, seed=0)
        sites = list(range(len(datasets["site"])))
        for layout in layouts:  # warm-up: shard indexes read, pages cached; and every pixel checked once
            for i in sites:
                pixels, meta = datasets[layout][i]
                for c in range(pixels.shape[0]):
                    assert np.array_equal(pixels[c], written[f"gene-001/1/{meta['well']}_s1_w{c + 1}.png"])
            for k in range(len(sites) * 3):
                assert np.array_equal(_crop(crops[layout], k), _crop(crops["site"], k))

        runs: dict[str, dict[str, list[dict[str, float]]]] = {k: {"site": [], "crop": []} for k in layouts}
        for repeat in range(args.repeats):
            for layout in layouts if repeat % 2 == 0 else layouts[::-1]:
                runs[layout]["site"].append(measured(lambda i: datasets[layout][i], sites))
                runs[layout]["crop"].append(measured(lambda k: _crop(crops[layout], k), list(range(args.crops))))

    base = None
    for layout in layouts:
        r = results["stores"][layout]
        for kind in ("site", "crop"):
            for key in ("seconds", "bytes", "reads"):
                r[f"{kind}_{key}"] = statistics.median(run[key] for run in runs[layout][kind])
        base = base or r
        r["crop_bytes_over_site_bytes"] = round(r["crop_bytes"] / r["site_bytes"], 4)
        r["site_seconds_over_untiled"] = round(r["site_seconds"] / base["site_seconds"], 3)
        r["crop_seconds_over_untiled"] = round(r["crop_seconds"] / base["crop_seconds"], 3)

    print(f"{args.wells} sites of {args.size}² x 6 channels uint16 (RxRx3 layout, real CPJUMP1 pixels, {args.source}); "
          f"{args.crops} random {args.crop}² crops; medians of {args.repeats}; local disk, page cache")
    print(f"{'chunks':>7} {'store MB':>9} {'site ms':>8} {'site MB':>8} {'reads':>6} {'crop ms':>8} {'crop MB':>8} "
          f"{'reads':>6} {'crop/site bytes':>16} {'site time vs untiled':>21} {'crop time vs untiled':>21}")
    for layout in layouts:
        r = results["stores"][layout]
        print(f"{layout:>7} {r['bytes'] / 1e6:>9.1f} {r['site_seconds'] * 1e3:>8.1f} {r['site_bytes'] / 1e6:>8.2f} "
              f"{r['site_reads']:>6.2f} {r['crop_seconds'] * 1e3:>8.2f} {r['crop_bytes'] / 1e6:>8.3f} {r['crop_reads']:>6.2f} "
              f"{r['crop_bytes_over_site_bytes']:>16} {r['site_seconds_over_untiled']:>20}x {r['crop_seconds_over_untiled']:>20}x")
    print("targets for a tiled store: crop/site bytes ≤ 0.125, site time vs untiled ≤ 1.2x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _crop(dataset: pz.SiteDataset, k: int) -> np.ndarray:
    """Random crop number k: of site k % sites, placed as `SiteDataset(crop=..., seed=k)` places it."""
    dataset.transform = dataclasses.replace(dataset.transform, seed=k)
    return dataset[k % len(dataset)][0]


if __name__ == "__main__":
    main()
