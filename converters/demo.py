"""`platezarr demo`: draw the demo dataset beside the output and convert it, the first thing to run."""

from __future__ import annotations

import shutil
from pathlib import Path

from converters.convert import ProgressCallback, Summary, convert
from converters.demo_data import write_demo_dataset
from converters.errors import StoreError
from converters.output import is_platezarr_store


def run_demo(out: Path, progress: ProgressCallback | None = None) -> tuple[Summary, Path]:
    """Write the demo source to `<out stem>-source/` and convert it into `out` (replacing an earlier demo)."""
    source = out.with_name(f"{out.stem}-source")
    if source.exists():
        if not (source / "metadata.csv").is_file():
            raise StoreError(f"{source} exists and is not an earlier demo source; move it or choose another OUT")
        shutil.rmtree(source)
    images, metadata = write_demo_dataset(source)
    overwrite = out.exists() and is_platezarr_store(out.resolve())
    kwargs = {"progress": progress} if progress else {}
    return convert(images, out, "rxrx1_demo", metadata, overwrite=overwrite, **kwargs), source
