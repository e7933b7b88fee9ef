"""Streaming sites into a training loop at bucket latency (issue 14): five ways to read the same sites.

Run it from a checkout with the bench extra installed (`pip install -e ".[test,bench]"`, plus torch) and node/npm
on the PATH; 20-25 minutes on 2 cores:

    python benchmarks/streaming.py                         # 1,000 sites; 0, 20 and 50 ms; 3 repeats
    python benchmarks/streaming.py --latency 20 --repeats 5 --json streaming.json
    python benchmarks/streaming.py --server moto            # moto instead of s3rver (slow ranged GETs, see below)
    python benchmarks/streaming.py --latency 20 --split     # contenders on CPU 0, server and proxy on the others
    python benchmarks/streaming.py --contenders stream wds-zstd --repeats 5

Input: the real RxRx1 PNGs of ../shared/data/rxrx1 replicated (hard links, as benchmarks/run.py does) into an
RxRx1-layout dataset of --sites sites (2 per well, 6 channels of 512x512 uint8), converted with defaults
(zstd-3 + CRC32C, a shard per well). The PNGs, the store and two WebDataset copies (`webdataset.ShardWriter`,
shards of 64 MB, sites in storage order) are uploaded to a loopback S3 server, and every read goes through a
proxy that adds --latency to each request (tests/latency_proxy.py, in this process, on its own thread).

The server is s3rver (npm; installed with npm into ~/.cache/platezarr-bench on first use): it serves ranges
from files. moto's ranged GET costs grow with the object's size (16-20 ranged reads/s of a 64 MB object
against 151-205/s with s3rver), which would decide the comparison by itself.

Contenders, each epoch in a fresh subprocess (imports, opening and warm-up before the clock starts), in
rotating order, --workers processes (or threads) each:

1. png        the 6-PNG path: a random permutation of sites on --workers threads, each site 6 GETs
              (obstore) and 6 PNG decodes (imagecodecs);
2. dataset    `SiteDataset` random access through a torch DataLoader (shuffle=True, --workers workers; the
              loader asks for a batch at a time (`__getitems__`), read with --concurrency / --workers reads in
              flight per worker; shard indexes warmed in the parent and inherited);
3. stream     `SiteStream` through the same DataLoader (--concurrency reads in flight in all, shared by the
              workers);
4. wds-png    WebDataset holding each site as its 6 PNG files: `WebDataset(urls, shardshuffle=...)
              .shuffle(1000)`, each shard one GET (WebDataset reads http URLs with curl), PNGs decoded as in 1;
5. wds-zstd   WebDataset holding each site as the very bytes of its chunk in the store (zstd-3 + CRC32C),
              decoded as the store's reader does: the access pattern compared with the codec held equal.

Every loader yields batches of 32 as torch tensors. Reported: sites/s (median), requests and bytes per site (at
the proxy), CPU milliseconds per site of the client (the contender process and its workers), the server and
the proxy, and the shuffle: the mean distance, in storage order, between consecutive sites as the training
loop gets them, divided by its value for a uniformly random order (N/3): 1.00 is a perfect shuffle, 0 a
sequential read.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # benchmarks/run.py's input builder, the latency proxy

from latency_proxy import LatencyProxy, cpu_seconds_of  # noqa: E402
from run import DEFAULT_SOURCE, build_input, cpu_seconds, machine, real_sites  # noqa: E402

CONTENDERS = ("png", "dataset", "stream", "wds-png", "wds-zstd")
BUCKET = "bench"
BATCH = 32
S3RVER = "s3rver@3.7.1"
SHARD_BYTES = 64_000_000


# ------------------------------------------------------------------------------------------ server

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A loopback S3 server in a subprocess: s3rver (node) or moto; `cpu()` reads its CPU seconds."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind, port = kind, free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        if kind == "s3rver":
            script = s3rver_script()
            (work / "s3").mkdir()
            command = ["node", str(script), "--directory", str(work / "s3"), "--address", "127.0.0.1",
                       "--port", str(port), "--silent"]
        else:
            command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    sys.exit(f"the {kind} server did not start: {' '.join(command)}")
                time.sleep(0.2)

    def cpu(self) -> float:
        return cpu_seconds_of(f"/proc/{self.process.pid}/stat")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# s3rver 3.7.1 reads a suffix range `bytes=-N` (the last N bytes, which S3 and every Zarr v3 shard reader use
# for a shard's index) as `bytes=0-N`; these two edits make it serve the last N bytes.
SUFFIX_RANGE_FIX = {
    "lib/controllers/object.js": ("    options.start = Number(start);\n    if (end) options.end = Number(end);\n",
                                  "    if (start === '') options.suffix = Number(end);\n"
                                  "    else options.start = Number(start);\n"
                                  "    if (end && start !== '') options.end = Number(end);\n"),
    "lib/stores/filesystem.js": ("      const range = {\n",
                                 "      if (options && options.suffix !== undefined) {\n"
                                 "        options = { start: Math.max(0, lastByte + 1 - options.suffix), end: lastByte };\n"
                                 "      }\n      const range = {\n"),
}


def s3rver_script() -> Path:
    """s3rver's command script, installed with npm into a cache folder the first time, suffix ranges fixed."""
    prefix = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "platezarr-bench"
    package = prefix / "node_modules" / "s3rver"
    if not (package / "bin" / "s3rver.js").is_file():
        if shutil.which("npm") is None:
            sys.exit("s3rver needs node and npm (or run with --server moto)")
        subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), S3RVER],
                       check=True, stdout=subprocess.DEVNULL)
    for name, (old, new) in SUFFIX_RANGE_FIX.items():
        text = (package / name).read_text()
        if new not in text:
            if old not in text:
                sys.exit(f"{package / name}: not the s3rver this benchmark knows how to fix ({S3RVER})")
            (package / name).write_text(text.replace(old, new, 1))
    return package / "bin" / "s3rver.js"


# ------------------------------------------------------------------------------------------- input

def prepare(work: Path, args: argparse.Namespace, endpoint: str) -> dict:
    """Build, convert and upload the dataset and its WebDataset copies; returns what the children need."""
    import boto3
    import webdataset as wds

    import converters as pz
    from converters.sitereader import SiteReader

    manifest = build_input(real_sites(args.source), args.sites, work / "src")
    started = time.perf_counter()
    pz.convert(work / "src" / "images", work / "store.zarr", "rxrx1")
    convert_seconds = time.perf_counter() - started
    table = pz.SiteDataset(work / "store.zarr").table
    storage = [(m["experiment"], m["plate"], m["well"], m["site"]) for m in manifest]
    stored = list(zip(table["experiment"], table["plate"].astype(int), table["well"], table["site"].astype(int)))
    assert stored == storage, "the store's sites are not in the manifest's order"

    reader = SiteReader(work / "store.zarr", str(table["group"].iloc[0]))
    (work / "wds-png").mkdir()
    (work / "wds-zstd").mkdir()
    with wds.ShardWriter(str(work / "wds-png" / "%06d.tar"), maxsize=SHARD_BYTES, verbose=0) as png, \
            wds.ShardWriter(str(work / "wds-zstd" / "%06d.tar"), maxsize=SHARD_BYTES, verbose=0) as zstd:
        for position, (site, row) in enumerate(zip(manifest, table.itertuples())):
            key = f"site{position:06d}"
            png.write({"__key__": key, **{f"w{c}.png": Path(f).read_bytes() for c, f in enumerate(site["files"], 1)}})
            shard = (work / "store.zarr" / reader.format.locate(row.group, row.well_index, 0)[0]).read_bytes()
            index = reader.layout.parse_index(shard[-reader.layout.index_nbytes:], row.group)
            offset, nbytes = (int(v) for v in index[0, row.site_index, 0, 0, 0])
            zstd.write({"__key__": key, "chunk.zst": shard[offset:offset + nbytes]})

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    uploads = [(p, f"store.zarr/{p.relative_to(work / 'store.zarr').as_posix()}") for p in (work / "store.zarr").rglob("*") if p.is_file()]
    uploads += [(Path(f), f"images/{Path(f).relative_to(work / 'src' / 'images').as_posix()}") for m in manifest for f in m["files"]]
    for kind in ("wds-png", "wds-zstd"):
        uploads += [(p, f"{kind}/{p.name}") for p in sorted((work / kind).glob("*.tar"))]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: s3.upload_file(str(item[0]), BUCKET, item[1]), uploads))
    return {"sites": len(manifest), "convert_seconds": round(convert_seconds, 1),
            "png_prefixes": [f"images/{m['experiment']}/Plate{m['plate']}/{m['well']}_s{m['site']}_w" for m in manifest],
            "shards": {kind: sorted(p.name for p in (work / kind).glob("*.tar")) for kind in ("wds-png", "wds-zstd")},
            "bytes": {kind: sum(p.stat().st_size for p in (work / kind).glob("*.tar")) for kind in ("wds-png", "wds-zstd")}
            | {"store": sum(p.stat().st_size for p, _ in uploads if "store.zarr" in p.parts),
               "png": sum(Path(f).stat().st_size for m in manifest for f in m["files"])}}


# ------------------------------------------------------------------------------- contenders (child)

def png_site(store, prefix: str) -> np.ndarray:
    import imagecodecs
    import obstore

    return np.stack([imagecodecs.png_decode(bytes(obstore.get(store, f"{prefix}{c}.png").bytes())) for c in range(1, 7)])


def batch_of_sites(positions: dict, batch: list):
    """Collate: the storage positions of a batch's sites, and their pixels as one tensor."""
    import torch

    keys = [(m["experiment"], int(m["plate"]), m["well"], int(m["site"])) for _, m in batch]
    return [positions[k] for k in keys], torch.from_numpy(np.stack([p for p, _ in batch]))


def batch_of_samples(batch: list):
    import torch

    return [p for p, _ in batch], torch.from_numpy(np.stack([x for _, x in batch]))


def png_sample(sample: dict) -> tuple[int, np.ndarray]:
    import imagecodecs

    return int(sample["__key__"][4:]), np.stack([imagecodecs.png_decode(sample[f"w{c}.png"]) for c in range(1, 7)])


def zstd_sample(layout, sample: dict) -> tuple[int, np.ndarray]:
    return int(sample["__key__"][4:]), layout.decode_chunk(sample["chunk.zst"], sample["__key__"])[0, 0]


def contender(config: dict):
    """What the child iterates over in one epoch: an iterable of (storage positions, pixels) batches."""
    import torch

    import converters as pz
    from converters.location import parse_location

    url, options, workers = f"s3://{BUCKET}/store.zarr", {"endpoint": config["proxy"]}, config["workers"]
    name = config["contender"]
    if name == "png":
        store = parse_location(f"s3://{BUCKET}", options).object_store()
        prefixes = config["png_prefixes"]
        order = random.Random(config["seed"]).sample(range(len(prefixes)), len(prefixes))

        def threads():
            with ThreadPoolExecutor(workers) as pool:
                for position, pixels in zip(order, pool.map(lambda i: png_site(store, prefixes[i]), order)):
                    yield [position], pixels
        return threads()
    loader = functools.partial(torch.utils.data.DataLoader, batch_size=BATCH, num_workers=workers)
    if name in ("dataset", "stream"):
        if name == "dataset":
            data = pz.SiteDataset(url, storage_options=options, concurrency=max(1, config["concurrency"] // workers))
            wells = data.table[["group", "well_index", "well"]].drop_duplicates().itertuples(index=False)
            data.reader.warm(((str(g), int(i), str(w)) for g, i, w in wells), config["concurrency"])
            table = data.table
        else:
            data = pz.SiteStream(url, storage_options=options, concurrency=config["concurrency"], batch_size=BATCH,
                                 seed=config["seed"])
            table = data.dataset.table
        positions = {(e, int(p), w, int(s)): i for i, (e, p, w, s) in
                     enumerate(zip(table["experiment"], table["plate"], table["well"], table["site"]))}
        collate = functools.partial(batch_of_sites, positions)
        return loader(data, shuffle=name == "dataset", collate_fn=collate)
    import webdataset as wds

    urls = [f"{config['proxy']}/{BUCKET}/{name}/{shard}" for shard in config["shards"][name]]  # read with curl
    pipeline = wds.WebDataset(urls, shardshuffle=len(urls), workersplitter=wds.split_by_worker,
                              nodesplitter=wds.single_node_only, seed=config["seed"]).shuffle(1000)
    if name == "wds-png":
        pipeline = pipeline.map(png_sample)
    else:
        layout = pz.SiteDataset(url, storage_options=options).reader.layout
        pipeline = pipeline.map(functools.partial(zstd_sample, layout))
    return loader(pipeline, collate_fn=batch_of_samples)


def child_main(config: dict) -> None:
    """One epoch of one contender: set up, say `ready`, wait for `go`, run, print the numbers as one JSON line."""
    if config.get("client_cpus"):  # --split: torch warns that 8 workers are more than the CPUs it may use
        warnings.filterwarnings("ignore", message="This DataLoader will create")
    epoch = contender(config)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu, started = cpu_seconds(), time.perf_counter()  # workers' CPU counts once they are joined
    order: list[int] = []
    for positions, pixels in epoch:
        assert pixels.shape[-3:] == (6, 512, 512)
        order.extend(positions)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "cpu": cpu_seconds() - cpu, "order": order}), flush=True)


# ------------------------------------------------------------------------------------ runs (parent)

def shuffle_quality(order: list[int]) -> float:
    """Mean |distance in storage order| between consecutive sites, over its expectation for a random order (n/3)."""
    steps = np.abs(np.diff(np.asarray(order)))
    return float(steps.mean() / (len(order) / 3)) if len(order) > 1 else 0.0


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of process `pid` on `cpus` (a process's threads have an affinity each)."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(thread), cpus)


def split_cpus() -> tuple[set[int], set[int]]:
    """`--split`'s (client, server) CPUs: the first CPU this process may use, and the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("--split needs at least 2 CPUs")
    return {cpus[0]}, set(cpus[1:])


def run_once(name: str, config: dict, proxy, server: Server) -> dict:
    client = set(config["client_cpus"]) if config.get("client_cpus") else None
    child = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(config | {"contender": name})],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, client)) if client else None)
    assert child.stdout is not None and child.stdin is not None
    if child.stdout.readline().strip() != "ready":
        sys.exit(f"{name}: the contender did not start")
    proxy.reset_counts()
    server_cpu, proxy_cpu = server.cpu(), proxy.cpu()
    child.stdin.write("go\n")
    child.stdin.flush()
    line = child.stdout.readline()
    counts, server_cpu, proxy_cpu = proxy.counts(), server.cpu() - server_cpu, proxy.cpu() - proxy_cpu
    if child.wait(timeout=600) != 0 or not line:
        sys.exit(f"{name}: the contender failed")
    result = json.loads(line)
    n = len(result["order"])
    assert sorted(result["order"]) == list(range(config["sites"])), f"{name} did not read every site once"
    return {"sites_per_s": n / result["seconds"], "requests_per_site": counts["requests"] / n,
            "kb_per_site": counts["bytes"] / n / 1e3, "client_cpu_ms": 1e3 * result["cpu"] / n,
            "server_cpu_ms": 1e3 * server_cpu / n, "proxy_cpu_ms": 1e3 * proxy_cpu / n,
            "max_in_flight": counts["max_in_flight"], "shuffle": shuffle_quality(result["order"])}


def run_latency(latency: float, config: dict, server: Server, repeats: int, contenders: tuple[str, ...]) -> dict:
    proxy = LatencyProxy(server.endpoint, latency / 1e3).start()
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    try:
        for repeat in range(repeats):
            for name in contenders[repeat % len(contenders):] + contenders[:repeat % len(contenders)]:
                runs[name].append(run_once(name, config | {"proxy": proxy.endpoint, "seed": repeat}, proxy, server))
                print(f"  {latency:g} ms, {name}: {runs[name][-1]['sites_per_s']:.1f} sites/s", file=sys.stderr)
    finally:
        proxy.stop()
    return {name: {key: round(statistics.median(r[key] for r in rs), 3) for key in rs[0]} for name, rs in runs.items()}


def format_table(results: dict) -> str:
    lines = ["| latency | contender | sites/s | x stream | requests/site | KB/site | CPU ms/site: client, server, "
             "proxy | shuffle |", "|---|---|---|---|---|---|---|---|"]
    for latency, rows in results["latencies"].items():
        for name, r in rows.items():
            versus = f"{r['sites_per_s'] / rows['stream']['sites_per_s']:.2f}" if "stream" in rows else "—"
            lines.append(f"| {latency} ms | {name} | {r['sites_per_s']:.1f} | {versus} | "
                         f"{r['requests_per_site']:.2f} | "
                         f"{r['kb_per_site']:.0f} | {r['client_cpu_ms']:.1f}, {r['server_cpu_ms']:.1f}, "
                         f"{r['proxy_cpu_ms']:.1f} | {r['shuffle']:.2f} |")
    return "\n".join(lines)


def targets(rows: dict) -> list[str]:
    rate = {name: r["sites_per_s"] for name, r in rows.items()}
    checks = [("stream", "wds-png", 2.0), ("stream", "wds-zstd", 1.0), ("dataset", "png", 5.0)]
    return [f"{a} >= {goal:g}x {b}: {rate[a] / rate[b]:.2f}x, {'met' if rate[a] / rate[b] >= goal else 'NOT met'}"
            for a, b, goal in checks if a in rate and b in rate]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--latency", type=float, nargs="+", default=[0, 20, 50], help="milliseconds per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers (threads for png)")
    parser.add_argument("--concurrency", type=int, default=32, help="SiteStream reads in flight, all workers together")
    parser.add_argument("--server", choices=("s3rver", "moto"), default="s3rver")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="which to run (the table's ratios need the stream)")
    parser.add_argument("--split", action="store_true",
                        help="contenders on the first CPU, server and proxy on the others (a bucket's server is not "
                             "on the client's cores)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    credentials = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_REGION": "us-east-1",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(credentials)
    if args.child:
        child_main(json.loads(args.child))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="platezarr-streaming-") as tmp:
        server = Server(args.server, Path(tmp))
        try:
            config = prepare(Path(tmp), args, server.endpoint) | {"workers": args.workers,
                                                                  "concurrency": args.concurrency}
            print(f"prepared {config['sites']} sites in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            results = {"machine": machine(), "server": args.server, "split": args.split, "sites": config["sites"],
                       "workers": args.workers, "concurrency": args.concurrency, "repeats": args.repeats,
                       "bytes": config["bytes"],
                       "wds_shards": {k: len(v) for k, v in config["shards"].items()}, "latencies": {}}
            if args.split:
                client_cpus, server_cpus = split_cpus()
                pin(server.process.pid, server_cpus)
                pin(os.getpid(), server_cpus)  # the proxy's thread, started by run_latency, inherits it
                config["client_cpus"] = sorted(client_cpus)
            for latency in args.latency:
                results["latencies"][f"{latency:g}"] = run_latency(latency, config, server, args.repeats,
                                                                   tuple(args.contenders))
        finally:
            server.stop()
    results["seconds"] = round(time.perf_counter() - started)
    print(format_table(results))
    for latency, rows in results["latencies"].items():
        print(f"{latency} ms: " + "; ".join(targets(rows)))
    split = f"client on CPU {config['client_cpus'][0]}, server and proxy on the others; " if args.split else ""
    print(f"{split}server {args.server}, {results['sites']} sites, {args.workers} workers, stream concurrency "
          f"{args.concurrency}, medians of {args.repeats}; {results['seconds']} s in all")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
