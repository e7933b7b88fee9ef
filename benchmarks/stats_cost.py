"""What the pixel statistics cost a conversion (issue 13): the same input converted with and without them.

    python benchmarks/stats_cost.py                 # 1,000 sites of the real RxRx1 PNGs, medians of 3
    python benchmarks/stats_cost.py --sites 2000 --repeats 5

Input as benchmarks/run.py builds it: the real RxRx1 PNGs of ../shared/data/rxrx1 replicated as hard
links into an RxRx1-layout dataset. Each run is `converters.convert(SRC, OUT)` with default settings in
a fresh subprocess, in alternating order; "without" replaces the statistics step of
`write.finish_well` (`write.well_stats`) by one that returns NaN statistics of the right shape, so the
rest (finalize writing the statistic variables) is the same. Reports medians of wall and CPU seconds
and the cost of the statistics in per cent of the conversion without them; and, steadier on a shared
machine, the CPU time the statistics step itself took (each call timed with its thread's CPU clock).
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import DEFAULT_SOURCE, build_input, cpu_seconds, real_sites  # noqa: E402


def convert_once(src: Path, out: Path, with_stats: bool, workers: int) -> dict:
    """One conversion in this (fresh) process; its wall and CPU seconds."""
    import numpy as np

    import converters as pz
    import converters.write as write
    from converters.stats import STATS, WellStats, bin_lows

    spent: list[float] = []  # CPU seconds of each call of the statistics step, in its own thread
    measure = write.well_stats

    def timed_stats(block: np.ndarray, present: np.ndarray) -> WellStats:
        began = time.thread_time()
        stats = measure(block, present)
        spent.append(time.thread_time() - began)
        return stats

    def no_stats(block: np.ndarray, present: np.ndarray) -> WellStats:
        return WellStats(np.full((*present.shape, len(STATS)), np.nan),
                         np.zeros((block.shape[1], len(bin_lows(block.dtype))), dtype=np.int64))

    write.well_stats = timed_stats if with_stats else no_stats
    start, cpu = time.perf_counter(), cpu_seconds()
    pz.convert(src, out, workers=workers)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu, "stats_cpu_seconds": sum(spent)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument("--child", choices=["with", "without"], help=argparse.SUPPRESS)
    p.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(convert_once(args.src, args.out, args.child == "with", args.workers)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="platezarr-stats-cost-"))
    try:
        build_input(real_sites(args.source), args.sites, work)
        runs: dict[str, list[dict]] = {"with": [], "without": []}
        for repeat in range(args.repeats):
            for kind in (("with", "without") if repeat % 2 == 0 else ("without", "with")):
                out = work / f"out-{kind}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, __file__, "--child", kind, "--src", str(work / "images"), "--out", str(out),
                       "--workers", str(args.workers)]
                runs[kind].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
                print(f"  {kind:<7} {runs[kind][-1]['seconds']:.2f} s wall, {runs[kind][-1]['cpu_seconds']:.2f} s CPU",
                      file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {kind: {m: statistics.median(r[m] for r in rs) for m in ("seconds", "cpu_seconds", "stats_cpu_seconds")}
               for kind, rs in runs.items()}
    cost = {m: 100 * (medians["with"][m] / medians["without"][m] - 1) for m in ("seconds", "cpu_seconds")}
    cost["stats_step_cpu"] = 100 * medians["with"]["stats_cpu_seconds"] / medians["without"]["cpu_seconds"]
    print(json.dumps({"sites": args.sites, "repeats": args.repeats, "workers": args.workers, "runs": runs,
                      "medians": medians, "cost_percent": cost}, indent=2))
    print(f"statistics cost {cost['seconds']:+.1f}% wall, {cost['cpu_seconds']:+.1f}% CPU; the statistics step itself "
          f"{cost['stats_step_cpu']:.1f}% of the CPU time without it ({args.sites} sites, medians of {args.repeats})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
