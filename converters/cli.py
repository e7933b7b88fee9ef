"""The `platezarr` command: parse arguments at the edge, make one library call, print, exit.

Exit status: 0 done; 1 the conversion failed or found bad input; 2 wrong usage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click
import pyarrow as pa
from tqdm import tqdm

from converters.convert import Progress, Summary, plan_only, run_conversion
from converters.errors import PlatezarrError
from converters.export import EXPORT_FORMATS, run_export
from converters.formats import FORMATS
from converters.options import ON_ERROR, Options
from converters.profiles import DEFAULT, PROFILES
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
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"endpoint\": \"http://127.0.0.1:9000\"}'")
    return options


STORAGE_OPTIONS = click.option(
    "--storage-options", "storage_options", callback=lambda c, p, v: parse_storage_options(v), metavar="JSON",
    help='Options to reach buckets, e.g. \'{"endpoint": "http://127.0.0.1:9000"}\' or \'{"skip_signature": true}\' '
    "(credentials and endpoints otherwise come from the cloud's usual environment and config files).",
)


def _fail(error: PlatezarrError) -> None:
    """Print the error (and, with -v, what caused it) and exit 1."""
    click.echo(f"error: {error}", err=True)
    if logging.getLogger("platezarr").isEnabledFor(logging.INFO):
        cause = error.__cause__
        while cause is not None:
            click.echo(f"  caused by {type(cause).__module__}.{type(cause).__qualname__}: {cause}", err=True)
            cause = cause.__cause__
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
        _contents(summary, ""),
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
    # The process is the command's: Arrow's default allocator (mimalloc) keeps much of what pandas' Arrow-backed
    # columns free while a plan is made (300 MB of RxRx3's 2.2 million rows), the C library's hands it back
    pa.set_memory_pool(pa.system_memory_pool())
    if not verbose:  # dask.distributed logs its reconnection attempts with tracebacks; our error says what happened
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_cluster)


def _quiet_cluster(record: logging.LogRecord) -> bool:
    """False for dask.distributed's and tornado's records: distributed sets its own loggers' levels when it is
    imported (after this CLI's setup), so their level alone cannot silence them."""
    return not record.name.startswith(("distributed", "tornado"))


def check_scheduler_option(value: str | None) -> str | None:
    """The --scheduler address if it has the form of one, else a usage error saying what is wrong with it."""
    from converters.errors import SchedulerError
    from converters.execute import check_scheduler_address

    try:
        return None if value is None else check_scheduler_address(value)
    except SchedulerError as error:
        raise click.BadParameter(str(error)) from error


def check_chunks_option(value: str | None) -> str | None:
    """The --chunks value if it has the form of a chunk shape, else a usage error naming the forms it takes."""
    from converters.errors import OptionError
    from converters.plan import parse_chunks

    try:
        parse_chunks(value)
        return value
    except OptionError as error:
        raise click.BadParameter(str(error)) from error


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
@click.option("--scheduler", metavar="ADDRESS", callback=lambda c, p, v: check_scheduler_option(v),
              help="Run the wells on this dask.distributed scheduler (tcp://host:8786); wait for it "
                   "$PLATEZARR_SCHEDULER_TIMEOUT seconds (default 20).")
@click.option("--overwrite", is_flag=True, help="Replace an existing platezarr store at OUT instead of resuming it.")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="fail", show_default=True,
              help="Stop at the first bad image, or record it (present=False) and go on.")
@click.option("--compression", type=click.Choice(list(PROFILES)), default=DEFAULT, show_default=True,
              help="; ".join(f"{p.name}: {p.help}" for p in PROFILES.values()) + ".")
@click.option("--format", "store_format", type=click.Choice(list(FORMATS)), default="native", show_default=True,
              help="native: the platezarr store; ome-zarr: OME-NGFF 0.5 HCS plates for napari, vizarr and OME tools.")
@click.option("--chunks", metavar="SHAPE", callback=lambda c, p, v: check_chunks_option(v),
              help="Chunks of the images inside each well's shard: site (a whole site), N (N x N tiles of every "
                   "channel, for crops of large images), Y,X, C,Y,X or 1,1,C,Y,X; default: the dataset schema's.")
@click.option("--dry-run", is_flag=True, help="Print the plan (counts, gaps, estimated bytes) and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or plan) as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def convert_command(src: str, out: str, dataset: str | None, metadata: str | None, embeddings: str | None,
                    experiment: str | None, plate: str | None, storage_options: dict | None, workers: int | None,
                    scheduler: str | None, overwrite: bool, on_error: str, compression: str, store_format: str,
                    chunks: str | None, dry_run: bool, as_json: bool, no_progress: bool) -> None:
    """Convert the dataset in folder SRC into the store OUT; re-running on an interrupted OUT resumes it."""
    if workers and scheduler:
        raise click.UsageError("--workers and --scheduler exclude each other: the cluster has its own workers")
    bar = ProgressBar(not no_progress and not as_json)
    try:
        options = Options(dataset=dataset, metadata=metadata, embeddings=embeddings, experiment=experiment, plate=plate,
                          compression=compression, storage_options=storage_options, workers=workers,
                          scheduler=scheduler, overwrite=overwrite, on_error=on_error, format=store_format,
                          chunks=chunks)
        if dry_run:
            plan = plan_only(src, options, progress=bar)
        else:
            summary = run_conversion(src, out, options, progress=bar)
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
        _contents(plan, f"{len(plan['channels'])} channels ({', '.join(plan['channels'])}), "),
        f"store      {plan['dtype']} {plan['image_shape']}, chunks {plan['chunks']}, shards {plan['shards']}, {plan['codec']}",
        f"bytes      {plan['source_bytes']:,} in, about {plan['estimated_output_bytes']:,} out (estimate)",
    ]
    return "\n".join(lines + _gaps(plan)) + "\nnothing written (dry run)"


def _contents(report: dict, channels: str) -> str:
    """The `contents` line of a summary or plan: how many of each level, and of images."""
    return (f"contents   {report['experiments']} experiments, {report['plates']} plates, {report['wells']} wells, "
            f"{report['sites']} sites, {channels}{report['images']} images")


def _gaps(report: dict) -> list[str]:
    lines = []
    for key, label in GAPS:
        if report.get(key, {"count": 0})["count"]:
            lines.append(f"{label}: {report[key]['count']}, e.g. " + "; ".join(report[key]["examples"]))
    return lines


def _print_summary(summary: Summary, as_json: bool) -> None:
    data = summary.as_dict()
    click.echo(json.dumps(data, indent=2) if as_json else format_summary(data))


@main.command("export")
@click.argument("store")
@click.argument("out")
@click.option("--format", "store_format", type=click.Choice(EXPORT_FORMATS), default="ome-zarr", show_default=True,
              help="The format to write: OME-NGFF 0.5 HCS plates.")
@click.option("--plates", multiple=True, metavar="EXP/PLATE",
              help="Export only this plate group (repeat the option, or separate them by commas); default: all.")
@STORAGE_OPTIONS
@click.option("--workers", type=click.IntRange(min=1), help="Parallel wells on this machine (default: one per core).")
@click.option("--scheduler", metavar="ADDRESS", callback=lambda c, p, v: check_scheduler_option(v),
              help="Run the wells on this dask.distributed scheduler (tcp://host:8786).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at OUT instead of resuming it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def export_command(store: str, out: str, store_format: str, plates: tuple[str, ...], storage_options: dict | None,
                   workers: int | None, scheduler: str | None, overwrite: bool, as_json: bool, no_progress: bool) -> None:
    """Write the plates of the platezarr store STORE as OME-Zarr into OUT; re-running on an interrupted OUT resumes it."""
    if workers and scheduler:
        raise click.UsageError("--workers and --scheduler exclude each other: the cluster has its own workers")
    chosen = [p.strip() for value in plates for p in value.split(",") if p.strip()]
    bar = ProgressBar(not no_progress and not as_json)
    try:
        options = Options(format=store_format, storage_options=storage_options, workers=workers, scheduler=scheduler,
                          overwrite=overwrite)
        summary = run_export(store, out, options, chosen or None, progress=bar)
    except PlatezarrError as error:
        bar.close()
        _fail(error)
    bar.close()
    _print_summary(summary, as_json)


@main.command("info")
@click.argument("out")
@STORAGE_OPTIONS
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_command(out: str, storage_options: dict | None, as_json: bool) -> None:
    """Describe the store OUT: experiments, plates, wells, sites, channels, bytes, ratio to the source."""
    from converters.info import store_info

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
        summary, source, pictures = run_demo(Path(out), progress=bar)
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
    click.echo(f"\npictures of a site and a plate: {', '.join(map(str, pictures))} (platezarr show draws others)")


@main.command("stats")
@click.argument("out")
@click.option("--table", metavar="FILE", help="Also write the pixel_stats table (one row per site and channel), "
              "as CSV or parquet by FILE's extension.")
@STORAGE_OPTIONS
@click.option("--workers", type=click.IntRange(min=1), help="Parallel wells on this machine (default: one per core).")
@click.option("--scheduler", metavar="ADDRESS", callback=lambda c, p, v: check_scheduler_option(v),
              help="Measure the wells on this dask.distributed scheduler (tcp://host:8786).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def stats_command(out: str, table: str | None, storage_options: dict | None, workers: int | None, scheduler: str | None,
                  as_json: bool, no_progress: bool) -> None:
    """Add pixel statistics to the store OUT if it has none (re-running resumes), and write the table."""
    from converters.measure import compute_stats

    if workers and scheduler:
        raise click.UsageError("--workers and --scheduler exclude each other: the cluster has its own workers")
    bar = ProgressBar(not no_progress and not as_json)
    try:
        report = compute_stats(out, table, workers=workers, scheduler=scheduler, storage_options=storage_options,
                               progress=bar)
    except PlatezarrError as error:
        bar.close()
        _fail(error)
    bar.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    done = (f"measured {report['wells']} wells ({report['resumed_wells']} already measured by an interrupted run)"
            if report["computed"] else "the store already has pixel statistics")
    click.echo(f"{report['store']}: {done}")
    if "table" in report:
        click.echo(f"wrote {report['table']} ({report['table_rows']} rows, one per site and channel)")


@main.command("show")
@click.argument("out")
@click.argument("target", metavar="EXP/PLATE[/WELL/SITE]")
@click.option("-o", "--output", "picture", required=True, metavar="FILE.png", help="The PNG to write.")
@click.option("--qc", metavar="STAT", help="A heat map of a per-well statistic instead of the montage: `present`, "
              "or STAT:CHANNEL with STAT mean, std, min, max, p1, p50 or p99 (e.g. mean:w1).")
@click.option("--channels", help="Channels to draw, by id or name, comma-separated (default: all but brightfield).")
@click.option("--range", "ranges", type=click.Choice(["plate", "site", "fixed"]), default="plate", show_default=True,
              help="Display range of each channel: the plate's pooled 50th-99.9th percentiles, the site's own, or "
                   "the dataset's fixed one (rxrx1-utils' for RxRx).")
@click.option("--grid", is_flag=True, help="A site's channels each on its own, as labelled tiles.")
@STORAGE_OPTIONS
def show_command(out: str, target: str, picture: str, qc: str | None, channels: str | None, ranges: str, grid: bool,
                 storage_options: dict | None) -> None:
    """Draw a site (EXP/PLATE/WELL/SITE) or a plate (EXP/PLATE) of the store OUT into a PNG."""
    from converters.pictures import show

    picked = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    try:
        path, (width, height) = show(out, target, picture, qc=qc, channels=picked, ranges=ranges, grid=grid,
                                     storage_options=storage_options)
    except PlatezarrError as error:
        _fail(error)
    click.echo(f"wrote {path} ({width}x{height} pixels)")


def run() -> None:
    """The `platezarr` command: `main`, then end the process with its exit status without Python's finalization.

    obstore's runtime threads hand each finished request back to Python (zarr reads buckets through it). On Python
    3.11, one doing so while the interpreter finalizes is ended with pthread_exit, which aborts the process through
    the Rust frames below it: the command died with SIGABRT after printing its result. Everything the command opened
    is closed by the time `main` returns; what is left to do is flush the output.
    """
    try:
        main()
        status = 0
    except SystemExit as stop:
        if isinstance(stop.code, str):
            click.echo(stop.code, err=True)
        status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (`platezarr info | head`): nothing more can be said
            status = status or 1
    os._exit(status)


if __name__ == "__main__":
    run()
