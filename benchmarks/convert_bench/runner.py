"""The runner: build the input, run every contender in fresh subprocesses in rotating order, measure, report."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from convert_bench.contenders import Contender, Job, all_contenders
from convert_bench.contenders.gil import GIL_SITES
from convert_bench.decoding import probe_decoders
from convert_bench.inputs import DEFAULT_SOURCE, build_input, real_sites
from convert_bench.measure import measure_codecs, measure_reads, measure_sizes, verify
from convert_bench.process import cpu_seconds, machine, peak_rss
from convert_bench.report import format_table, table_rows

RUN_SCRIPT = Path(__file__).resolve().parents[1] / "run.py"  # what the contender subprocesses run


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """benchmarks/run.py's options (and the hidden ones its contender subprocesses get)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def child_main(args: argparse.Namespace) -> None:
    """A contender subprocess: run it, then print its numbers, CPU time and peak RSS as one JSON line.

    Its `preload` modules are imported before the clock starts; a contender that reads no manifest
    never loads it, so its memory is its own.
    """
    contender = all_contenders()[args.child]
    for module in contender.preload:
        importlib.import_module(module)
    manifest = json.loads(Path(args.manifest).read_text()) if contender.manifest else []
    job = Job(manifest, Path(args.src), Path(args.out), args.workers, args.decoder, args.baseline_decoder)
    cpu = cpu_seconds()
    result = contender.run(job)
    result["cpu_seconds"] = cpu_seconds() - cpu
    result["peak_rss_bytes"] = peak_rss()
    print(json.dumps(result))


def in_child(contender: Contender, work: Path, src: Path, out: Path, args: argparse.Namespace,
             decoder_name: str) -> dict:
    """Run one contender in a fresh Python process, `out` removed first; returns the JSON it printed."""
    shutil.rmtree(out, ignore_errors=True)
    if hasattr(os, "sync"):
        os.sync()  # flush earlier writes to disk now, so no contender pays for another's
    cmd = [sys.executable, str(RUN_SCRIPT), "--child", contender.name, "--manifest",
           str(work / (contender.manifest or "manifest.json")), "--src", str(src), "--out", str(out),
           "--workers", str(args.workers), "--decoder", decoder_name, "--baseline-decoder", args.baseline_decoder]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{contender.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_contenders(work: Path, args: argparse.Namespace, decoder_name: str) -> dict[str, list[dict]]:
    """Every contender --repeats times in rotating order, each in a fresh process; the `once` ones in the first."""
    chosen = [c for c in all_contenders().values() if not c.flag or getattr(args, c.flag)]
    every, once = [c for c in chosen if not c.once], [c for c in chosen if c.once]
    runs: dict[str, list[dict]] = defaultdict(list)
    for rep in range(args.repeats):
        order = every[rep % len(every):] + every[: rep % len(every)] + (once if rep == 0 else [])
        for contender in order:
            result = in_child(contender, work, work / "images", work / f"out-{contender.name}", args, decoder_name)
            runs[contender.name].append(result)
            wall = result.get("seconds", sum(v for k, v in result.items() if " " in k))
            print(f"  repetition {rep + 1}/{args.repeats}: {contender.name:<9} {wall:7.2f} s wall, "
                  f"{result['cpu_seconds']:7.2f} s CPU", file=sys.stderr)
    for name in set(runs) - {"platezarr", "compact", "baseline"}:  # the stores measured afterwards stay
        shutil.rmtree(work / f"out-{name}", ignore_errors=True)
    return runs


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
        big.mkdir()
        (big / "manifest.json").write_text(json.dumps(build_input(pool, n, big)))
        result = in_child(all_contenders()["platezarr"], big, big / "images", work / "out-big", args, decoder_name)
        rss.update(big_sites=n, big_bytes=result["peak_rss_bytes"], big_seconds=result["seconds"],
                   big_stages_bytes=result["stage_rss_bytes"])
        shutil.rmtree(work / "out-big", ignore_errors=True)
        shutil.rmtree(big, ignore_errors=True)
    return rss


def benchmark(args: argparse.Namespace, work: Path) -> dict:
    """Build the input in `work`, run everything, and return the raw numbers with the table."""
    pool = real_sites(args.source)
    print(f"building {args.sites} sites from {len(pool)} real sites of {args.source} in {work}", file=sys.stderr)
    manifest = build_input(pool, args.sites, work)
    (work / "manifest.json").write_text(json.dumps(manifest))
    (work / "manifest-gil.json").write_text(json.dumps(manifest[:GIL_SITES]))
    decoders = probe_decoders(pool[0])
    fastest = min((n for n in decoders if n != "imageio"), key=decoders.__getitem__)
    runs = run_contenders(work, args, fastest)
    print("  reads, sizes, codecs, memory, verification ...", file=sys.stderr)
    stores = work / "out-platezarr", work / "out-compact", work / "out-baseline"
    timed = [name for name in runs if "seconds" in runs[name][0]]
    r = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if v is not None},
        "machine": machine(), "decoder": fastest, "baseline_decoder": args.baseline_decoder,
        "decoder_cpu_ms_per_png": {k: v * 1e3 for k, v in decoders.items()},
        "channels": len(pool[0]), "real_sites": len(pool), "runs": runs,
        "medians": {name: statistics.median(x["seconds"] for x in runs[name]) for name in timed}
        | {"platezarr_write": statistics.median(x["write_seconds"] for x in runs["platezarr"])},
        "cpu_medians": {name: statistics.median(x["cpu_seconds"] for x in runs[name]) for name in timed},
        "gil": {k: v for k, v in runs["gil"][0].items() if " " in k},
        "reads": measure_reads(manifest, *stores, fastest, args.reads, args.seed),
        "sizes": measure_sizes(manifest, work),
        "codecs": measure_codecs(manifest, fastest, 20, args.seed),
        "verify": verify(manifest, *stores, fastest, args.verify, args.seed),
    }
    r["rss"] = measure_rss(pool, work, args, runs, fastest)
    r["table"] = table_rows(r)
    return r


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """Run the benchmark (or, with the hidden --child, one contender); print the table; 1 if a pixel differs."""
    args = parse_args(argv, description)
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
