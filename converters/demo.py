"""`platezarr demo`: draw the demo dataset beside the output and convert it, the first thing to run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from converters.convert import ProgressCallback, Summary, convert
from converters.demo_data import write_demo_dataset
from converters.errors import StoreError
from converters.output import is_platezarr_store
from converters.pictures import plate_montage, png_bytes, site_rgb

DEMO_PLATE, DEMO_WELL = "HUVEC-01/Plate1", "B02"


class Demo(NamedTuple):
    """What `platezarr demo` made: the conversion's summary, the drawn source, and the site and plate pictures."""

    summary: Summary
    source: Path
    pictures: list[Path]


def run_demo(out: Path, progress: ProgressCallback | None = None) -> Demo:
    """Write the demo source to `<out stem>-source/`, convert it into `out` (replacing an earlier demo), and draw
    a site and a plate of it beside `out` (`<out stem>-site.png`, `<out stem>-plate.png`)."""
    source = out.with_name(f"{out.stem}-source")
    if source.exists():
        if not (source / "metadata.csv").is_file():
            raise StoreError(f"{source} exists and is not an earlier demo source; move it or choose another OUT")
        shutil.rmtree(source)
    images, metadata = write_demo_dataset(source)
    overwrite = out.exists() and is_platezarr_store(out.resolve())
    reports = {"progress": progress} if progress else {}
    summary = convert(images, out, "rxrx1_demo", metadata, overwrite=overwrite, **reports)
    site, plate = out.with_name(f"{out.stem}-site.png"), out.with_name(f"{out.stem}-plate.png")
    site.write_bytes(png_bytes(site_rgb(out, DEMO_PLATE, DEMO_WELL, 1)))
    plate.write_bytes(png_bytes(plate_montage(out, DEMO_PLATE, cell=32)))
    return Demo(summary, source, [site, plate])
