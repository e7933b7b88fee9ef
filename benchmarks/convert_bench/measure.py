"""Measurements on the contenders' outputs: sizes and files, random whole-site reads, codec costs, pixel checks."""

from __future__ import annotations

import os
import random
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

import imagecodecs
import numpy as np

from convert_bench.contenders.baseline import baseline_site
from convert_bench.decoding import cpu_per_call, decoder, read_site


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

    out: dict[tuple[str, int], tuple[object, dict[str, int]]] = {}
    for experiment, group in zarr.open_group(store, mode="r").groups():
        for plate_name, _ in group.groups() if experiment != "index" else ():
            path = f"{experiment}/{plate_name}"
            wells = np.asarray(zarr.open_array(store, path=f"{path}/well", mode="r")[:])
            out[(experiment, int(plate_name.removeprefix("Plate")))] = (
                zarr.open_array(store, path=f"{path}/images", mode="r"), {str(w): i for i, w in enumerate(wells)})
    return out


def store_site(arrays: dict, site: dict) -> np.ndarray:
    """(channel, y, x): one site of a platezarr store, from the arrays of `plate_arrays`."""
    array, wells = arrays[(site["experiment"], site["plate"])]
    return array[wells[site["well"]], site["site"] - 1]


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
    from numcodecs import Zstd

    from converters.jpegls import decode_planes, encode_planes

    decode = decoder(decoder_name)
    sample = random.Random(seed).sample(manifest, min(n, len(manifest)))
    pngs = [[Path(f).read_bytes() for f in s["files"]] for s in sample]
    blocks = [np.stack([decode(d) for d in site]) for site in pngs]
    png_bytes = sum(len(d) for site in pngs for d in site)
    decode_s = cpu_per_call(lambda site: [decode(d) for d in site], pngs)
    out: dict = {"sites": len(sample), "png_decode_ms": decode_s * 1e3}
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
