"""OME-Zarr output benchmark (issue 12): four ways to an OME-Zarr 0.5 HCS plate set, on real pixels, in one run.

    python benchmarks/ome_zarr.py                       # RxRx1 616 sites + CPJUMP1 16 wells x 9 fields, 2 repetitions
    python benchmarks/ome_zarr.py --rxrx1-sites 1232 --cpjump1-wells 32 --repeats 3 --json ome.json
    python benchmarks/ome_zarr.py --tiles-only          # only the chunk-tile study

Inputs, built as links in a temporary folder (nothing copied):
- RxRx1: the real PNGs of ../shared/data/rxrx1 replicated into the RxRx1 layout (benchmarks/run.py's
  `build_input`: 308 wells a plate, 2 sites a well, every site a real 6-channel 512² uint8 site);
- CPJUMP1: the real Opera Phenix TIFFs of ../shared/data/cpjump1/example_images (1080² uint16, 8
  channels, three real fields) replicated into plate BR00117010, 9 fields a well (`r04c14f01..09`).

Contenders, each in a fresh process, in rotating order, --repeats times (medians of wall and CPU time):
  ome          `converters.convert(SRC, OUT, format="ome-zarr")`                                  (a)
  ome_zarr_py  a plain script with ome-zarr-py's documented writer API (`write_plate_metadata`,
               `write_well_metadata`, `write_multiscale`): the same pyramid (converters.pyramid),
               chunks, shards, codecs (platezarr's chain for the dtype: zstd-3 for 8-bit, Blosc zstd-1
               with bit shuffling for 16-bit; crc32c) and decoder (converters.decode), one well per
               thread on the same number of threads                                                (b)
  native       `converters.convert(SRC, OUT)`                                                      (c)
  export       `converters.export(native store, OUT)`: the native store of the same repetition       (d)
Targets: (b)/(a) >= 5, (a)/(c) <= 1.3, (a)/(d) >= 2. Also files and folders per site, output bytes per
source byte, and a pixel check of level 0 in (a), (b) and (d) against the source.

The tile study (`--tiles`, on by default) encodes real fields with inner chunks of several sides and
measures what each costs a writer (encode time, bytes) and a viewer (bytes and decode time to show
a 512² viewport at full resolution, and a whole channel plane): the basis of converters.pyramid.TILE.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# This script's own folder leaves the import path, so that `import ome_zarr` is ome-zarr-py and not this file;
# benchmarks/run.py (the input builder and measuring helpers of the main benchmark) is loaded from its path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("platezarr_benchmark_run", HERE / "run.py")
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)
build_input, cpu_seconds, link, machine = run.build_input, run.cpu_seconds, run.link, run.machine
peak_rss, real_sites, tree_counts = run.peak_rss, run.real_sites, run.tree_counts

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PLATEZARR_SHARED_DATA", REPO.parent / "shared" / "data"))
CONTENDERS = ("ome", "ome_zarr_py", "native", "export")
CPJUMP1 = {"experiment": "2020_11_04_CPJUMP1", "plate": "BR00117010"}
VIEWPORT = 512


# ------------------------------------------------------------------------------------------------ input

def build_rxrx1(root: Path, n_sites: int) -> list[dict]:
    """RxRx1-layout PNG links in root/images; returns one entry per well (group, well, sites of files)."""
    manifest = build_input(real_sites(SHARED / "rxrx1"), n_sites, root)
    wells: dict[tuple[str, str], list[list[str]]] = {}
    for site in manifest:
        wells.setdefault((f"{site['experiment']}/Plate{site['plate']}", site["well"]), []).append(site["files"])
    return [{"group": g, "well": w, "sites": s} for (g, w), s in wells.items()]


def build_cpjump1(root: Path, n_wells: int) -> list[dict]:
    """Phenix-named TIFF links in root/images: `n_wells` wells of 9 fields, each field a real 8-channel one."""
    fields = sorted({p.name[:9] for p in (SHARED / "cpjump1" / "example_images").rglob("r*c*f05p01-ch1*.tiff")})
    real = {name: next((SHARED / "cpjump1" / "example_images").rglob(f"{name}p01-ch1sk1fk1fl1.tiff")).parent
            for name in fields}
    folder = root / "images"
    folder.mkdir(parents=True)
    entries = []
    for w in range(n_wells):
        row, column = 1 + w // 22, 2 + w % 22
        sites = []
        for field in range(1, 10):
            source = fields[(w * 9 + field) % len(fields)]
            files = []
            for channel in range(1, 9):
                path = folder / f"r{row:02d}c{column:02d}f{field:02d}p01-ch{channel}sk1fk1fl1.tiff"
                link(real[source] / f"{source}p01-ch{channel}sk1fk1fl1.tiff", path)
                files.append(str(path))
            sites.append(files)
        entries.append({"group": f"{CPJUMP1['experiment']}/{CPJUMP1['plate']}", "well": f"{'ABCDEFGHIJKLMNOP'[row - 1]}{column:02d}",
                        "sites": sites})
    return entries


# ------------------------------------------------------------------------------------------- contenders

def run_platezarr(kind: str, src: Path, out: Path, native: Path, dataset: str, workers: int) -> None:
    import converters as pz

    options = CPJUMP1 if dataset == "cpjump1" else {}
    if kind == "export":
        pz.export(native, out, workers=workers)
    else:
        pz.convert(src, out, format="ome-zarr" if kind == "ome" else "native", workers=workers, **options)


def run_ome_zarr_py(manifest: list[dict], out: Path, dataset: str, workers: int) -> None:
    """The same plates through ome-zarr-py's writer: plate and well metadata, then each field's pyramid."""
    import zarr
    from ome_zarr.writer import write_multiscale, write_plate_metadata, write_well_metadata

    from converters.decode import decode_image
    from converters.profiles import profile_for
    from converters.pyramid import halve, level_shapes, tile_side
    from converters.schema import load_schema

    schema = load_schema(dataset)
    shape, dtype = schema.image_shape, schema.dtype
    size = schema.pixel_size_um or 1.0
    profile = profile_for("default", dtype)  # the chain platezarr writes for this dtype
    storage = []
    for y, x in level_shapes(shape):
        chunks = (1, tile_side(y), tile_side(x))
        storage.append({"chunks": chunks, "shards": (len(schema.channels), y, x), "compressors": profile.compressors(),
                        "chunk_key_encoding": {"name": "default", "separator": "."}})
    top = float(np.iinfo(dtype).max)
    omero = {"channels": [{"label": c.name, "color": c.color, "active": c.visible,
                           "window": {"min": 0.0, "max": top, "start": 0.0, "end": top}} for c in schema.channels]}
    root = zarr.open_group(out, mode="w", zarr_format=3)
    for group in sorted({e["group"] for e in manifest}):
        wells = [e["well"] for e in manifest if e["group"] == group]
        plate = root.require_group(group)
        write_plate_metadata(plate, list("ABCDEFGHIJKLMNOP"), [f"{c:02d}" for c in range(1, 25)],
                             [f"{w[:-2]}/{w[-2:]}" for w in wells], field_count=len(schema.sites), name=group,
                             acquisitions=[{"id": 0, "name": group}])

    def write(entry: dict) -> None:
        well = root[entry["group"]].require_group(entry["well"][:-2]).require_group(entry["well"][-2:])
        write_well_metadata(well, [{"path": str(s), "acquisition": 0} for s in range(len(entry["sites"]))])
        for s, files in enumerate(entry["sites"]):
            image = np.stack([decode_image(Path(f).read_bytes(), f, shape, dtype) for f in files])
            pyramid = [image]
            while len(pyramid) < len(storage):
                pyramid.append(halve(pyramid[-1]))
            write_multiscale(pyramid, well.require_group(str(s)), axes=["c", "y", "x"],
                             storage_options=[dict(o) for o in storage],  # the writer pops keys from them
                             scale={"c": 1.0, "y": size, "x": size}, axes_units={"y": "micrometer", "x": "micrometer"},
                             metadata={"omero": omero})

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, manifest))


def child_main(args: argparse.Namespace) -> None:
    """One contender in this fresh process: its wall and CPU seconds and peak RSS as one JSON line."""
    import converters  # noqa: F401
    import ome_zarr.writer  # noqa: F401

    manifest = json.loads(Path(args.manifest).read_text())
    cpu, start = cpu_seconds(), time.perf_counter()
    if args.child == "ome_zarr_py":
        run_ome_zarr_py(manifest, Path(args.out), args.dataset, args.workers)
    else:
        run_platezarr(args.child, Path(args.src), Path(args.out), Path(args.native), args.dataset, args.workers)
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu,
                      "peak_rss_bytes": peak_rss()}))


def in_child(kind: str, work: Path, dataset: str, args: argparse.Namespace) -> dict:
    out = work / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    cmd = [sys.executable, __file__, "--child", kind, "--dataset", dataset, "--manifest", str(work / "manifest.json"),
           "--src", str(work / "images"), "--out", str(out), "--native", str(work / "out-native"),
           "--workers", str(args.workers)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} on {dataset} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ measurements

def check_pixels(work: Path, manifest: list[dict], dataset: str, n: int = 12) -> None:
    """Level 0 of `n` random fields in (a), (b) and (d), through plain zarr, equals the source images."""
    import zarr

    from converters.decode import decode_image
    from converters.schema import load_schema

    schema = load_schema(dataset)
    rng = random.Random(0)
    for _ in range(n):
        entry = rng.choice(manifest)
        s = rng.randrange(len(entry["sites"]))
        want = np.stack([decode_image(Path(f).read_bytes(), f, schema.image_shape, schema.dtype) for f in entry["sites"][s]])
        field = f"{entry['group']}/{entry['well'][:-2]}/{entry['well'][-2:]}/{s}"
        for kind, level in (("ome", "0"), ("ome_zarr_py", "s0"), ("export", "0")):
            got = zarr.open_array(work / f"out-{kind}" / field / level, mode="r")[...]
            if not np.array_equal(got, want):
                sys.exit(f"pixel mismatch in {kind} at {field}")


def sizes(work: Path, manifest: list[dict]) -> dict:
    n = sum(len(e["sites"]) for e in manifest)
    source = sum(os.path.getsize(f) for e in manifest for files in e["sites"] for f in files)
    out = {"sites": n, "source_bytes": source}
    for kind in CONTENDERS:
        size, files, dirs = tree_counts(work / f"out-{kind}")
        out[kind] = {"bytes_per_source_byte": size / source, "files_per_site": files / n, "dirs_per_site": dirs / n}
    return out


def tile_study(n_fields: int = 3, seed: int = 0) -> list[dict]:
    """For real 1080² uint16 (CPJUMP1) and 512² uint8 (RxRx1) fields, each candidate tile side: encode seconds and
    bytes per field, and what a viewer pays to show a random 512² viewport of one channel at level 0 and a whole plane."""
    import imagecodecs
    import tifffile

    from converters.profiles import profile_for
    from converters.shard import ShardLayout

    cp = sorted((SHARED / "cpjump1" / "example_images").rglob("*f05p01-ch1sk1fk1fl1.tiff"))[:n_fields]
    cpjump1 = [np.stack([tifffile.imread(str(p).replace("-ch1", f"-ch{c}")) for c in range(1, 9)]) for p in cp]
    rx = real_sites(SHARED / "rxrx1")[:n_fields]
    rxrx1 = [np.stack([imagecodecs.png_decode(p.read_bytes()) for p in site]) for site in rx]
    rows = []
    rng = random.Random(seed)
    for name, fields, sides in (("CPJUMP1 1080² uint16", cpjump1, (1080, 540, 360, 270, 216, 135)),
                                ("RxRx1 512² uint8", rxrx1, (512, 256, 128))):
        channels, side = fields[0].shape[0], fields[0].shape[1]
        for tile in sides:
            layout = ShardLayout((channels, side, side), (1, tile, tile), fields[0].dtype,
                                 profile_for("default", fields[0].dtype))
            encode = math.inf
            for _ in range(3):  # the best of three: the machine is shared
                start = time.process_time()
                shards = [b"".join(layout.encode(f)) for f in fields]
                encode = min(encode, (time.process_time() - start) / len(fields))
            index = [layout.parse_index(s[-layout.index_nbytes:], "tile study") for s in shards]
            view_bytes, view_seconds, plane_seconds = [], [], []
            for _ in range(40):
                f, c = rng.randrange(len(fields)), rng.randrange(channels)
                y0, x0 = rng.randrange(side - VIEWPORT + 1), rng.randrange(side - VIEWPORT + 1)
                touched = [(c, i, j) for i in range(y0 // tile, (y0 + VIEWPORT - 1) // tile + 1)
                           for j in range(x0 // tile, (x0 + VIEWPORT - 1) // tile + 1)]
                start = time.perf_counter()
                for coords in touched:
                    offset, nbytes = (int(v) for v in index[f][coords])
                    layout.decode_chunk(shards[f][offset:offset + nbytes], "tile study")
                view_seconds.append(time.perf_counter() - start)
                view_bytes.append(sum(int(index[f][coords][1]) for coords in touched))
                start = time.perf_counter()
                for i in range(side // tile):
                    for j in range(side // tile):
                        offset, nbytes = (int(v) for v in index[f][(c, i, j)])
                        layout.decode_chunk(shards[f][offset:offset + nbytes], "tile study")
                plane_seconds.append(time.perf_counter() - start)
            rows.append({"images": name, "tile": tile, "encode_ms_per_field": 1000 * encode,
                         "mb_per_field": statistics.mean(map(len, shards)) / 1e6,
                         "viewport_kb": statistics.mean(view_bytes) / 1e3,
                         "viewport_ms": 1000 * statistics.median(view_seconds),
                         "plane_ms": 1000 * statistics.median(plane_seconds)})
    return rows


# ------------------------------------------------------------------------------------------------ report

def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(dataset: str, runs: dict[str, list[dict]], size: dict) -> tuple[str, dict]:
    wall = {k: median(v, "seconds") for k, v in runs.items()}
    cpu = {k: median(v, "cpu_seconds") for k, v in runs.items()}
    lines = [f"\n{dataset}: {size['sites']} sites, {size['source_bytes'] / 2**20:.0f} MiB of source images",
             "| contender | wall s | CPU s | sites/s | files / site | folders / site | bytes / source byte | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"ome": "(a) convert --format ome-zarr", "ome_zarr_py": "(b) ome-zarr-py writer script",
              "native": "(c) convert (native)", "export": "(d) export from (c)"}
    for kind in CONTENDERS:
        s = size[kind]
        lines.append(f"| {labels[kind]} | {wall[kind]:.1f} | {cpu[kind]:.1f} | {size['sites'] / wall[kind]:.0f} | "
                     f"{s['files_per_site']:.2f} | {s['dirs_per_site']:.2f} | {s['bytes_per_source_byte']:.2f} | "
                     f"{median(runs[kind], 'peak_rss_bytes') / 2**20:.0f} |")
    ratios = {"(b)/(a)": (wall["ome_zarr_py"] / wall["ome"], cpu["ome_zarr_py"] / cpu["ome"], ">= 5", lambda r: r >= 5),
              "(a)/(c)": (wall["ome"] / wall["native"], cpu["ome"] / cpu["native"], "<= 1.3", lambda r: r <= 1.3),
              "(a)/(d)": (wall["ome"] / wall["export"], cpu["ome"] / cpu["export"], ">= 2", lambda r: r >= 2)}
    lines += ["", "| ratio | wall | CPU | target | met |", "|---|---:|---:|---|---|"]
    for name, (w, c, target, ok) in ratios.items():
        lines.append(f"| {name} | {w:.2f} | {c:.2f} | {target} | {'yes' if ok(w) and ok(c) else '**no**'} |")
    return "\n".join(lines), {"wall": wall, "cpu": cpu, "ratios": {k: v[:2] for k, v in ratios.items()}}


def benchmark(args: argparse.Namespace) -> dict:
    results: dict = {"machine": machine(), "args": vars(args)}
    if args.tiles:
        rows = results["tiles"] = tile_study()
        print("\ninner chunk tiles (the dtype's chain, one channel a chunk; viewport 512² of one channel at level 0)")
        print("| images | tile | encode ms / field | MB / field | viewport KB | viewport ms | plane ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['images']} | {r['tile']} | {r['encode_ms_per_field']:.0f} | {r['mb_per_field']:.2f} | "
                  f"{r['viewport_kb']:.0f} | {r['viewport_ms']:.1f} | {r['plane_ms']:.1f} |")
    if args.tiles_only:
        return results
    for dataset, build, n in (("rxrx1", build_rxrx1, args.rxrx1_sites), ("cpjump1", build_cpjump1, args.cpjump1_wells)):
        with tempfile.TemporaryDirectory(prefix=f"ome-bench-{dataset}-", dir=args.tmp) as tmp:
            work = Path(tmp)
            manifest = build(work, n)
            (work / "manifest.json").write_text(json.dumps(manifest))
            runs: dict[str, list[dict]] = {k: [] for k in CONTENDERS}
            for rep in range(args.repeats):
                order = [k for k in CONTENDERS[rep % 3:] + CONTENDERS[:rep % 3] if k != "export"]
                order.insert(order.index("native") + 1, "export")  # export reads this repetition's native store
                for kind in order:
                    runs[kind].append(in_child(kind, work, dataset, args))
                    print(f"  {dataset} repetition {rep + 1}/{args.repeats}: {kind:<12} "
                          f"{runs[kind][-1]['seconds']:7.2f} s wall {runs[kind][-1]['cpu_seconds']:7.2f} s CPU",
                          file=sys.stderr)
            check_pixels(work, manifest, dataset)
            size = sizes(work, manifest)
            table, numbers = report(dataset, runs, size)
            print(table)
            results[dataset] = {"runs": runs, "sizes": size, **numbers}
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rxrx1-sites", type=int, default=616, help="RxRx1 sites (308 wells a plate, 2 sites a well)")
    p.add_argument("--cpjump1-wells", type=int, default=16, help="CPJUMP1 wells of 9 fields")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--tiles", action=argparse.BooleanOptionalAction, default=True, help="run the tile study")
    p.add_argument("--tiles-only", action="store_true")
    p.add_argument("--tmp", help="folder for the temporary inputs and outputs")
    p.add_argument("--json", help="write every number here")
    for hidden in ("--child", "--dataset", "--manifest", "--src", "--out", "--native"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    started = time.perf_counter()
    results = benchmark(args)
    print(f"\n{time.perf_counter() - started:.0f} s in all, {args.workers} workers; machine: {results['machine']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
