"""The options of one conversion, as one value: made once (by the CLI or `convert`), checked when made,
and handed to the plan, the executor and the output."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from converters.errors import OptionError
from converters.execute import check_scheduler_address
from converters.formats import FORMATS
from converters.plan import parse_chunks
from converters.profiles import DEFAULT, parse_profile
from converters.schema import DatasetSchema

ON_ERROR = ("fail", "skip")


def parse_on_error(value: str) -> str:
    """`value` if it is a way to meet a bad image (stop, or record it and go on), else an OptionError."""
    if value not in ON_ERROR:
        raise OptionError(f"on_error must be one of {', '.join(ON_ERROR)}, not {value!r}")
    return value


def parse_format(value: str) -> str:
    """`value` if it names an output format, else an OptionError listing them."""
    if value not in FORMATS:
        raise OptionError(f"format must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Options:
    """How to convert: what the source is (dataset, tables, names), how to store it, and how to run."""

    dataset: str | DatasetSchema | None = None  # detected from the source when None
    metadata: str | os.PathLike[str] | None = None
    embeddings: str | os.PathLike[str] | None = None
    experiment: str | None = None  # for sources whose paths do not name it
    plate: str | None = None
    compression: str = DEFAULT
    chunks: str | int | Sequence[int] | None = None  # `parse_chunks`; None: the schema's default
    format: str = "native"
    storage_options: dict[str, Any] | None = None
    workers: int | None = None  # parallel wells on this machine (default: one per core)
    scheduler: str | None = None  # a dask.distributed scheduler's address instead
    overwrite: bool = False
    on_error: str = "fail"

    def __post_init__(self) -> None:
        parse_profile(self.compression)
        parse_format(self.format)
        parse_on_error(self.on_error)
        if parse_chunks(self.chunks) is not None and self.format == "ome-zarr":
            raise OptionError("format ome-zarr chooses its own chunks (one channel, tiles of up to 512 pixels) for "
                              "viewers: leave chunks out, or convert to the native store (format native)")
        if self.format == "ome-zarr" and parse_profile(self.compression).reader_needs != "zarr":
            raise OptionError(f"compression {self.compression!r} is read only where platezarr is installed, not by the "
                              "viewers and OME tools OME-Zarr is for: use the default compression with format ome-zarr")
        if self.format == "ome-zarr" and self.embeddings is not None:
            raise OptionError("OME-Zarr 0.5 has no tables, so embeddings have no place in it: convert to the native "
                              "store (format native) to keep them")
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"workers must be at least 1, not {self.workers}")
        if self.workers and self.scheduler:
            raise OptionError("workers and scheduler exclude each other: the cluster has its own workers")
        if self.scheduler is not None:
            check_scheduler_address(self.scheduler)

    @property
    def parallel(self) -> int:
        """Wells written at once on this machine."""
        return self.workers or os.cpu_count() or 1
