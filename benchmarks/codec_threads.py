"""How the 16-bit chunk codecs scale on the conversion's thread pool (issue 15, item 6).

    python benchmarks/codec_threads.py               # 3 repeats, 24 sites a run
    python benchmarks/codec_threads.py --repeats 5

The shard writer encodes chunks on the worker threads of `converters.execute` (and the site reader decodes them on
DataLoader threads): a codec that took a global lock would not get faster with more threads. numcodecs' Blosc takes
its global lock only when called from the main thread (`numcodecs.blosc.use_threads` is None: then it uses Blosc's
own thread pool); from other threads it calls Blosc's context API with one thread. This measures it: the sites of the
three real CPJUMP1 fields in ../shared/data (1080², 8 channels, uint16: one site chunk each) are encoded, then decoded,
through each 16-bit profile's `encode`/`decode` (converters/profiles.py, what the writer and reader call) on a
ThreadPoolExecutor of 1 and of 2 threads, and the speed-up is printed: 2.0x would be perfect on 2 cores. The
machine's load average is printed: on a shared machine, a speed-up below 2 may be other people's work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.profiles import BY_DEPTH, PROFILES, Profile, ZstdProfile

DATA = Path(os.environ.get("PLATEZARR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def real_sites() -> list[np.ndarray]:
    """Each real CPJUMP1 field as one site chunk (1, 8, 1080, 1080) uint16."""
    firsts = sorted((DATA / "cpjump1" / "example_images").glob("*/*-ch1sk1fk1fl1.tiff"))
    if not firsts:
        sys.exit(f"no CPJUMP1 images under {DATA / 'cpjump1' / 'example_images'}; set PLATEZARR_SHARED_DATA")
    return [np.stack([iio.imread(first.with_name(first.name.replace("-ch1", f"-ch{c}"))) for c in range(1, 9)])[np.newaxis]
            for first in firsts]


def timed(work: list, fn, threads: int) -> float:
    """Wall seconds to run `fn` on every item of `work` on `threads` pool threads."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, work[:threads]))  # warm the threads
        started = time.perf_counter()
        list(pool.map(fn, work))
        return time.perf_counter() - started


def measure(profile: Profile, sites: list[np.ndarray], n: int, repeats: int) -> dict[str, dict[int, float]]:
    """Median sites/s of encode and decode on 1 and 2 threads."""
    work = [sites[i % len(sites)] for i in range(n)]
    payloads = [profile.encode(s) for s in sites]
    shape, dtype = sites[0].shape, sites[0].dtype
    encoded = [payloads[i % len(payloads)] for i in range(n)]
    out: dict[str, dict[int, float]] = {"encode": {}, "decode": {}}
    for threads in (1, 2):
        out["encode"][threads] = statistics.median(n / timed(work, profile.encode, threads) for _ in range(repeats))
        out["decode"][threads] = statistics.median(
            n / timed(encoded, lambda p: profile.decode(p, shape, dtype), threads) for _ in range(repeats))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sites", type=int, default=24, help="sites encoded per run")
    args = parser.parse_args()
    sites = real_sites()
    profiles = {"blosc-zstd-1-bitshuffle (default, 16-bit)": BY_DEPTH[(PROFILES["default"].name, 2)],
                "zstd-3 (the 8-bit default, for comparison)": ZstdProfile("zstd", "zstd-3", "", 0, "zarr", level=3)}
    print(f"{len(sites)} real CPJUMP1 sites (1080², 8 channels, uint16), {args.sites} a run, median of {args.repeats}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'profile':<44} {'step':<7} {'1 thread':>10} {'2 threads':>10} {'speed-up':>9}")
    for label, profile in profiles.items():
        for step, rates in measure(profile, sites, args.sites, args.repeats).items():
            print(f"{label:<44} {step:<7} {rates[1]:>8.1f}/s {rates[2]:>8.1f}/s {rates[2] / rates[1]:>8.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
