"""The one-image-per-file layout of the RxRx datasets: keys come from a path pattern in the schema."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from converters.errors import SourceError
from converters.layouts.matching import match_names
from converters.metadata import MetadataTable
from converters.schema import DatasetSchema
from converters.sitekeys import codes_of, repeated
from converters.source import Listing, Source
from converters.wells import normalize_well

IMAGE_COLUMNS = ["experiment", "plate", "well", "site", "channel", "path", "bytes"]


EXAMPLES = 5  # ignored file names kept for the report


@dataclass(frozen=True)
class Scan:
    """What a layout's scanner is asked: the source and its listing, the dataset, and what the user said of it
    (`--experiment`, `--plate` for paths that do not name them; the metadata table, for tars in a bucket)."""

    source: Source
    listing: Listing
    schema: DatasetSchema
    experiment: str | None = None
    plate: str | None = None
    metadata: MetadataTable | None = None


@dataclass
class SourceIndex:
    """The images found under a source: one row per file, the names that matched no pattern, and
    what the source itself says about the acquisition (e.g. a microscope's index files) as `attrs`.

    Layouts whose images are not files (tars) also give the source's size in `bytes`, and the images'
    pixel type as `dtype` (probed from one image inside, or the schema's when none could be sampled).
    Images expected in tars that are not read while planning are given a row per site, not per image:
    `member_name` (e.g. `{well}_s{site}_{channel}.png`) names each of the site's channels in its tar.
    """

    images: pd.DataFrame
    ignored: list[str] = field(default_factory=list)
    ignored_count: int = 0
    attrs: dict = field(default_factory=dict)
    bytes: int | None = None
    dtype: np.dtype | None = None
    member_name: str | None = None


def scan_files(scan: Scan) -> SourceIndex:
    """Keep the files of `listing` (relative path, size) whose path matches the schema's pattern.

    The metadata table is not needed here: the file names list every image. Names are matched and their keys
    read a column at a time (converters/layouts/matching.py), so no Python object is made per file.
    """
    schema = scan.schema
    refuse_experiment_and_plate(scan, "file")
    names = scan.listing.all_names()
    kept, groups = match_names(names, schema.path_pattern)
    ignored_count = len(names) - len(kept)
    ignored = _first_unmatched(names, kept) if ignored_count else []
    everything, sizes = scan.listing.names, scan.listing.sizes  # not copies: a plan's paths index this column
    if ignored_count:
        everything, sizes = everything.take(pa.array(kept)), sizes[kept]
    images = pd.DataFrame({**{k: pd.Categorical.from_codes(*groups[k]) for k in IMAGE_COLUMNS[:5]},
                           "path": everything.to_pandas(), "bytes": sizes}, copy=False)
    del names, groups, everything, sizes
    images = path_numbers(images, number_keys(schema), scan.source.path)
    images["well"] = recode(images["well"], normalize_well)
    images["channel"] = recode(images["channel"], lambda c: schema.channel_id.format(channel=c))
    check_unique(images, scan.source.path)
    return SourceIndex(images, sorted(ignored), ignored_count)  # in path order, as the listing is


def _first_unmatched(names: pa.ChunkedArray, kept: np.ndarray) -> list[str]:
    """The first few names, in listing order, that are not at the positions `kept`."""
    unmatched = np.ones(len(names), dtype=bool)
    unmatched[kept] = False
    return names.take(pa.array(np.flatnonzero(unmatched)[:EXAMPLES])).to_pylist()


def recode(values: pd.Series, convert: Callable[[str], str]) -> pd.Series:
    """`convert` applied to each distinct value once (a dataset has few wells and channels, and many files); the
    result is categorical, a small int per file."""
    codes, uniques = pd.factorize(values)
    converted, categories = pd.factorize(pd.Series([convert(u) for u in uniques.tolist()], dtype="str"))
    return pd.Series(pd.Categorical.from_codes(converted[codes] if len(converted) else codes, categories),
                     index=values.index)


def number_keys(schema: DatasetSchema) -> list[str]:
    """The keys that file names give as numbers: the site, and the plate unless it is a barcode."""
    return ["site"] + (["plate"] if schema.key_dtype("plate") == "int64" else [])


def path_numbers(frame: pd.DataFrame, columns: list[str], where: Callable[[str], str]) -> pd.DataFrame:
    """`frame` with `columns` (digits taken from file names) as int64, a categorical column as categories of int64
    (a small int per file); a number beyond int64, or two spellings of one number (`Plate1` and `Plate01`, which
    would share a group), is refused naming the files."""
    typed = {}
    for column in columns:
        codes, texts = codes_of(frame[column])
        if (codes < 0).any():
            raise SourceError(f"{where(frame['path'].iloc[int(np.argmax(codes < 0))])}: no {column} in the name")
        first = np.unique(codes, return_index=True)[1]  # the first row of each distinct text, by code
        spelled: dict[int, int] = {}  # each number's first code met
        numbers = np.zeros(len(texts), dtype=np.int64)
        for code in np.argsort(first).tolist():  # the texts in the order the rows give them
            text, row = texts[code], int(first[code])
            value = int(text)
            if value >= 2**63:
                raise SourceError(f"{where(frame['path'].iloc[row])}: {column} {text} is beyond a 64-bit integer; "
                                  "rename the file or folder")
            if value in spelled:
                other = frame["path"].iloc[first[spelled[value]]]
                raise SourceError(f"{where(other)} and {where(frame['path'].iloc[row])}: {column} "
                                  f"{texts[spelled[value]]!r} and {text!r} are one {column} ({value}) spelled twice; "
                                  f"rename one so that each {column} has one name")
            spelled[value] = code
            numbers[code] = value
        categorical = isinstance(frame[column].dtype, pd.CategoricalDtype)
        typed[column] = pd.Series(pd.Categorical.from_codes(codes, numbers) if categorical else numbers[codes],
                                  index=frame.index)
    return frame.assign(**typed)


def refuse_experiment_and_plate(scan: Scan, kind: str) -> None:
    """`--experiment` and `--plate` are for layouts whose paths do not name them; refuse them where paths do."""
    schema = scan.schema
    if scan.experiment is not None or scan.plate is not None:
        raise SourceError(
            f"{schema.title} {kind} paths name the experiment and plate of every image; "
            "--experiment and --plate are only for layouts whose paths do not (CPJUMP1)"
        )


def check_unique(images: pd.DataFrame, where: Callable[[str], str]) -> None:
    """Two files for one image (e.g. the 2019 and 2020 layouts side by side) is an error, not a choice."""
    key = ["experiment", "plate", "well", "site", "channel"]
    dup = images[repeated(images, key)]
    if dup.empty:
        return
    first = dup.astype({k: object for k in key}).sort_values(key).iloc[:2]  # by value, also for categorical keys
    a, b = (where(p) for p in first["path"])
    raise SourceError(
        f"two files for the same image: {a} and {b} ({len(dup)} files share a key in all); "
        "keep one copy of the dataset under the source folder"
    )
