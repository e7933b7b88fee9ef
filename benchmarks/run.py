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
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path(os.environ.get("PLATEZARR_SHARED_DATA", REPO.parent / "shared" / "data")) / "rxrx1"
PNG_NAME = re.compile(r"(?P<well>[A-Z]+\d+)_s(?P<site>\d+)_w(?P<channel>\d+)\.png$")
WELLS = [f"{r}{c:02d}" for r in "BCDEFGHIJKLMNO" for c in range(2, 24)]  # RxRx1's 308 wells per plate
SITES_PER_WELL, PLATES_PER_EXPERIMENT = 2, 4
CONTENDERS = ("floor", "platezarr", "compact", "baseline")
ONCE = ("baseline_packing", "gil")  # run once, in the first repetition
GIL_SITES = 200
BASELINE_KEY = "{dataset}/{experiment}/Plate{plate}/{well}_s{site}.zarr"  # rxrx1-utils' ZARR_DEST


# ------------------------------------------------------------------------------------------- input

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
    manifest = []
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
    wells: dict[tuple, list[dict]] = defaultdict(list)
    for site in manifest:
        wells[(site["experiment"], site["plate"], site["well"])].append(site)
    return list(wells.values())


# ---------------------------------------------------------------------------------------- decoding

def imageio_decode(data: bytes) -> np.ndarray:
    """What rxrx1-utils' `skimage.io.imread(f, format="png")` does: imageio with Pillow."""
    import imageio.v2 as imageio

    return imageio.imread(io.BytesIO(data), format="png")


def decoder(name: str):
    return imageio_decode if name == "imageio" else getattr(imagecodecs, name)


def cpu_per_call(fn, items: list, repeats: int = 3) -> float:
    """Median CPU seconds of this thread per item of `items` (steady on a busy machine)."""
    runs = []
    for _ in range(repeats):
        start = time.thread_time()
        for item in items:
            fn(item)
        runs.append((time.thread_time() - start) / len(items))
    return statistics.median(runs)


def probe_decoders(sample: list[Path]) -> dict[str, float]:
    """CPU seconds per PNG of each decoder on `sample`: imagecodecs' libpng and libspng, and imageio."""
    data = [p.read_bytes() for p in sample]
    names = [n for n in ("png_decode", "spng_decode") if hasattr(imagecodecs, n)] + ["imageio"]
    return {name: cpu_per_call(decoder(name), data) for name in names}


def read_site(files: list[str], decode) -> np.ndarray:
    """(channel, y, x): one site's PNGs read and decoded."""
    return np.stack([decode(Path(f).read_bytes()) for f in files])


# -------------------------------------------------------------------- contenders (in subprocesses)

def run_floor(manifest: list[dict], workers: int, decoder_name: str) -> dict:
    """Read and decode every PNG into a block per well, a well per task on `workers` threads; write nothing."""
    decode = decoder(decoder_name)

    def well(sites: list[dict]) -> int:
        return sum(read_site(s["files"], decode).nbytes for s in sites)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        decoded = sum(pool.map(well, by_well(manifest)))
    return {"seconds": time.perf_counter() - start, "decoded_bytes": decoded}


class StageRSS:
    """Samples this process's resident memory every 20 ms and keeps the peak of each conversion stage."""

    def __init__(self) -> None:
        self.stage, self.peaks = "start", {}
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        if Path("/proc/self/statm").exists():
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * self.page
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            time.sleep(0.02)


def run_platezarr(src: Path, out: Path, workers: int, zarr_path: bool = False, compression: str = "default") -> dict:
    """`converters.convert` with `compression`; also times its write stage and samples RSS per stage.

    `zarr_path`: the same, with every shard written by zarr-python's `array[well] = block` instead of
    encoded by converters/shard.py (what platezarr did before it).
    """
    import converters as pz

    if zarr_path:
        import zarr

        from converters.formats.native import NativeFormat

        def write_with_zarr(self, output, group: str, well_index: int, block: np.ndarray) -> None:
            array = zarr.open_array(output.store, path=f"{group}/images", mode="r+", config={"write_empty_chunks": True})
            array[well_index] = block

        NativeFormat.write_well = write_with_zarr

    marks: dict[str, float] = {}
    rss = StageRSS()

    def progress(event) -> None:
        marks.setdefault(event.stage, time.perf_counter())
        rss.stage = event.stage

    start = time.perf_counter()
    summary = pz.convert(src, out, workers=workers, progress=progress, compression=compression)
    seconds = time.perf_counter() - start
    write = marks.get("finalize", start + seconds) - marks.get("write", start)
    return {"seconds": seconds, "write_seconds": write, "sites": summary.as_dict()["sites"],
            "stage_rss_bytes": rss.peaks}


def pack_site(site: dict, out: str, decoder_name: str) -> None:
    """rxrx1-utils' `convert_to_zarr` for one site: (512, 512, 6) `<u2`, one chunk, Blosc zstd-3 bitshuffle, zarr v2."""
    import zarr
    from numcodecs import Blosc

    decode = decoder(decoder_name)
    first = decode(Path(site["files"][0]).read_bytes())
    data = np.ndarray(shape=(*first.shape, len(site["files"])), dtype=first.dtype)  # load_images_as_tensor
    for ix, f in enumerate(site["files"]):
        data[:, :, ix] = first if ix == 0 else decode(Path(f).read_bytes())
    dest = os.path.join(out, BASELINE_KEY.format(**site))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    z = zarr.open_array(dest, mode="w", shape=data.shape, chunks=(512, 512, data.shape[2]), dtype="<u2",
                        compressor=Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE), zarr_format=2)
    z[:] = data


def run_baseline(manifest: list[dict], out: Path, workers: int, decoder_name: str) -> dict:
    """rxrx1-utils' `convert_all`: a dask bag over the sites on its default (process) scheduler."""
    import dask.bag
    from toolz import curry

    start = time.perf_counter()
    bag = dask.bag.from_sequence(manifest)
    bag.map(curry(pack_site, out=str(out), decoder_name=decoder_name)).compute(num_workers=workers)
    return {"seconds": time.perf_counter() - start}


def decode_encode(sites: list[dict], decoder_name: str) -> int:
    from numcodecs import Zstd

    decode, codec = decoder(decoder_name), Zstd(level=3)
    return sum(len(codec.encode(read_site(s["files"], decode))) for s in sites)


def decode_only(sites: list[dict], decoder_name: str) -> int:
    return sum(read_site(s["files"], decoder(decoder_name)).nbytes for s in sites)


def run_gil(manifest: list[dict], workers: int, decoder_name: str) -> dict:
    """Wall time of decode (+ zstd-3 encode), a well per task: 1 thread, `workers` threads, `workers` processes."""
    wells = by_well(manifest)
    names = [decoder_name] * len(wells)
    out = {}
    with ProcessPoolExecutor(workers) as processes, ThreadPoolExecutor(workers) as threads:
        list(processes.map(decode_only, wells[:workers], names[:workers]))  # start the processes first
        for label, fn in (("decode", decode_only), ("decode+zstd3", decode_encode)):
            for kind, pool in (("serial", None), ("threads", threads), ("processes", processes)):
                start = time.perf_counter()
                list(map(fn, wells, names) if pool is None else pool.map(fn, wells, names))
                out[f"{label} {kind}"] = time.perf_counter() - start
    return out


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the baseline's dask processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def child_main(args: argparse.Namespace) -> None:
    """A contender subprocess: run it, then print its numbers, CPU time and peak RSS as one JSON line.

    Imports happen before the clock starts; the platezarr child never loads the manifest, so its
    memory is the converter's alone.
    """
    if args.child in ("platezarr", "compact", "zarr_path"):
        import converters  # noqa: F401
        manifest: list[dict] = []
    else:
        import dask.bag  # noqa: F401
        import zarr  # noqa: F401
        manifest = json.loads(Path(args.manifest).read_text())
    cpu = cpu_seconds()
    if args.child == "floor":
        result = run_floor(manifest, args.workers, args.decoder)
    elif args.child in ("platezarr", "compact", "zarr_path"):
        result = run_platezarr(Path(args.src), Path(args.out), args.workers, zarr_path=args.child == "zarr_path",
                               compression="compact" if args.child == "compact" else "default")
    elif args.child == "baseline":
        result = run_baseline(manifest, Path(args.out), args.workers, args.baseline_decoder)
    elif args.child == "baseline_packing":
        result = run_baseline(manifest, Path(args.out), args.workers, args.decoder)
    else:
        result = run_gil(manifest, args.workers, args.decoder)
    result["cpu_seconds"] = cpu_seconds() - cpu
    result["peak_rss_bytes"] = peak_rss()
    print(json.dumps(result))


def peak_rss() -> int:
    """Peak resident bytes of this process: VmHWM on Linux, else ru_maxrss.

    Not ru_maxrss on Linux: it survives exec, so a child started from a big parent reports the
    parent's peak (what subprocess's vfork + exec hands over), not its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def in_child(kind: str, manifest: Path, src: Path, out: Path, args: argparse.Namespace, decoder_name: str) -> dict:
    """Run one contender in a fresh Python process, `out` removed first; returns the JSON it printed."""
    shutil.rmtree(out, ignore_errors=True)
    if hasattr(os, "sync"):
        os.sync()  # flush earlier writes to disk now, so no contender pays for another's
    cmd = [sys.executable, __file__, "--child", kind, "--manifest", str(manifest), "--src", str(src),
           "--out", str(out), "--workers", str(args.workers), "--decoder", decoder_name,
           "--baseline-decoder", args.baseline_decoder]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_contenders(work: Path, args: argparse.Namespace, decoder_name: str) -> dict[str, list[dict]]:
    """Every contender --repeats times in rotating order, each in a fresh process; the GIL probe once."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for rep in range(args.repeats):
        contenders = CONTENDERS + (("zarr_path",) if args.with_zarr_path else ())
        order = contenders[rep % len(contenders):] + contenders[: rep % len(contenders)] + (ONCE if rep == 0 else ())
        for name in order:
            manifest = work / ("manifest-gil.json" if name == "gil" else "manifest.json")
            result = in_child(name, manifest, work / "images", work / f"out-{name}", args, decoder_name)
            runs[name].append(result)
            wall = result.get("seconds", sum(v for k, v in result.items() if " " in k))
            print(f"  repetition {rep + 1}/{args.repeats}: {name:<9} {wall:7.2f} s wall, "
                  f"{result['cpu_seconds']:7.2f} s CPU", file=sys.stderr)
    for name in ("floor", "gil", "zarr_path", "baseline_packing"):
        shutil.rmtree(work / f"out-{name}", ignore_errors=True)
    return runs


# ------------------------------------------------------------------------------------ measurements

def tree_counts(path: Path, pattern: str | None = None) -> tuple[int, int, int]:
    """(bytes, files, directories) below `path` (itself a directory); only files matching `pattern` if given."""
    size, files, dirs = 0, 0, 1
    for folder, dirnames, filenames in os.walk(path):
        dirs += len(dirnames)
        names = [f for f in filenames if pattern is None or re.fullmatch(pattern, f)]
        files += len(names)
        size += sum(os.path.getsize(os.path.join(folder, f)) for f in names)
    return size, files, dirs


def measure_sizes(manifest: list[dict], work: Path) -> dict:
    """Bytes, files and directories of both outputs, per site and against the PNG bytes."""
    n = len(manifest)
    png = sum(os.path.getsize(f) for s in manifest for f in s["files"])
    pz_bytes, pz_files, pz_dirs = tree_counts(work / "out-platezarr")
    shard_bytes, shard_files, _ = tree_counts(work / "out-platezarr", r"c\.\d+\.0\.0\.0\.0")
    base_bytes, base_files, base_dirs = tree_counts(work / "out-baseline")
    compact_bytes, _, _ = tree_counts(work / "out-compact")
    return {"sites": n, "png_bytes": png, "platezarr_bytes": pz_bytes, "platezarr_shard_bytes": shard_bytes,
            "compact_bytes": compact_bytes,
            "baseline_bytes": base_bytes, "platezarr_files_per_site": pz_files / n,
            "platezarr_shard_files_per_site": shard_files / n, "platezarr_dirs_per_site": pz_dirs / n,
            "baseline_files_per_site": base_files / n, "baseline_dirs_per_site": base_dirs / n}


def plate_arrays(store: Path) -> dict[tuple[str, int], tuple[object, dict[str, int]]]:
    """{(experiment, plate): (images array, well → index)} of a platezarr store, opened with plain zarr."""
    import zarr

    out = {}
    for experiment, group in zarr.open_group(store, mode="r").groups():
        for plate_name, _ in group.groups() if experiment != "index" else ():
            path = f"{experiment}/{plate_name}"
            wells = zarr.open_array(store, path=f"{path}/well", mode="r")[:]
            out[(experiment, int(plate_name.removeprefix("Plate")))] = (
                zarr.open_array(store, path=f"{path}/images", mode="r"), {str(w): i for i, w in enumerate(wells)})
    return out


def store_site(arrays: dict, site: dict) -> np.ndarray:
    array, wells = arrays[(site["experiment"], site["plate"])]
    return array[wells[site["well"]], site["site"] - 1]


def baseline_site(root: Path, site: dict) -> np.ndarray:
    import zarr

    return zarr.open_array(root / BASELINE_KEY.format(**site), mode="r")[:]


def measure_reads(manifest: list[dict], store: Path, compact: Path, baseline: Path, decoder_name: str, n: int,
                  seed: int) -> dict:
    """Median seconds to read one random whole site from each source, the readers taking turns.

    `platezarr_sites` is `converters.SiteDataset` (the training-loop reader: cached shard index, one
    pread, zstd, CRC32C); `platezarr_zarr` is plain zarr-python indexing `images[well, site]`;
    `compact_sites` is SiteDataset on the compact store (JPEG-LS).
    """
    import converters as pz

    decode = decoder(decoder_name)
    arrays = plate_arrays(store)
    sites, compact_sites = pz.SiteDataset(store), pz.SiteDataset(compact)
    position = {(r.experiment, int(r.plate), r.well, int(r.site)): i for i, r in enumerate(sites.table.itertuples())}
    readers = {
        "png": lambda s: read_site(s["files"], decode),
        "platezarr_sites": lambda s: sites[position[(s["experiment"], s["plate"], s["well"], s["site"])]][0],
        "compact_sites": lambda s: compact_sites[position[(s["experiment"], s["plate"], s["well"], s["site"])]][0],
        "platezarr_zarr": lambda s: store_site(arrays, s),
        "baseline": lambda s: baseline_site(baseline, s),
    }
    times: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(seed)
    for i in range(n):
        site = rng.choice(manifest)
        names = list(readers)
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            readers[name](site)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure_codecs(manifest: list[dict], decoder_name: str, n: int, seed: int) -> dict:
    """CPU ms per site and bytes / PNG bytes of zstd levels 1-3, JPEG-LS and HTJ2K lossless, on `n` random sites.

    `bound` is 1 + encode / decode: the convert / floor ratio if encoding were the only extra work.
    JPEG-LS is the compact profile's codec (converters/jpegls.py); HTJ2K, the candidate the issue
    measured, is encoded planar, one code stream per site. Both are checked pixel-exact.
    """
    from converters.jpegls import decode_planes, encode_planes

    from numcodecs import Zstd

    decode = decoder(decoder_name)
    sample = random.Random(seed).sample(manifest, min(n, len(manifest)))
    pngs = [[Path(f).read_bytes() for f in s["files"]] for s in sample]
    blocks = [np.stack([decode(d) for d in site]) for site in pngs]
    png_bytes = sum(len(d) for site in pngs for d in site)
    decode_s = cpu_per_call(lambda site: [decode(d) for d in site], pngs)
    out = {"sites": len(sample), "png_decode_ms": decode_s * 1e3}
    for level in (1, 2, 3):
        codec = Zstd(level=level)
        encode_s = cpu_per_call(codec.encode, blocks)
        out[f"zstd{level}"] = {"encode_ms": encode_s * 1e3, "bytes_ratio_to_png": sum(len(codec.encode(b)) for b in blocks)
                               / png_bytes, "bound": 1 + encode_s / decode_s}
    encoded = [imagecodecs.htj2k_encode(b, planar=True) for b in blocks]
    exact = all(np.array_equal(imagecodecs.htj2k_decode(e), b) for e, b in zip(encoded, blocks))
    out["htj2k"] = {"encode_ms": cpu_per_call(lambda b: imagecodecs.htj2k_encode(b, planar=True), blocks) * 1e3,
                    "decode_ms": cpu_per_call(imagecodecs.htj2k_decode, encoded) * 1e3,
                    "bytes_ratio_to_png": sum(map(len, encoded)) / png_bytes, "pixel_exact": exact}
    encoded = [encode_planes(b) for b in blocks]
    exact = all(np.array_equal(decode_planes(e, b.shape, b.dtype), b) for e, b in zip(encoded, blocks))
    encode_s = cpu_per_call(encode_planes, blocks)
    out["jpegls"] = {"encode_ms": encode_s * 1e3, "bound": 1 + encode_s / decode_s,
                     "decode_ms": cpu_per_call(lambda e: decode_planes(e, blocks[0].shape, blocks[0].dtype), encoded) * 1e3,
                     "bytes_ratio_to_png": sum(map(len, encoded)) / png_bytes, "pixel_exact": exact}
    return out


def measure_rss(pool: list[list[Path]], work: Path, args: argparse.Namespace, runs: dict, decoder_name: str) -> dict:
    """Peak RSS of the conversion subprocess: median of the timed runs, and one run at --rss-scale x the sites."""
    timed = runs["platezarr"]
    rss = {"platezarr_bytes": statistics.median(r["peak_rss_bytes"] for r in timed),
           "platezarr_stages_bytes": timed[0]["stage_rss_bytes"],
           "floor_bytes": statistics.median(r["peak_rss_bytes"] for r in runs["floor"])}
    if args.rss_scale > 1:
        n = args.sites * args.rss_scale
        print(f"  peak RSS at {n} sites ...", file=sys.stderr)
        big = work / "big"
        (big / "manifest.json").parent.mkdir()
        (big / "manifest.json").write_text(json.dumps(build_input(pool, n, big)))
        result = in_child("platezarr", big / "manifest.json", big / "images", work / "out-big", args, decoder_name)
        rss.update(big_sites=n, big_bytes=result["peak_rss_bytes"], big_seconds=result["seconds"],
                   big_stages_bytes=result["stage_rss_bytes"])
        shutil.rmtree(work / "out-big", ignore_errors=True)
        shutil.rmtree(big, ignore_errors=True)
    return rss


def verify(manifest: list[dict], store: Path, compact: Path, baseline: Path, decoder_name: str, n: int,
           seed: int) -> dict:
    """Pixel-exact check of `n` random sites: both platezarr stores via plain zarr (and one via xarray), baseline."""
    import xarray as xr

    decode = decoder(decoder_name)
    arrays, compact_arrays = plate_arrays(store), plate_arrays(compact)
    sample = random.Random(seed + 1).sample(manifest, min(n, len(manifest)))
    bad = []
    for site in sample:
        pixels = read_site(site["files"], decode)
        name = "{experiment}/Plate{plate}/{well} site {site}".format(**site)
        if not np.array_equal(store_site(arrays, site), pixels):
            bad.append(f"platezarr {name}")
        if not np.array_equal(store_site(compact_arrays, site), pixels):
            bad.append(f"compact {name}")
        if not np.array_equal(np.moveaxis(baseline_site(baseline, site), -1, 0), pixels):
            bad.append(f"baseline {name}")
    first = sample[0]
    plate = xr.open_zarr(store, group=f"{first['experiment']}/Plate{first['plate']}")
    if not np.array_equal(plate.images.sel(well=first["well"], site=first["site"]).values,
                          read_site(first["files"], decode)):
        bad.append("platezarr via xarray {experiment}/Plate{plate}/{well} site {site}".format(**first))
    return {"sites": len(sample), "mismatches": bad, "ok": not bad}


# ------------------------------------------------------------------------------------------ report

def table_rows(r: dict) -> list[tuple[str, float | None, str, bool | None, str]]:
    """(figure, measured, target, passed, note) for each target of issue 6, from the raw numbers `r`."""
    t, cpu, s, reads, rss, codecs = r["medians"], r["cpu_medians"], r["sizes"], r["reads"], r["rss"], r["codecs"]
    mib = 2**20
    # time targets are met only if the wall-clock ratio and the (steadier) CPU-time ratio both meet them
    convert_floor, convert_floor_cpu = t["platezarr"] / t["floor"], cpu["platezarr"] / cpu["floor"]
    base_convert, base_convert_cpu = t["baseline"] / t["platezarr"], cpu["baseline"] / cpu["platezarr"]
    rows = [
        ("convert time / floor time", convert_floor, "<= 1.5", max(convert_floor, convert_floor_cpu) <= 1.5,
         f"CPU time {convert_floor_cpu:.2f}; write stage alone {t['platezarr_write'] / t['floor']:.2f}; "
         f"decode + zstd-3 alone {codecs['zstd3']['bound']:.2f}"),
        ("baseline time / convert time", base_convert, ">= 3", min(base_convert, base_convert_cpu) >= 3,
         f"CPU time {base_convert_cpu:.2f}; baseline decodes with {r['baseline_decoder']}; with the floor's "
         f"decoder (packing alone, one run) {t['baseline_packing'] / t['platezarr']:.2f}"),
        ("convert bytes / baseline bytes", s["platezarr_bytes"] / s["baseline_bytes"], "<= 0.7",
         s["platezarr_bytes"] / s["baseline_bytes"] <= 0.7, "whole stores"),
        ("files per site", s["platezarr_shard_files_per_site"], "<= 0.5", s["platezarr_shard_files_per_site"] <= 0.5,
         f"image shards; whole store {s['platezarr_files_per_site']:.2f} files + {s['platezarr_dirs_per_site']:.2f} "
         f"dirs; baseline {s['baseline_files_per_site']:.1f} files + {s['baseline_dirs_per_site']:.1f} dirs"),
        ("default bytes / PNG bytes", s["platezarr_bytes"] / s["png_bytes"], "<= 1.3",
         s["platezarr_bytes"] / s["png_bytes"] <= 1.3,
         f"zstd-3, whole store; zstd-2 {codecs['zstd2']['bytes_ratio_to_png']:.2f}, zstd-1 "
         f"{codecs['zstd1']['bytes_ratio_to_png']:.2f}"),
        ("compact profile bytes / PNG bytes", s["compact_bytes"] / s["png_bytes"], "<= 0.9",
         s["compact_bytes"] / s["png_bytes"] <= 0.9,
         f"JPEG-LS, whole store; convert time / floor {t['compact'] / t['floor']:.2f} (CPU "
         f"{cpu['compact'] / cpu['floor']:.2f}); HTJ2K lossless alone {codecs['htj2k']['bytes_ratio_to_png']:.2f}"),
        ("random local site read, PNG / SiteDataset", reads["png"] / reads["platezarr_sites"], ">= 5",
         reads["png"] / reads["platezarr_sites"] >= 5,
         f"PNG {reads['png'] * 1e3:.1f} ms, SiteDataset {reads['platezarr_sites'] * 1e3:.1f} ms, "
         f"baseline store {reads['baseline'] * 1e3:.1f} ms, compact store {reads['compact_sites'] * 1e3:.1f} ms"),
        ("random local site read, PNG / plain zarr", reads["png"] / reads["platezarr_zarr"], ">= 5",
         reads["png"] / reads["platezarr_zarr"] >= 5, f"zarr-python `images[well, site]` {reads['platezarr_zarr'] * 1e3:.1f} ms"),
    ]
    if "zarr_path" in t:
        rows.insert(1, ("convert time / floor time, zarr-python write path", t["zarr_path"] / t["floor"], "(before)", None,
                        f"CPU time {cpu['zarr_path'] / cpu['floor']:.2f}; shard writer off"))
    if "big_bytes" in rss:
        ratio = rss["big_bytes"] / rss["platezarr_bytes"]
        rows.append((f"peak RSS, {rss['big_sites'] // s['sites']}x sites / 1x", ratio, "<= 1.2 and <= 1 GB",
                     ratio <= 1.2 and rss["big_bytes"] <= 2**30,
                     f"{rss['platezarr_bytes'] / mib:.0f} MiB at {s['sites']} sites, "
                     f"{rss['big_bytes'] / mib:.0f} MiB at {rss['big_sites']}"))
    return rows


def format_table(r: dict) -> str:
    t, n, m = r["medians"], r["sizes"]["sites"], r["machine"]
    g = r["gil"]
    lines = [
        f"platezarr benchmark: {n} sites ({n * r['channels']} PNGs, {r['sizes']['png_bytes'] / 2**20:.0f} MiB), "
        f"{r['args']['workers']} workers on {m['cpus']} CPUs ({m['cpu_model']}), medians of {r['args']['repeats']}",
        f"floor decodes with {r['decoder']}; platezarr {n / t['platezarr']:.0f} sites/s, write stage "
        f"{t['platezarr_write']:.2f} s of {t['platezarr']:.2f} s",
        "median wall s / CPU s (cores busy): " + ", ".join(
            f"{name} {t[name]:.2f} / {r['cpu_medians'][name]:.2f} ({r['cpu_medians'][name] / t[name]:.2f})"
            for name in r["cpu_medians"]),
        f"GIL probe, speed-up over 1 thread: decode+zstd3 threads {g['decode+zstd3 serial'] / g['decode+zstd3 threads']:.2f}x, "
        f"processes {g['decode+zstd3 serial'] / g['decode+zstd3 processes']:.2f}x; decode threads "
        f"{g['decode serial'] / g['decode threads']:.2f}x, processes {g['decode serial'] / g['decode processes']:.2f}x",
        "",
        "| figure | measured | target | met | note |",
        "|---|---:|---|---|---|",
    ]
    for figure, value, target, passed, note in r["table"]:
        shown = "—" if value is None else f"{value:.2f}"
        verdict = ("—" if target.startswith("(") else "not done") if passed is None else ("yes" if passed else "**no**")
        lines.append(f"| {figure} | {shown} | {target} | {verdict} | {note} |")
    v = r["verify"]
    lines.append(f"\npixel-exact check of {v['sites']} random sites (platezarr via zarr and xarray, compact, baseline): "
                 + ("OK" if v["ok"] else "MISMATCH " + "; ".join(v["mismatches"])))
    return "\n".join(lines)


def machine() -> dict:
    import numcodecs
    import zarr

    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return {"cpus": os.cpu_count(), "cpu_model": models[0] if models else platform.processor(),
            "platform": platform.platform(), "python": platform.python_version(), "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__, "imagecodecs": imagecodecs.__version__, "numpy": np.__version__}


# -------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=1000, help="sites to convert (default 1000)")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of real RxRx-layout PNGs to replicate")
    p.add_argument("--repeats", type=int, default=3, help="repetitions of each contender (default 3)")
    p.add_argument("--json", type=Path, default=Path("platezarr-benchmark.json"), help="where to write the raw numbers")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallelism of every contender (default: cores)")
    p.add_argument("--rss-scale", type=int, default=10, help="also measure peak RSS at this many times --sites (0: skip)")
    p.add_argument("--baseline-decoder", choices=["png_decode", "spng_decode", "imageio"], default="imageio",
                   help="PNG decoder of the baseline (default: imageio, what rxrx1-utils uses)")
    p.add_argument("--with-zarr-path", action="store_true",
                   help="also time platezarr with its shard writer off (every shard through zarr-python)")
    p.add_argument("--reads", type=int, default=200, help="random sites read in the read test")
    p.add_argument("--verify", type=int, default=30, help="random sites checked pixel for pixel at the end")
    p.add_argument("--tmp", type=Path, default=None, help="where to build inputs and outputs (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--seed", type=int, default=0)
    for name in ("--child", "--manifest", "--src", "--out", "--decoder"):  # internal: contender subprocesses
        p.add_argument(name, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def benchmark(args: argparse.Namespace, work: Path) -> dict:
    """Build the input in `work`, run everything, and return the raw numbers with the table."""
    pool = real_sites(args.source)
    print(f"building {args.sites} sites from {len(pool)} real sites of {args.source} in {work}", file=sys.stderr)
    manifest = build_input(pool, args.sites, work)
    (work / "manifest.json").write_text(json.dumps(manifest))
    (work / "manifest-gil.json").write_text(json.dumps(manifest[:GIL_SITES]))
    decoders = probe_decoders(pool[0])
    fastest = min((n for n in decoders if n != "imageio"), key=decoders.get)
    runs = run_contenders(work, args, fastest)
    print("  reads, sizes, codecs, memory, verification ...", file=sys.stderr)
    stores = work / "out-platezarr", work / "out-compact", work / "out-baseline"
    r = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if v is not None},
        "machine": machine(), "decoder": fastest, "baseline_decoder": args.baseline_decoder,
        "decoder_cpu_ms_per_png": {k: v * 1e3 for k, v in decoders.items()},
        "channels": len(pool[0]), "real_sites": len(pool), "runs": runs,
        "medians": {name: statistics.median(x["seconds"] for x in runs[name]) for name in runs if name != "gil"}
        | {"platezarr_write": statistics.median(x["write_seconds"] for x in runs["platezarr"])},
        "cpu_medians": {name: statistics.median(x["cpu_seconds"] for x in runs[name]) for name in runs if name != "gil"},
        "gil": {k: v for k, v in runs["gil"][0].items() if " " in k},
        "reads": measure_reads(manifest, *stores, fastest, args.reads, args.seed),
        "sizes": measure_sizes(manifest, work),
        "codecs": measure_codecs(manifest, fastest, 20, args.seed),
        "verify": verify(manifest, *stores, fastest, args.verify, args.seed),
    }
    r["rss"] = measure_rss(pool, work, args, runs, fastest)
    r["table"] = table_rows(r)
    return r


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="platezarr-bench-", dir=args.tmp))
    try:
        result = benchmark(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["total_seconds"] = time.perf_counter() - began
    result["table_markdown"] = format_table(result)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print("\n" + result["table_markdown"])
    print(f"\nraw numbers: {args.json} (whole benchmark {result['total_seconds']:.0f} s)")
    return 0 if result["verify"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
