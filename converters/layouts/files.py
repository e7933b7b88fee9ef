"""The one-image-per-file layout of the RxRx datasets: keys come from a path pattern in the schema."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from converters.errors import SourceError
from converters.metadata import MetadataTable
from converters.schema import DatasetSchema
from converters.source import Listing, LocalSource
from converters.wells import normalize_well

IMAGE_COLUMNS = ["experiment", "plate", "well", "site", "channel", "path", "bytes"]


@dataclass
class SourceIndex:
    """The images found under a source: one row per file, the names that matched no pattern, and
    what the source itself says about the acquisition (e.g. a microscope's index files) as `attrs`.

    Layouts whose images are not files (tars) also give the source's size in `bytes`, and the images'
    pixel type as `dtype` (probed from one image inside, or the schema's when none could be sampled).
    """

    images: pd.DataFrame
    ignored: list[str] = field(default_factory=list)
    ignored_count: int = 0
    attrs: dict = field(default_factory=dict)
    bytes: int | None = None
    dtype: np.dtype | None = None


def scan_files(
    source: LocalSource,
    listing: Listing,
    schema: DatasetSchema,
    *,
    experiment: str | None = None,
    plate: str | None = None,
    metadata: MetadataTable | None = None,
    examples: int = 5,
) -> SourceIndex:
    """Keep the files of `listing` (relative path, size) whose path matches the schema's pattern.

    `metadata` is not needed here: the file names list every image.
    """
    refuse_experiment_and_plate(schema, "file", experiment, plate)
    keys: dict[str, list[str]] = {k: [] for k in IMAGE_COLUMNS[:5]}
    names = list(keys)
    columns = [keys[k] for k in names]
    seen: dict[str, str] = {}  # one str per distinct experiment, plate, well, site, channel, not one per file
    paths: list[pa.Array] = []
    sizes: list[np.ndarray] = []
    ignored: list[str] = []
    ignored_count = 0
    match = schema.path_pattern.match
    for chunk, chunk_sizes in listing.chunks():
        kept = array("q")
        for i, rel in enumerate(chunk.to_pylist()):
            m = match(rel)
            if m is None:
                ignored_count += 1
                if len(ignored) < examples:
                    ignored.append(rel)
                continue
            for column, value in zip(columns, m.group(*names)):
                column.append(seen.setdefault(value, value))
            kept.append(i)
        taken = np.frombuffer(kept, dtype=np.int64) if kept else np.zeros(0, np.int64)
        paths.append(chunk.take(taken))
        sizes.append(chunk_sizes[taken])
    path = pa.chunked_array(paths, pa.string()).to_pandas()
    images = pd.DataFrame({**keys, "path": path, "bytes": np.concatenate(sizes) if sizes else np.zeros(0, np.int64)},
                          columns=IMAGE_COLUMNS)
    del keys, columns, paths, sizes, seen, path
    images = images.astype({"plate": schema.key_dtype("plate"), "site": "int64"})
    images["well"] = images["well"].map({w: normalize_well(w) for w in images["well"].unique()})
    images["channel"] = images["channel"].map({c: schema.channel_id.format(channel=c) for c in images["channel"].unique()})
    check_unique(images, source)
    return SourceIndex(images.sort_values("path", ignore_index=True), sorted(ignored), ignored_count)


def refuse_experiment_and_plate(schema: DatasetSchema, kind: str, experiment: str | None, plate: str | None) -> None:
    """`--experiment` and `--plate` are for layouts whose paths do not name them; refuse them where paths do."""
    if experiment is not None or plate is not None:
        raise SourceError(
            f"{schema.title} {kind} paths name the experiment and plate of every image; "
            "--experiment and --plate are only for layouts whose paths do not (CPJUMP1)"
        )


def check_unique(images: pd.DataFrame, source: LocalSource) -> None:
    """Two files for one image (e.g. the 2019 and 2020 layouts side by side) is an error, not a choice."""
    key = ["experiment", "plate", "well", "site", "channel"]
    dup = images[images.duplicated(key, keep=False)]
    if dup.empty:
        return
    first = dup.sort_values(key).iloc[:2]
    a, b = (source.path(p) for p in first["path"])
    raise SourceError(
        f"two files for the same image: {a} and {b} ({len(dup)} files share a key in all); "
        "keep one copy of the dataset under the source folder"
    )
