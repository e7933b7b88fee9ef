"""The `platezarr` command: parse arguments at the edge, make one library call, print, exit.

Exit status: 0 done; 1 the conversion failed or found bad input; 2 wrong usage.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from tqdm import tqdm

from converters.convert import Progress, Summary, convert, plan_only
from converters.errors import PlatezarrError
from converters.info import store_info
from converters.schema import dataset_names


class ProgressBar:
    """Shows each stage of a conversion as a tqdm bar on stderr (rate and ETA included)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=event.stage, unit=event.unit.rstrip("s"), file=sys.stderr,
                            dynamic_ncols=True)
        assert self.bar is not None
        self.bar.total = event.total
        self.bar.update(event.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def parse_storage_options(value: str | None) -> dict | None:
    """The --storage-options JSON object, or a usage error saying what is wrong with it."""
    if value is None:
        return None
    try:
        options = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"endpoint\": \"http://127.0.0.1:9000\"}'")
    return options


STORAGE_OPTIONS = click.option(
    "--storage-options", "storage_options", callback=lambda c, p, v: parse_storage_options(v), metavar="JSON",
    help='Options to reach buckets, e.g. \'{"endpoint": "http://127.0.0.1:9000"}\' or \'{"skip_signature": true}\' '
    "(credentials and endpoints otherwise come from the cloud's usual environment and config files).",
)


def _fail(error: PlatezarrError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


GAPS = (
    ("missing_images", "missing images"),
    ("images_without_metadata", "sites with images but no metadata row"),
    ("metadata_without_images", "metadata rows (sites) with no images"),
    ("ignored_files", "files ignored (names match no pattern)"),
    ("embeddings_without_sites", "embeddings rows with no site (or well) in the store"),
    ("sites_without_embeddings", "sites with no embeddings row"),
    ("wells_without_embeddings", "wells with no embeddings row"),
)


def format_summary(summary: dict) -> str:
    """The final summary of a conversion, one fact per line."""
    lines = [
        f"store      {summary['out']}  ({summary['dataset']}"
        f"{', detected from the file names' if summary.get('dataset_detected') else ''})",
        f"contents   {summary['experiments']} experiments, {summary['plates']} plates, {summary['wells']} wells, "
        f"{summary['sites']} sites, {summary['images']} images",
        f"bytes      {summary['bytes_in']:,} in, {summary['bytes_out']:,} out, ratio {summary['ratio']}",
        f"time       {summary['seconds']} s, {summary['sites_per_second']} sites/s",
    ]
    lines += _gaps(summary)
    skipped = summary.get("skipped_images", {"count": 0})
    if skipped["count"]:
        lines.append(f"bad images skipped: {skipped['count']}, e.g. "
                     + "; ".join(f"{f['file']} ({f['reason']})" for f in skipped["files"][:3]))
    if summary.get("resumed_wells"):
        lines.append(f"resumed: {summary['resumed_wells']} wells were already written and kept")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="platezarr")
@click.option("-v", "--verbose", is_flag=True, help="Log what the converter decides.")
def main(verbose: bool) -> None:
    """Convert image-based screening datasets into one chunked Zarr v3 store read with xarray."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@main.command("convert")
@click.argument("src")
@click.argument("out")
@click.option("--dataset", type=click.Choice(dataset_names()), help="Dataset schema; detected from SRC if omitted.")
@click.option("--metadata", help="Metadata table (CSV), or for RxRx1 the folder of competition tables.")
@click.option("--embeddings", help="Recursion's embeddings: a CSV or parquet table, or a folder of them (RxRx3).")
@click.option("--experiment", help="Experiment group for sources whose paths do not name it (CPJUMP1: the batch).")
@click.option("--plate", help="Plate group for Phenix images without an Index.idx.xml (CPJUMP1: the barcode).")
@STORAGE_OPTIONS
@click.option("--workers", type=click.IntRange(min=1), help="Parallel wells on this machine (default: one per core).")
@click.option("--scheduler", metavar="ADDRESS", help="Run the wells on this dask.distributed scheduler (tcp://host:8786).")
@click.option("--overwrite", is_flag=True, help="Replace an existing platezarr store at OUT instead of resuming it.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Stop at the first bad image, or record it (present=False) and go on.")
@click.option("--compression", type=click.Choice(["default", "compact"]), default="default", show_default=True,
              help="default: zstd, read by plain zarr; compact: JPEG-LS lossless, about 0.6x the bytes, "
                   "read where platezarr is installed.")
@click.option("--dry-run", is_flag=True, help="Print the plan (counts, gaps, estimated bytes) and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or plan) as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def convert_command(src: str, out: str, dataset: str | None, metadata: str | None, embeddings: str | None,
                    experiment: str | None, plate: str | None, storage_options: dict | None, workers: int | None,
                    scheduler: str | None, overwrite: bool, on_error: str, compression: str, dry_run: bool, as_json: bool,
                    no_progress: bool) -> None:
    """Convert the dataset in folder SRC into the store OUT; re-running on an interrupted OUT resumes it."""
    if workers and scheduler:
        raise click.UsageError("--workers and --scheduler exclude each other: the cluster has its own workers")
    bar = ProgressBar(not no_progress and not as_json)
    try:
        if dry_run:
            plan = plan_only(src, dataset, metadata, embeddings=embeddings, compression=compression,
                             experiment=experiment, plate=plate, progress=bar, storage_options=storage_options)
        else:
            summary = convert(src, out, dataset, metadata, embeddings=embeddings, compression=compression,
                              experiment=experiment, plate=plate, workers=workers, scheduler=scheduler,
                              storage_options=storage_options,
                              overwrite=overwrite, on_error=on_error, progress=bar)
    except PlatezarrError as error:
        bar.close()
        _fail(error)
    bar.close()
    if dry_run:
        click.echo(json.dumps(plan, indent=2) if as_json else format_plan(plan))
    else:
        _print_summary(summary, as_json)


def format_plan(plan: dict) -> str:
    """The plan of a dry run, one fact per line."""
    lines = [
        f"dataset    {plan['dataset']}{' (detected from the file names)' if plan.get('dataset_detected') else ''}"
        f"  (source {plan['source']}, metadata {plan['metadata']})",
        f"contents   {plan['experiments']} experiments, {plan['plates']} plates, {plan['wells']} wells, "
        f"{plan['sites']} sites, {len(plan['channels'])} channels ({', '.join(plan['channels'])}), {plan['images']} images",
        f"store      {plan['dtype']} {plan['image_shape']}, chunks {plan['chunks']}, shards {plan['shards']}, {plan['codec']}",
        f"bytes      {plan['source_bytes']:,} in, about {plan['estimated_output_bytes']:,} out (estimate)",
    ]
    return "\n".join(lines + _gaps(plan)) + "\nnothing written (dry run)"


def _gaps(report: dict) -> list[str]:
    lines = []
    for key, label in GAPS:
        if report.get(key, {"count": 0})["count"]:
            lines.append(f"{label}: {report[key]['count']}, e.g. " + "; ".join(report[key]["examples"]))
    return lines


def _print_summary(summary: Summary, as_json: bool) -> None:
    data = summary.as_dict()
    click.echo(json.dumps(data, indent=2) if as_json else format_summary(data))


@main.command("info")
@click.argument("out")
@STORAGE_OPTIONS
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_command(out: str, storage_options: dict | None, as_json: bool) -> None:
    """Describe the store OUT: experiments, plates, wells, sites, channels, bytes, ratio to the source."""
    try:
        info = store_info(out, storage_options)
    except PlatezarrError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key:<18} {shown}")


@main.command("verify")
@click.argument("src")
@click.argument("out")
@click.option("--sample", type=click.IntRange(min=1), help="Check N random images instead of all.")
@STORAGE_OPTIONS
@click.option("--workers", type=click.IntRange(min=1), help="Parallel wells (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify_command(src: str, out: str, sample: int | None, storage_options: dict | None, workers: int | None,
                   as_json: bool, no_progress: bool) -> None:
    """Compare every source image in SRC with the store OUT, pixel by pixel; exit 0 only if all are equal."""
    from converters.verify import verify

    bar = ProgressBar(not no_progress and not as_json)
    try:
        report = verify(src, out, sample=sample, workers=workers, progress=bar, storage_options=storage_options)
    except PlatezarrError as error:
        bar.close()
        _fail(error)
    bar.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for where, problem in report.mismatches:
            click.echo(f"MISMATCH {where}: {problem}")
        verdict = "all equal" if report.ok else f"{len(report.mismatches)} mismatches"
        click.echo(f"verified {report.images} images in {report.wells} wells: {verdict}")
    sys.exit(0 if report.ok else 1)


@main.command("demo")
@click.argument("out", default="demo.zarr")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def demo_command(out: str, no_progress: bool) -> None:
    """Generate a small RxRx1-layout dataset beside OUT, convert it into OUT, and show how to open it."""
    from converters.demo import run_demo

    bar = ProgressBar(not no_progress)
    try:
        summary, source = run_demo(Path(out), progress=bar)
    except PlatezarrError as error:
        bar.close()
        _fail(error)
    bar.close()
    data = summary.as_dict()
    click.echo(f"demo dataset written to {source} (RxRx1 layout, drawn cells)\n")
    click.echo(format_summary(data))
    click.echo(
        "\nopen it with xarray alone:\n"
        f"  python -c \"import xarray as xr; print(xr.open_datatree('{out}', engine='zarr'))\"\n"
        "or with platezarr:\n"
        f"  python -c \"import converters as pz; print(pz.open_sites('{out}'))\"\n"
        f"  platezarr info {out}"
    )


if __name__ == "__main__":
    main()
