"""platezarr benchmark (issue 6): conversion speed, size, reads and memory, against a floor and a baseline.

Run it from a checkout with platezarr installed (`pip install -e .`); about 7 minutes on 2 idle cores
(half of it the 10x-sites memory run), longer on a busy machine:

    python benchmarks/run.py                                   # 1,000 sites, 3 repetitions
    python benchmarks/run.py --sites 2000 --repeats 5 --json bench.json
    python benchmarks/run.py --source DIR                      # any folder of RxRx-layout PNGs
    python benchmarks/run.py --rss-scale 0                     # skip the 10x-sites memory run
    python benchmarks/run.py --with-zarr-path                  # also time the zarr-python write path

Input: the real RxRx1 PNGs of ../shared/data/rxrx1 (or --source) are replicated as hard links (or
symlinks) in a temporary folder into an RxRx1-layout dataset of --sites sites: 308 wells per plate,
2 sites per well, each site the complete channel set of one real site. Only the JSON file is written
outside the temporary folder.

Contenders, each run in a fresh subprocess, in rotating order, --repeats times (the table shows
medians of wall-clock time, and of CPU time, which is steadier on a shared machine; a time target
counts as met only if both ratios meet it):

1. floor      read + decode every PNG with imagecodecs' fastest PNG decoder (probed), one thread per
              core, one task per well as the converter does, nothing written;
2. platezarr  `converters.convert(SRC, OUT)` with default settings (zstd-3 + crc32c, a shard per
              well), timed around the whole call: scan, plan, template, write, finalize;
   compact    the same with `compression="compact"` (JPEG-LS lossless, converters/jpegls.py);
3. baseline   Recursion's rxrx1-utils packer (rxrx/preprocess/images2zarr.py) reimplemented: one zarr
              v2 store per site `{dataset}/{experiment}/Plate{plate}/{well}_s{site}.zarr` holding a
              (512, 512, 6) `<u2` array in one chunk, Blosc zstd-3 with bitshuffle, mapped over the
              sites with a dask bag (its default process scheduler, one process per core). It decodes
              as rxrx1-utils does (`skimage.io.imread(f, format="png")`: imageio with Pillow); once,
              as `baseline_packing`, it decodes with the floor's decoder, to show the packing alone;
4. zarr_path  (with --with-zarr-path) platezarr with converters/shard.py switched off: every shard
              written by zarr-python's `array[well] = block`, as before the direct shard writer.

And once: a GIL probe (decode + zstd-3 encode of 200 sites on 1 thread, on threads, on processes),
random whole-site reads (6 PNGs; the platezarr store through converters.SiteDataset and through
plain zarr; the baseline store), output bytes, files and directories per site,
the cost and size of zstd levels 1-3 and of HTJ2K lossless (the compact candidate) on a sample,
peak RSS of the conversion subprocess (VmHWM, and per stage) for --sites and for --rss-scale
times as many sites, and last a pixel-exact check of a sample of sites in all stores (exit 1 if any
pixel differs). Compare ratios within one run, never absolute times across runs or machines.

The code is the package benchmarks/convert_bench/: `contenders/` (one module per contender; a new
contender is a new module there exposing `CONTENDERS`), `inputs`, `decoding`, `process`, `measure`,
`report` and `runner`. This script is its entry point, and keeps the names other benchmarks import.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
# convert_bench is imported from this folder without leaving it on the import path when it was not there
# (benchmarks/ome_zarr.py loads this file by path and keeps its folder off the path, for ome-zarr-py's sake).
_ADDED = HERE not in sys.path
if _ADDED:
    sys.path.insert(0, HERE)
from convert_bench.inputs import DEFAULT_SOURCE, build_input, link, real_sites  # noqa: E402
from convert_bench.measure import tree_counts  # noqa: E402
from convert_bench.process import cpu_seconds, machine, peak_rss  # noqa: E402
from convert_bench.runner import main  # noqa: E402

if _ADDED:
    sys.path.remove(HERE)

__all__ = ["DEFAULT_SOURCE", "build_input", "cpu_seconds", "link", "machine", "main", "peak_rss", "real_sites",
           "tree_counts"]

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
