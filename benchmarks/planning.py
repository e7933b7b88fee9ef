"""Planning at full scale (issue 15, item 1): `platezarr convert ... --dry-run` on RxRx1 and an RxRx3-sized plan.

    python benchmarks/planning.py                       # both, 3 runs each (medians), about 5 minutes on 2 cores
    python benchmarks/planning.py --only rxrx1 --repeats 1
    python benchmarks/planning.py --work /tmp/plan-bench --keep   # generate once, reuse on later runs
    python benchmarks/planning.py --profile rxrx3       # also write a cProfile of one dry run (.prof in --work)

Inputs, generated in a temporary folder (or --work):

- rxrx1: a tree of 753,060 files named as the 2019 release, `images/{train,test}/{experiment}/Plate{n}/
  {well}_s{site}_w{c}.png`, one per well of the real competition tables (../shared/data/rxrx1/kaggle, 62,755
  wells) x 2 sites x 6 channels. Every file is a hard link to one of the real RxRx1 PNGs of
  ../shared/data/rxrx1/images (copied once into the folder), so whichever files the planner reads to probe
  the bit depth are real PNGs and the sizes it sums are real ones; the tree costs directory entries only.
  The metadata is the competition tables' folder itself.
- rxrx3: 1,450 plate tars (175 gene experiments x 8 plates, 5 compound experiments x 10 plates) named as
  RxRx3's, `{experiment}/Plate{n}.tar`, in an S3 bucket on a moto server on 127.0.0.1, and a metadata.csv of
  1,450 x 1,536 wells (2,227,200 rows) with RxRx3's real columns (schemas/rxrx3.toml). The tars in a bucket are
  not read while planning (converters/layouts/tars.py `expected_images` plans each plate from the table), so
  every tar is an empty object except the first, a real tar holding one 16-bit PNG cut from a real CPJUMP1
  TIFF, which the planner reads 64 KiB of to probe the bit depth. This is the path a user's
  `platezarr convert s3://.../images OUT --metadata metadata.csv --dry-run` takes: the real bucket listing
  (obstore against the S3 API), the real CSV reader, the real planner.

Measured, each run in a fresh subprocess (`python -m converters.cli convert ... --dry-run --json`): wall time as
the user waits for it (interpreter start and imports included) and peak RSS (VmHWM from /proc/self/status, read
by the child as it exits). For rxrx3 also, in one more subprocess: the plan built in-process and the store's
template written for all 1,450 plates to a local folder (`NativeFormat.create`, what `convert` does before the
first pixel), timed apart from the plan, and the requests the template of a few plates costs on the S3 server.
Targets (issue 15): rxrx1 <= 10 s and <= 300 MB; rxrx3 <= 60 s and <= 1 GB.

Measured on 2026-12-01 (2 shared cores, load average 0.6-1.0), `python benchmarks/planning.py --work /tmp/plan-bench
--keep`, medians of 3: rxrx1 7.4 s and 264 MB (before the planning was made lean: 9.8 s, 431 MB); rxrx3 17.6 s
and 814 MB (before: 22.8 s, 1,102 MB). Of each peak, 114 MB is the interpreter with numpy, pandas and pyarrow
imported (the floor: a dry run imports no zarr, xarray or dask). The rxrx3 plan built in-process by the library
took 21 s and 1.1 GB: the CLI hands Arrow's allocations to the C library's allocator, which returns what pandas
frees; a library leaves the process's allocator as it found it. The template of the 1,450 plates took 41 s.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' S3 server (tests/s3server.py)
SHARED = ROOT.parent / "shared" / "data"
KAGGLE = SHARED / "rxrx1" / "kaggle"
REAL_PNGS = SHARED / "rxrx1" / "images"
REAL_TIFF = SHARED / "cpjump1" / "example_images" / "DMSO" / "r04c14f05p01-ch1sk1fk1fl1.tiff"
COMPETITION = {"train.csv": "train", "train_controls.csv": "train", "test.csv": "test", "test_controls.csv": "test"}
RXRX3_EXPERIMENTS = [(f"gene-{i:03d}", 8) for i in range(1, 176)] + [(f"compound-{i:03d}", 10) for i in range(1, 6)]
RXRX3_ROWS = [f"{chr(65 + i)}" for i in range(26)] + [f"A{chr(65 + i)}" for i in range(6)]  # A..Z, AA..AF: 32 rows
RXRX3_WELLS = [f"{r}{c:02d}" for r in RXRX3_ROWS for c in range(1, 49)]  # 1,536
RXRX3_COLUMNS = ["well_id", "experiment_name", "plate", "address", "gene", "treatment", "SMILES", "concentration",
                 "perturbation_type", "cell_type"]
BUCKET = "rxrx3"
TARGETS = {"rxrx1": (10.0, 300e6), "rxrx3": (60.0, 1e9)}


# ------------------------------------------------------------------------------------------------ inputs

def make_rxrx1(work: Path) -> Path:
    """The RxRx1-sized tree under work/rxrx1/images (kept if already complete); returns that folder."""
    root = work / "rxrx1"
    images = root / "images"
    done = root / "complete"
    if done.exists():
        return images
    shutil.rmtree(root, ignore_errors=True)
    pool = root / "pool"
    pool.mkdir(parents=True)
    by_channel: dict[str, list[Path]] = {}
    for i, real in enumerate(sorted(REAL_PNGS.rglob("*.png"))):
        copy = pool / f"{i:03d}_{real.name}"
        shutil.copyfile(real, copy)
        by_channel.setdefault(real.stem.rsplit("_", 1)[1], []).append(copy)
    n = 0
    for name, split in COMPETITION.items():
        with (KAGGLE / name).open(newline="") as f:
            for row in csv.DictReader(f):
                folder = images / split / row["experiment"] / f"Plate{row['plate']}"
                folder.mkdir(parents=True, exist_ok=True)
                for site in (1, 2):
                    for c in range(1, 7):
                        copies = by_channel[f"w{c}"]
                        os.link(copies[n % len(copies)], folder / f"{row['well']}_s{site}_w{c}.png")
                        n += 1
    done.write_text(f"{n}\n")
    log(f"rxrx1: {n:,} files under {images}")
    return images


def rxrx3_rows(rng: random.Random):
    """The metadata rows of the RxRx3-sized plan: one per well, RxRx3's columns and kinds of values (gene plates:
    CRISPR guides of real and anonymized genes, EMPTY_ and CRISPR_controls; compound plates: a SMILES, some with
    commas and pipes that must be quoted, and a concentration)."""
    genes = [f"RXRX3-{40000 + i}" for i in range(3000)] + ["RPLP2", "MTOR", "TP53", "KRAS", "BRCA1", "SOD1"]
    smiles = ["CC1=[N+](CCCCCCCCCC[N+]2=C(C)C=C(N)C3=CC=CC=C23)C2=CC=CC=C2C(N)=C1 |c:1,13,21,29,31,35,t:16,19,23,27|",
              "CC(=O)OC1=CC=CC=C1C(O)=O", "CN1C=NC2=C1C(=O)N(C)C(=O)N2C", "O=C(O)CC(O)(CC(=O)O)C(=O)O"]
    for experiment, plates in RXRX3_EXPERIMENTS:
        compound = experiment.startswith("compound")
        for plate in range(1, plates + 1):
            for well in RXRX3_WELLS:
                kind = rng.random()
                if kind < 0.05:
                    gene, treatment, smi, conc = ("EMPTY_control", "EMPTY_control", None, None)
                elif kind < 0.08:
                    gene, treatment, smi, conc = ("CRISPR_control", "CRISPR_control", None, None)
                elif compound:
                    gene, treatment = None, f"Compound-{rng.randrange(1674)}"
                    smi, conc = rng.choice(smiles), rng.choice((0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 5.0, 10.0))
                else:
                    gene = rng.choice(genes)
                    gene, treatment, smi, conc = gene, f"{gene}_guide_{rng.randrange(1, 7)}", None, None
                yield (f"{experiment}_{plate}_{well}", experiment, plate, well, gene, treatment, smi, conc,
                       "COMPOUND" if compound else "CRISPR", "HUVEC")


def real_tar() -> bytes:
    """A tar holding one 16-bit PNG (a 64x64 crop of a real CPJUMP1 TIFF), as RxRx3's tars hold their images."""
    import imagecodecs
    import tifffile

    pixels = tifffile.imread(REAL_TIFF)[:64, :64].copy()
    data = imagecodecs.png_encode(pixels)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("A01_s1_w1.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_rxrx3_table(work: Path) -> Path:
    """work/rxrx3/metadata.csv (kept if already complete)."""
    path = work / "rxrx3" / "metadata.csv"
    done = work / "rxrx3" / "complete"
    if done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RXRX3_COLUMNS)
        for row in rxrx3_rows(random.Random(3)):
            writer.writerow(["" if v is None else v for v in row])
            n += 1
    done.write_text(f"{n}\n")
    log(f"rxrx3: {n:,} metadata rows in {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def tar_names() -> list[str]:
    return [f"images/{e}/Plate{p}.tar" for e, plates in RXRX3_EXPERIMENTS for p in range(1, plates + 1)]


def start_s3() -> tuple[object, dict[str, str]]:
    """The tests' moto S3 server (tests/s3server.py) on a loopback port holding the 1,450 tars; returns it and the
    environment that reaches it."""
    import boto3
    from s3server import S3Server

    server = S3Server().start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=server.endpoint)
    client.create_bucket(Bucket=BUCKET)
    names = tar_names()
    first = min(names)
    for name in names:
        client.put_object(Bucket=BUCKET, Key=name, Body=real_tar() if name == first else b"")
    log(f"rxrx3: {len(names):,} tars in s3://{BUCKET}/images on {server.endpoint}")
    return server, env


# ------------------------------------------------------------------------------------------------ runs

def child(args: argparse.Namespace) -> None:
    """In a fresh process: the CLI (`--child cli -- ARGS`) or plan + template (`--child template`); then write
    the peak RSS and timings to --result."""
    result: dict = {}
    started = time.perf_counter()
    if args.child == "cli":
        from converters.cli import main

        main(args.rest, standalone_mode=False)
    else:
        result.update(template_run(args))
    result["seconds_in_process"] = time.perf_counter() - started
    result["peak_rss_bytes"] = peak_rss()
    Path(args.result).write_text(json.dumps(result))


def template_run(args: argparse.Namespace) -> dict:
    """Build the rxrx3 plan in this process, then write its template to a local folder, and a few plates' to a
    second, counting S3 server of this process."""
    import dataclasses

    import boto3
    from s3server import S3Server

    from converters.convert import build_plan
    from converters.formats.native import NativeFormat
    from converters.options import Options
    from converters.output import Output

    start = time.perf_counter()
    plan, _ = build_plan(f"s3://{BUCKET}/images", Options(dataset="rxrx3", metadata=args.metadata))
    planned = time.perf_counter()
    plan_rss = peak_rss()
    fmt = NativeFormat.for_plan(plan)
    marker = {"plan": {"benchmark": True}}
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    fmt.create(Output.open(out), plan, marker)
    written = time.perf_counter()
    few = dataclasses.replace(plan, plates=plan.plates[:args.s3_plates])
    server = S3Server().start()
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="template")
        server.requests.clear()
        t0 = time.perf_counter()
        fmt.create(Output.open("s3://template/out.zarr", storage_options={"endpoint": server.endpoint}), few, marker)
        s3_seconds = time.perf_counter() - t0
        requests = {method: server.count(method) for method in ("GET", "HEAD", "PUT", "POST", "DELETE")}
    finally:
        server.stop()
    return {"plan_seconds": planned - start, "plan_peak_rss_bytes": plan_rss, "template_seconds": written - planned,
            "template_plates": len(plan.plates), "template_files": sum(len(fs) for _, _, fs in os.walk(out)),
            "s3_template_plates": len(few.plates), "s3_template_seconds": s3_seconds,
            "s3_template_requests": requests}


def peak_rss() -> int:
    """Peak resident bytes of this process (VmHWM): not ru_maxrss, which a child inherits from its parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def in_child(kind: str, rest: list[str], work: Path, env: dict[str, str], extra: list[str] = ()) -> dict:
    """Run `--child kind` in a fresh interpreter; its wall time as seen from here, and what it wrote."""
    result = work / "child.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", kind, "--result", str(result), *extra, "--", *rest]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | env, cwd=work)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not result.exists():
        sys.exit(f"{kind} {' '.join(rest)} failed:\n{done.stderr[-4000:]}")
    out = json.loads(result.read_text()) | {"seconds": seconds}
    if kind == "cli":
        out["plan"] = json.loads(done.stdout)
    return out


def dry_run(name: str, src: str, metadata: Path, work: Path, env: dict[str, str], repeats: int,
            profile: bool) -> dict:
    rest = ["convert", src, str(work / "never-written.zarr"), "--dataset", name, "--metadata", str(metadata),
            "--dry-run", "--json", "--no-progress"]
    runs = []
    for i in range(repeats):
        runs.append(in_child("cli", rest, work, env))
        log(f"{name}: dry run {i + 1}/{repeats}: {runs[-1]['seconds']:.2f} s, "
            f"{runs[-1]['peak_rss_bytes'] / 1e6:.0f} MB peak RSS")
    if profile:
        prof = work / f"{name}.prof"
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "converters.cli", *rest],
                       capture_output=True, env=os.environ | env, cwd=work, check=True)
        log(f"{name}: profile in {prof}")
    plan = runs[-1]["plan"]
    return {"seconds": [r["seconds"] for r in runs], "peak_rss_bytes": [r["peak_rss_bytes"] for r in runs],
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "median_peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in runs),
            "plan": {k: plan[k] for k in ("experiments", "plates", "wells", "sites", "images", "dtype", "source_bytes")}
            | {"missing_images": plan["missing_images"]["count"],
               "images_without_metadata": plan["images_without_metadata"]["count"],
               "metadata_without_images": plan["metadata_without_images"]["count"]}}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load() -> str:
    """The 1, 5 and 15 minute load averages: how busy the (shared) machine was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("rxrx1", "rxrx3"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the generated inputs (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep --work's inputs for the next run")
    parser.add_argument("--profile", choices=("rxrx1", "rxrx3"), help="also write a cProfile of one dry run")
    parser.add_argument("--s3-plates", type=int, default=4, help="plates whose template is also written to S3")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--metadata", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    for needed in (KAGGLE, REAL_PNGS, REAL_TIFF):
        if not needed.exists():
            sys.exit(f"{needed} is missing: this benchmark needs the real data of ../shared/data")
    work = args.work or Path(tempfile.mkdtemp(prefix="platezarr-planning-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"load_before": load()}
    try:
        if args.only in (None, "rxrx1"):
            src = make_rxrx1(work)
            results["rxrx1"] = dry_run("rxrx1", str(src), KAGGLE, work, {}, args.repeats, args.profile == "rxrx1")
        if args.only in (None, "rxrx3"):
            table = make_rxrx3_table(work)
            server, env = start_s3()
            try:
                results["rxrx3"] = dry_run("rxrx3", f"s3://{BUCKET}/images", table, work, env, args.repeats,
                                           args.profile == "rxrx3")
                results["rxrx3_template"] = in_child(
                    "template", [], work, env,
                    ["--metadata", str(table), "--out", str(work / "template.zarr")])
            finally:
                server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = load()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict) -> str:
    lines = [f"{'run':<16} {'median s':>9} {'peak RSS MB':>12} {'target':>18}  plan"]
    for name in ("rxrx1", "rxrx3"):
        if name not in results:
            continue
        r = results[name]
        seconds, rss = TARGETS[name]
        met = r["median_seconds"] <= seconds and r["median_peak_rss_bytes"] <= rss
        lines.append(f"{name + ' dry run':<16} {r['median_seconds']:9.2f} {r['median_peak_rss_bytes'] / 1e6:12.0f} "
                     f"{f'{seconds:g} s, {rss / 1e6:g} MB':>18}  {'met' if met else 'NOT met'}: "
                     f"{json.dumps(r['plan'])}")
    if "rxrx3_template" in results:
        t = results["rxrx3_template"]
        lines.append(f"rxrx3 template: plan {t['plan_seconds']:.1f} s in-process, template of {t['template_plates']} "
                     f"plates {t['template_seconds']:.1f} s ({t['template_files']} files); "
                     f"{t['s3_template_plates']} plates to S3 {t['s3_template_seconds']:.2f} s, requests {t['s3_template_requests']}")
    lines.append(f"load average before {results['load_before']}, after {results['load_after']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
