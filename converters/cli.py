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

from converters.convert import Progress, Summary, convert
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


def _fail(error: PlatezarrError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


def format_summary(summary: dict) -> str:
    """The final summary of a conversion, one fact per line."""
    lines = [
        f"store      {summary['out']}  ({summary['dataset']})",
        f"contents   {summary['experiments']} experiments, {summary['plates']} plates, {summary['wells']} wells, "
        f"{summary['sites']} sites, {summary['images']} images",
        f"bytes      {summary['bytes_in']:,} in, {summary['bytes_out']:,} out, ratio {summary['ratio']}",
        f"time       {summary['seconds']} s, {summary['sites_per_second']} sites/s",
    ]
    for key, label in (
        ("missing_images", "missing images"),
        ("images_without_metadata", "sites with images but no metadata row"),
        ("metadata_without_images", "metadata rows (sites) with no images"),
        ("ignored_files", "files ignored (names match no pattern)"),
    ):
        report = summary[key]
        if report["count"]:
            lines.append(f"{label}: {report['count']}, e.g. " + "; ".join(report["examples"]))
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
@click.option("--workers", type=click.IntRange(min=1), help="Parallel wells (default: one per core).")
@click.option("--overwrite", is_flag=True, help="Replace an existing platezarr store at OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def convert_command(src: str, out: str, dataset: str | None, metadata: str | None, workers: int | None,
                    overwrite: bool, as_json: bool, no_progress: bool) -> None:
    """Convert the dataset in folder SRC into the store OUT."""
    bar = ProgressBar(not no_progress and not as_json)
    try:
        summary = convert(src, out, dataset, metadata, workers=workers, overwrite=overwrite, progress=bar)
    except PlatezarrError as error:
        bar.close()
        _fail(error)
    bar.close()
    _print_summary(summary, as_json)


def _print_summary(summary: Summary, as_json: bool) -> None:
    data = summary.as_dict()
    click.echo(json.dumps(data, indent=2) if as_json else format_summary(data))


@main.command("info")
@click.argument("out")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_command(out: str, as_json: bool) -> None:
    """Describe the store OUT: experiments, plates, wells, sites, channels, bytes, ratio to the source."""
    try:
        info = store_info(out)
    except PlatezarrError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key:<18} {shown}")


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
