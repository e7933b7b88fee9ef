"""Scale figures (issue 15, item 5): what a site costs in each source layout, and what that makes of whole datasets.

    python benchmarks/scale.py                      # every layout, bucket requests, scheduler overhead (~6 min)
    python benchmarks/scale.py --wells 0.5          # half the wells of each layout
    python benchmarks/scale.py --s3 rxrx1           # count bucket requests for RxRx1 only ("" for none)

Input, generated in a temporary folder from the real images of ../shared/data with tests/sources.py's helpers:
- rxrx1    RxRx1: 512² 8-bit PNG files, 6 channels, 2 sites a well (`write_rxrx_source`, tiles of the real PNGs);
- rxrx2    RxRx2: 1024² 8-bit PNG files, 6 channels, 4 sites a well, the rxrx2 schema (the same, tiled to 1024²);
- rxrx3    RxRx3: 2048² 16-bit PNGs in one tar per plate, 6 channels, 1 site a well, with a metadata table of
           RxRx3's columns (`write_rxrx3_source`: `tile16` tiles of the real CPJUMP1 16-bit TIFFs);
- cpjump1  CPJUMP1: 1080² 16-bit LZW TIFFs (as the real ones), 8 channels, 9 fields a well, in the Cell Painting
           Gallery's folders `BATCH/images/PLATE__…-Measurement1/Images/` (`tile16` of the real TIFFs).

Measured, for each layout:
- a conversion (`converters.convert`, default settings) with one worker thread, in a fresh process, --repeats times
  (the run with the median CPU time is shown): CPU seconds and wall seconds of the write stage per site (sites/s
  per core = 1 / CPU s per site), of the whole run, and peak RSS (VmHWM) — the memory of one worker converting one
  well at a time — and how much of it is above the process's own before the conversion;
- bytes read and written per site;
- with --s3: the same source uploaded to a moto S3 server on 127.0.0.1 (tests/s3server.py, which counts every
  request) and converted bucket to bucket with 2 workers: requests per site by kind (GET, HEAD, LIST, PUT, POST).
Then the dask.distributed overhead per task: --tasks no-op tasks through converters.execute.run_tasks on a
LocalCluster of 2 worker processes (1 thread each), the path `convert --scheduler` takes: tasks/s, wall ms per task,
and the CPU ms per task of the client + scheduler process (serial: it bounds the tasks/s of any cluster); the
local thread pool for comparison; and the resident memory of an idle dask worker process.
Last, the cost model: hours and requests for RxRx1, RxRx3 and cpg0016 on 2, 64 and 600 cores.

The machine's load average is sampled through the run and printed: on a shared machine, CPU seconds are the
figure to trust. Raw numbers go to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path[1:1] = [str(HERE.parent / "tests")]  # tests/sources.py (generated inputs), tests/s3server.py (moto)

from convert_bench.process import StageRSS, machine, peak_rss  # noqa: E402

if TYPE_CHECKING:
    from s3server import S3Server

BUCKET_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
CORES = (2, 64, 600)
# Whole datasets: sites, plates, the layout whose measured costs stand for them, source bytes per site where the
# dataset's published size is known (else the generated source's), and where the numbers come from.
DATASETS = {
    "RxRx1": (125_510, 204, "rxrx1", None, "51 experiments x 4 plates, 62,755 wells x 2 sites: RxRx1's competition "
                                           "tables (../shared/data/rxrx1/kaggle)"),
    "RxRx3": (2_200_000, 1_450, "rxrx3", 83e12 / 2.2e6, "about 1,450 plates x 1,536 wells x 1 site, 83 TB (issue 15)"),
    "cpg0016": (8_000_000, 2_400, "cpjump1", 126e12 / 8e6,
                "the Cell Painting Gallery README: 'over 8 million images (>126 TB)', read as fields: about "
                "2,400 plates x 384 wells x 9 fields = 8.3 million"),
}


# ------------------------------------------------------------------------------------------------ input

@dataclass(frozen=True)
class Layout:
    """A source layout: how to generate it from the real images, and how to convert it."""

    name: str
    title: str
    wells: int  # at --wells 1
    write: Callable[[Path, int], tuple[str, str | None]]  # (root, wells) → (SRC relative to root, metadata or None)


def rxrx_wells(n: int, rows: str = "BCDEFGHIJKLMNO", columns: range = range(2, 24)) -> list[str]:
    """The first `n` wells of a plate, row by row."""
    return [f"{r}{c:02d}" for r in rows for c in columns][:n]


def write_rxrx1(root: Path, n: int) -> tuple[str, str | None]:
    from sources import write_rxrx_source

    write_rxrx_source(root / "images", {("HUVEC-01", 1): rxrx_wells(n)}, sites=(1, 2), size=512)
    return "images", None


def write_rxrx2(root: Path, n: int) -> tuple[str, str | None]:
    from sources import write_rxrx_source

    write_rxrx_source(root / "images", {("HUVEC-1", 1): rxrx_wells(n, "ABCDEFGHIJKLMNOP", range(2, 48))},
                      sites=(1, 2, 3, 4), size=1024)
    return "images", None


def write_rxrx3(root: Path, n: int) -> tuple[str, str | None]:
    """Two plate tars (RxRx3 names them `{experiment}/Plate{plate}.tar`) and a metadata table of RxRx3's columns."""
    from sources import write_csv, write_rxrx3_source

    wells = rxrx_wells(n, "ABCDEFGHIJKLMNOP", range(2, 48))
    plates = {("gene-001", 1): wells[: n // 2], ("gene-001", 2): wells[n // 2:]}
    write_rxrx3_source(root / "images", plates, size=2048)
    write_csv(root / "metadata.csv", [
        dict(well_id=f"{e}_{p}_{w}", experiment_name=e, plate=p, address=w, gene="EMPTY_control",
             treatment="EMPTY_control", SMILES=None, concentration=None, perturbation_type="CRISPR", cell_type="HUVEC")
        for (e, p), ws in plates.items() for w in ws])
    return "images", "metadata.csv"


def write_cpjump1(root: Path, n: int) -> tuple[str, str | None]:
    """Phenix-named LZW TIFFs of `tile16` pixels, 8 channels and 9 fields a well, in a Gallery batch folder."""
    import tifffile

    from sources import tile16

    batch = root / "2020_11_04_CPJUMP1"
    images = batch / "images" / "BR00116991__2020-11-05T19_51_35-Measurement1" / "Images"
    images.mkdir(parents=True)
    index = 0
    for well in rxrx_wells(n, "ABCDEFGHIJKLMNOP", range(1, 25)):
        row, column = "ABCDEFGHIJKLMNOP".index(well[0]) + 1, int(well[1:])
        for field in range(1, 10):
            for channel in range(1, 9):
                index += 1
                tifffile.imwrite(images / f"r{row:02d}c{column:02d}f{field:02d}p01-ch{channel}sk1fk1fl1.tiff",
                                 tile16(channel - 1, index, 1080), compression="lzw")
    return "2020_11_04_CPJUMP1", None


LAYOUTS = {layout.name: layout for layout in (
    Layout("rxrx1", "RxRx1: 512² u8 PNG files, 6 channels", 16, write_rxrx1),
    Layout("rxrx2", "RxRx2: 1024² u8 PNG files, 6 channels", 6, write_rxrx2),
    Layout("rxrx3", "RxRx3: 2048² u16 PNGs in plate tars, 6 channels", 6, write_rxrx3),
    Layout("cpjump1", "CPJUMP1: 1080² u16 LZW TIFFs, 8 channels", 2, write_cpjump1),
)}


def tree_bytes(path: Path) -> int:
    """Bytes of every file below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------- conversion (child)

def convert_child(src: str, out: str, metadata: str | None, workers: int) -> dict:
    """One conversion in this process: wall and CPU seconds of the whole run and of its write stage, peak RSS."""
    import converters as pz
    from converters.convert import Progress

    marks: dict[str, tuple[float, float]] = {}
    rss = StageRSS()

    def progress(event: Progress) -> None:
        marks.setdefault(event.stage, (time.perf_counter(), time.process_time()))
        rss.stage = event.stage

    idle = peak_rss()  # this process with everything imported, before the conversion
    start = (time.perf_counter(), time.process_time())
    summary = pz.convert(src, out, metadata=metadata, workers=workers, progress=progress)
    end = (time.perf_counter(), time.process_time())
    write, done = marks.get("write", start), marks.get("finalize", end)
    return {"sites": summary.as_dict()["sites"], "wall_s": end[0] - start[0], "cpu_s": end[1] - start[1],
            "write_wall_s": done[0] - write[0], "write_cpu_s": done[1] - write[1], "peak_rss_bytes": peak_rss(),
            "idle_rss_bytes": idle, "stage_rss_bytes": rss.peaks}


def in_child(src: str, out: str, metadata: str | None, workers: int) -> dict:
    """`convert_child` in a fresh Python process (its memory is the conversion's alone)."""
    cmd = [sys.executable, __file__, "--child", src, out, metadata or "", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.exit(f"conversion of {src} failed (exit status {done.returncode}):\n{done.stdout[-1000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ measurements

def measure_local(root: Path, src: str, metadata: str | None, repeats: int) -> dict:
    """Convert the generated source with one worker, `repeats` times in fresh processes: the run with the median
    write-stage CPU time (its per-site CPU, wall, peak RSS), and bytes per site read and written."""
    out = root / "out.zarr"
    runs = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        runs.append(in_child(str(root / src), str(out), str(root / metadata) if metadata else None, 1))
    r = sorted(runs, key=lambda run: run["write_cpu_s"])[len(runs) // 2]
    r["write_cpu_s_runs"] = [run["write_cpu_s"] for run in runs]
    n = r["sites"]
    r.update(source_bytes_per_site=tree_bytes(root / src) / n, output_bytes_per_site=tree_bytes(out) / n,
             write_cpu_s_per_site=r["write_cpu_s"] / n, write_wall_s_per_site=r["write_wall_s"] / n,
             cpu_s_per_site=r["cpu_s"] / n)
    shutil.rmtree(out)
    return r


def request_kind(method: str, path: str, source: str) -> str:
    """What a request was for: the source's objects (GET, HEAD) or listing (LIST); a well's shard or completion
    record (the per-well hot path); else store metadata (fixed per store and plate)."""
    bucket, _, key = path.strip("/").partition("/")
    if bucket == source:
        return "source LIST" if method == "GET" and not key else f"source {method}"
    if "/images/c." in key or "/images/c/" in key:
        return f"shard {method}"
    return f"record {method}" if "/_platezarr/wells/" in key else f"metadata {method}"


def measure_s3(server: S3Server, layout: Layout, root: Path, src: str, metadata: str | None) -> dict:
    """Upload the source to s3://src-NAME, convert it to s3://out-NAME with 2 workers; requests by kind."""
    import boto3
    import obstore

    from converters.location import parse_location

    src_bucket, out_bucket = f"src-{layout.name}", f"out-{layout.name}"
    client = boto3.client("s3", endpoint_url=server.endpoint)
    for name in (src_bucket, out_bucket):
        client.create_bucket(Bucket=name)
    store = parse_location(f"s3://{src_bucket}").object_store()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "out.zarr" not in p.parts):
        obstore.put(store, path.relative_to(root).as_posix(), path.read_bytes())
    server.requests.clear()
    r = in_child(f"s3://{src_bucket}/{src}", f"s3://{out_bucket}/store.zarr",
                 f"s3://{src_bucket}/{metadata}" if metadata else None, 2)
    kinds: Counter = Counter()
    for (method, path), n in server.requests.items():
        kinds[request_kind(method, path, src_bucket)] += n
    n = r["sites"]
    hot = {k: v for k, v in kinds.items() if k.split()[0] in ("shard", "record") or k in ("source GET", "source HEAD")}
    return {"sites": n, "requests": dict(sorted(kinds.items())), "hot_per_site": {k: v / n for k, v in hot.items()},
            "hot_total_per_site": sum(hot.values()) / n, "fixed": sum(kinds.values()) - sum(hot.values()),
            "total_per_site": sum(kinds.values()) / n}


def noop(job: None, task: int) -> int:
    """A task that does nothing: what is left of its time is the executor's."""
    return task


def measure_scheduler(tasks: int) -> dict:
    """No-op tasks through converters.execute.run_tasks: on a LocalCluster (2 processes x 1 thread) and locally."""
    import psutil
    from distributed import Client, LocalCluster, as_completed

    from converters.execute import run_tasks

    out: dict = {"tasks": tasks}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        list(run_tasks(noop, None, range(50), 2, address))  # warm up: connect, ship the function once
        runs = []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            if sorted(run_tasks(noop, None, range(tasks), 2, address)) != list(range(tasks)):
                sys.exit("the cluster lost or repeated a no-op task")
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        wall_s, cpu_s = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        with Client(address) as client:
            worker_rss = list(client.run(lambda: psutil.Process().memory_info().rss).values())
            wall, cpu = time.perf_counter(), time.process_time()
            for future in as_completed(client.map(noop, [None] * tasks, range(tasks), pure=False)):
                future.result()
            batch = (time.perf_counter() - wall, time.process_time() - cpu)
    out["distributed_all_at_once"] = {"tasks_per_s": tasks / batch[0], "ms_per_task": batch[0] / tasks * 1e3,
                                      "client_scheduler_cpu_ms_per_task": batch[1] / tasks * 1e3}
    out["distributed"] = {"wall_s": wall_s, "tasks_per_s": tasks / wall_s, "ms_per_task": wall_s / tasks * 1e3,
                          "client_scheduler_cpu_ms_per_task": cpu_s / tasks * 1e3,
                          "idle_worker_rss_bytes": statistics.median(worker_rss)}
    start = time.perf_counter()
    list(run_tasks(noop, None, range(tasks), 2))
    wall = time.perf_counter() - start
    out["local_threads"] = {"tasks_per_s": tasks / wall, "ms_per_task": wall / tasks * 1e3}
    return out


class LoadSampler:
    """The 1-minute load average every 5 s, in a daemon thread."""

    def __init__(self) -> None:
        self.samples = [os.getloadavg()[0]]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(5)
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"min": min(self.samples), "median": statistics.median(self.samples), "max": max(self.samples)}


# ------------------------------------------------------------------------------------------ cost model

def cost_model(layouts: dict, scheduler: dict) -> list[dict]:
    """Hours, requests and the rates they need, for each dataset on each number of cores. Compute-bound with perfect
    scaling (hours = sites x write-stage CPU s per site / cores), and no faster than the client + scheduler process
    can hand out jobs, each of as many wells as `converters.execute.batch_size` puts in one (about 2 s of work) and
    costing what one dask task costs it (the no-op tasks submitted all at once); requests = sites x the per-site hot
    path + the fixed requests of the measured store once per plate (an upper bound: part of them is per store)."""
    from converters.execute import batch_size

    rows = []
    job_ms = scheduler["distributed_all_at_once"]["client_scheduler_cpu_ms_per_task"]
    max_tasks_per_s = 1e3 / job_ms
    for dataset, (sites, plates, name, source_bytes, _) in DATASETS.items():
        m = layouts.get(name)
        if m is None:
            continue
        cpu = m["local"]["write_cpu_s_per_site"]
        sites_per_task = m["sites_per_well"] * batch_size(cpu * m["sites_per_well"])  # sites a job for the cluster holds
        s3 = m.get("s3")
        for cores in CORES:
            sites_per_s = cores / cpu
            hours = sites * cpu / cores / 3600
            row = {"dataset": dataset, "sites": sites, "layout": name, "cores": cores, "hours": hours,
                   "hours_scheduler_bound": max(hours, sites / sites_per_task / max_tasks_per_s / 3600),
                   "sites_per_s": sites_per_s,
                   "source_MB_per_s": sites_per_s * (source_bytes or m["local"]["source_bytes_per_site"]) / 1e6,
                   "output_MB_per_s": sites_per_s * m["local"]["output_bytes_per_site"] / 1e6,
                   "tasks_per_s": sites_per_s / sites_per_task,
                   "scheduler_share": sites_per_s / sites_per_task * job_ms / 1e3}
            if s3:
                per_site = s3["hot_per_site"]
                reads = sum(v for k, v in per_site.items() if k.startswith("source"))
                row.update(requests=sites * s3["hot_total_per_site"] + plates * s3["fixed"],
                           read_requests_per_s=sites_per_s * reads,
                           write_requests_per_s=sites_per_s * (s3["hot_total_per_site"] - reads))
            rows.append(row)
    return rows


def duration(hours: float) -> str:
    """`hours` in hours, minutes or seconds, whichever reads best."""
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:.0f} min" if hours >= 1 / 60 else f"{hours * 3600:.0f} s"


def report(r: dict) -> str:
    """The tables docs/scale.md quotes."""
    load, m = r["load"], r["machine"]
    lines = [f"platezarr scale benchmark: {m['cpus']} CPUs ({m['cpu_model']}), load average during the run "
             f"{load['min']:.1f}-{load['max']:.1f} (median {load['median']:.1f}), {r['seconds']:.0f} s in all", "",
             "| layout | sites | sites/s per core (CPU) | sites/s (wall, 1 worker) | CPU s / site, whole run "
             "| MB read / site | MB written / site | peak RSS, 1 worker (MiB) | of which above the idle process |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in r["layouts"].items():
        loc = x["local"]
        lines.append(f"| {LAYOUTS[name].title} | {loc['sites']} | {1 / loc['write_cpu_s_per_site']:.2f} | "
                     f"{1 / loc['write_wall_s_per_site']:.2f} | {loc['cpu_s_per_site']:.3f} | "
                     f"{loc['source_bytes_per_site'] / 1e6:.2f} | {loc['output_bytes_per_site'] / 1e6:.2f} | "
                     f"{loc['peak_rss_bytes'] / 2**20:.0f} | "
                     f"{(loc['peak_rss_bytes'] - loc['idle_rss_bytes']) / 2**20:.0f} |")
    s3_rows = [(name, x["s3"]) for name, x in r["layouts"].items() if "s3" in x]
    if s3_rows:
        kinds = sorted({k for _, s in s3_rows for k in s["hot_per_site"]})
        lines += ["", "| bucket to bucket, 2 workers | sites | " + " | ".join(f"{k} / site" for k in kinds)
                  + " | hot path / site | fixed requests | all / site |", "|---|---:|" + "---:|" * (len(kinds) + 3)]
        for name, s in s3_rows:
            lines.append(f"| {name} | {s['sites']} | " + " | ".join(f"{s['hot_per_site'].get(k, 0):.2f}" for k in kinds)
                         + f" | {s['hot_total_per_site']:.2f} | {s['fixed']} | {s['total_per_site']:.2f} |")
    d, t, b = (r["scheduler"][k] for k in ("distributed", "local_threads", "distributed_all_at_once"))
    lines += ["", f"dask.distributed LocalCluster (2 worker processes x 1 thread), {r['scheduler']['tasks']} no-op tasks "
              f"through converters.execute.run_tasks: {d['tasks_per_s']:.0f} tasks/s, {d['ms_per_task']:.2f} ms per task "
              f"(wall), {d['client_scheduler_cpu_ms_per_task']:.2f} ms CPU per task in the client + scheduler process; "
              f"idle worker process {d['idle_worker_rss_bytes'] / 2**20:.0f} MiB; local thread pool "
              f"{t['tasks_per_s']:.0f} tasks/s ({t['ms_per_task']:.3f} ms per task); the same tasks submitted all at "
              f"once (client.map, as_completed): {b['tasks_per_s']:.0f} tasks/s, {b['client_scheduler_cpu_ms_per_task']:.2f} "
              "ms CPU per task in the client + scheduler process", "",
              "| dataset | sites | cores | time, CPU-bound | time, scheduler-bound | sites/s | source MB/s | output MB/s "
              "| requests | read req/s | write req/s | jobs/s | scheduler busy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in r["cost_model"]:
        lines.append(f"| {c['dataset']} ({c['layout']}) | {c['sites']:,} | {c['cores']} | {duration(c['hours'])} | "
                     f"{duration(c['hours_scheduler_bound'])} | "
                     f"{c['sites_per_s']:,.0f} | {c['source_MB_per_s']:,.0f} | {c['output_MB_per_s']:,.0f} | "
                     + (f"{c['requests'] / 1e6:,.2f} M | {c['read_requests_per_s']:,.0f} | "
                        f"{c['write_requests_per_s']:,.0f}" if "requests" in c else "— | — | —")
                     + f" | {c['tasks_per_s']:,.1f} | {c['scheduler_share']:.0%} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="layouts to measure (default: all)")
    p.add_argument("--wells", type=float, default=1.0, help="scale the wells of every layout (default 1: "
                   + ", ".join(f"{x.name} {x.wells}" for x in LAYOUTS.values()) + ")")
    p.add_argument("--s3", default="rxrx1,rxrx3,cpjump1", help="layouts whose bucket requests are counted ('' none)")
    p.add_argument("--repeats", type=int, default=3, help="conversions of each layout; the median is shown (default 3)")
    p.add_argument("--tasks", type=int, default=500, help="no-op tasks for the scheduler overhead")
    p.add_argument("--json", type=Path, default=Path("platezarr-scale.json"), help="where to write the raw numbers")
    p.add_argument("--tmp", type=Path, default=None, help="where to build inputs (default: system temp)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # internal: SRC OUT METADATA WORKERS
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        src, out, metadata, workers = args.child
        print(json.dumps(convert_child(src, out, metadata or None, int(workers))))
        return 0
    from s3server import S3Server

    began, load = time.perf_counter(), LoadSampler()
    work = Path(tempfile.mkdtemp(prefix="platezarr-scale-", dir=args.tmp))
    os.environ.update(BUCKET_ENV)
    server = S3Server().start()
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "layouts": {}}
    try:
        for name in [n for n in args.layouts.split(",") if n]:
            layout, root = LAYOUTS[name], work / name
            wells = max(2, round(layout.wells * args.wells))
            print(f"{name}: generating {wells} wells ...", file=sys.stderr)
            src, metadata = layout.write(root, wells)
            local = measure_local(root, src, metadata, args.repeats)
            x = results["layouts"][name] = {"local": local, "wells": wells, "sites_per_well": local["sites"] / wells}
            print(f"  {local['sites']} sites: {1 / local['write_cpu_s_per_site']:.2f} sites per CPU s, "
                  f"peak RSS {local['peak_rss_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
            if name in args.s3.split(","):
                x["s3"] = measure_s3(server, layout, root, src, metadata)
                print(f"  bucket: {x['s3']['hot_total_per_site']:.2f} hot-path requests per site {x['s3']['requests']}",
                      file=sys.stderr)
            shutil.rmtree(root)
        print(f"scheduler: {args.tasks} no-op tasks ...", file=sys.stderr)
        results["scheduler"] = measure_scheduler(args.tasks)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["cost_model"] = cost_model(results["layouts"], results["scheduler"])
    results["load"], results["seconds"] = load.summary(), time.perf_counter() - began
    args.json.write_text(json.dumps(results, indent=2, default=str))
    results["table"] = report(results)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print("\n" + results["table"])
    print(f"\nraw numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
