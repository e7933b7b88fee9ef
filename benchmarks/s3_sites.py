"""Streaming sites from a bucket (issue 5): `SiteDataset` against reading the same sites' PNGs.

Run it from a checkout with the test extras installed (`pip install -e ".[test]"`); about a minute:

    python benchmarks/s3_sites.py                  # 240 sites, 400 random reads per contender
    python benchmarks/s3_sites.py --sites 480 --reads 800 --json s3.json

It starts moto's S3 server on 127.0.0.1 (a free port; nothing leaves this machine), uploads an
RxRx1-layout dataset built by replicating the real PNGs of ../shared/data/rxrx1 (each site gets the
complete channel set of one real site), converts it bucket to bucket, and then reads random whole
sites (6 channels) two ways, at 1 and at 8 threads, alternating the contenders:

- png:  GET the site's 6 PNGs with obstore and decode them with imagecodecs (what a training loop
        over the original release does);
- store: `converters.SiteDataset(url)[i]` (one ranged GET of the site's chunk, zstd decode, CRC32C).

It prints sites/s and requests per site (counted by the server, after a warm-up pass that reads
every shard index once) and the ratio store/png; target ≥ 3x and exactly 1 request per site.

With --open-rxrx1 it also converts the whole RxRx1 plan (204 plates, 125,510 sites, from the real
competition tables, no images) into a local store, uploads it, and counts the requests and time of
`pz.open_sites(url)` over S3 (target ≤ 20 requests and ≤ 1 s).
Loopback S3 has almost no latency, so this measures the client-side cost per site; over a real
network the request count dominates and the ratio grows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import imagecodecs
import numpy as np
import obstore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' loopback S3 server

import converters as pz  # noqa: E402
from converters.location import parse_location  # noqa: E402
from s3server import S3Server  # noqa: E402

REAL = HERE.parent.parent / "shared" / "data" / "rxrx1" / "images" / "train"


def real_sites() -> list[list[bytes]]:
    """The PNG bytes of every real site with all six channels."""
    sites = []
    for plate in sorted(REAL.glob("*/Plate*")):
        files = [plate / f"B02_s1_w{c}.png" for c in range(1, 7)]
        if all(f.is_file() for f in files):
            sites.append([f.read_bytes() for f in files])
    if not sites:
        sys.exit(f"no real RxRx1 sites under {REAL}")
    return sites


def upload_dataset(store, n_sites: int) -> list[str]:
    """Put n_sites sites (2 per well, wells row by row) into the bucket; returns each site's key prefix."""
    sites = real_sites()
    wells = [f"{r}{c:02d}" for r in "BCDEFGHIJKLMNO" for c in range(2, 24)]
    prefixes = []
    for i in range(n_sites):
        well, site = wells[(i // 2) % len(wells)], i % 2 + 1
        prefix = f"images/HUVEC-01/Plate{i // (2 * len(wells)) + 1}/{well}_s{site}_w"
        for c, data in enumerate(sites[i % len(sites)], 1):
            obstore.put(store, f"{prefix}{c}.png", data)
        prefixes.append(prefix)
    return prefixes


def read_png_site(store, prefix: str) -> np.ndarray:
    return np.stack([imagecodecs.png_decode(bytes(obstore.get(store, f"{prefix}{c}.png").bytes())) for c in range(1, 7)])


def open_rxrx1_sized(server: S3Server) -> dict:
    """Requests and seconds of open_sites over S3 on a store with the whole RxRx1 plan (no pixels)."""
    kaggle = HERE.parent.parent / "shared" / "data" / "rxrx1" / "kaggle"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "images").mkdir()
        pz.convert(Path(tmp) / "images", Path(tmp) / "rxrx1.zarr", "rxrx1", kaggle)
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="rxrx1")
        store = parse_location("s3://rxrx1/rxrx1.zarr").object_store()
        files = [p for p in (Path(tmp) / "rxrx1.zarr").rglob("*") if p.is_file()]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: obstore.put(store, p.relative_to(Path(tmp) / "rxrx1.zarr").as_posix(), p.read_bytes()), files))
    times, requests = [], 0
    for _ in range(5):
        server.requests.clear()
        started = time.perf_counter()
        sites = pz.open_sites("s3://rxrx1/rxrx1.zarr")
        times.append(time.perf_counter() - started)
        requests = server.count()
    plates = len(set(sites["group"].values.tolist()))
    return {"plates": plates, "sites": sites.sizes["sample"], "requests": requests, "seconds": round(statistics.median(times), 3)}


def timed(fn, items: list, threads: int) -> float:
    """Sites per second reading `items` with `fn` on `threads` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items):
            pass
    return len(items) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=240)
    parser.add_argument("--reads", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--open-rxrx1", action="store_true", help="also time open_sites on an RxRx1-sized store")
    args = parser.parse_args()

    server = S3Server().start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=server.endpoint, AWS_EC2_METADATA_DISABLED="true")
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="bench")
    source = parse_location("s3://bench").object_store()
    prefixes = upload_dataset(source, args.sites)
    pz.convert("s3://bench/images", "s3://bench/store.zarr", "rxrx1")
    ds = pz.SiteDataset("s3://bench/store.zarr")
    by_key = {f"images/{m['experiment']}/Plate{m['plate']}/{m['well']}_s{m['site']}_w": i
              for i, m in ((i, ds.table.iloc[i]) for i in range(len(ds)))}
    for i in range(len(ds)):  # warm-up: every shard index once
        ds[i]
    rng = random.Random(0)
    picks = [rng.randrange(len(prefixes)) for _ in range(args.reads)]
    assert all(np.array_equal(read_png_site(source, prefixes[p]), ds[by_key[prefixes[p]]][0]) for p in picks[:20])

    results: dict = {"sites": args.sites, "reads": args.reads, "repeats": args.repeats}
    for threads in (1, 8):
        rates: dict[str, list[float]] = {"png": [], "store": []}
        requests: dict[str, float] = {}
        for _ in range(args.repeats):
            for name in ("png", "store") if _ % 2 == 0 else ("store", "png"):
                server.requests.clear()
                if name == "png":
                    rates[name].append(timed(lambda p: read_png_site(source, prefixes[p]), picks, threads))
                else:
                    rates[name].append(timed(lambda p: ds[by_key[prefixes[p]]], picks, threads))
                requests[name] = server.count() / len(picks)
        png, store = statistics.median(rates["png"]), statistics.median(rates["store"])
        results[f"threads_{threads}"] = {"png_sites_per_s": round(png, 1), "store_sites_per_s": round(store, 1),
                                         "ratio": round(store / png, 2), "png_requests_per_site": requests["png"],
                                         "store_requests_per_site": requests["store"]}
    if args.open_rxrx1:
        results["open_sites_rxrx1"] = open_rxrx1_sized(server)
    server.stop()

    print(f"{'threads':>7} {'png sites/s':>12} {'store sites/s':>14} {'ratio':>6} {'req/site png':>13} {'req/site store':>15}")
    for threads in (1, 8):
        r = results[f"threads_{threads}"]
        print(f"{threads:>7} {r['png_sites_per_s']:>12} {r['store_sites_per_s']:>14} {r['ratio']:>6} "
              f"{r['png_requests_per_site']:>13} {r['store_requests_per_site']:>15}")
    ok = all(results[f"threads_{t}"]["ratio"] >= 3 and results[f"threads_{t}"]["store_requests_per_site"] == 1 for t in (1, 8))
    print(f"target ≥ 3x and exactly 1 request per site: {'met' if ok else 'NOT met'}")
    if args.open_rxrx1:
        r = results["open_sites_rxrx1"]
        print(f"open_sites on {r['plates']} plates / {r['sites']} sites over S3: {r['requests']} requests, "
              f"{r['seconds']} s (median of 5); target ≤ 20 requests and ≤ 1 s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
