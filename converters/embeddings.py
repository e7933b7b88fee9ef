"""Recursion's deep-learning embeddings: one float vector per site or per well, attached to each plate.

RxRx1, RxRx2, RxRx19a and RxRx19b ship a CSV of `site_id` (`HUVEC-1_1_AA03_1`) and the features
(128 or 1024 columns); RxRx3 ships one parquet file per plate (`gene-001/Plate1/embeddings.parquet`)
of `well_id` (`gene-079_8_H29`) and 128 features. Either becomes `embeddings(well, site, feature)` or
`embeddings(well, feature)` float32 in each plate group, NaN where the table has no row. Tables are
read with pyarrow: a 1.4 GB RxRx19a CSV in seconds, features parsed straight into float32.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import xarray as xr
from zarr.abc.store import Store
from zarr.codecs import ZstdCodec

from converters.errors import MetadataError
from converters.schema import DatasetSchema
from converters.wells import normalize_well

ID_COLUMNS = {"site": ("site_id", ["experiment", "plate", "well", "site"]), "well": ("well_id", ["experiment", "plate", "well"])}
SUFFIXES = (".csv", ".parquet")
CHUNK_BYTES = 4 << 20  # wells per chunk of the embeddings array: about 4 MiB of float32
KEY_NUMBER = re.compile(r"[0-9]{1,19}")  # a plate or site number in an id, then checked to fit int64


@dataclass
class EmbeddingsTable:
    """The rows of an embeddings table: their keys in the store, their ids, and the features as float32."""

    location: str
    level: str  # "site" or "well"
    features: list[str]
    keys: pd.DataFrame  # experiment, plate, well (, site) of each row
    ids: np.ndarray  # site_id or well_id of each row, for reports
    values: np.ndarray  # (rows, features) float32
    _by_plate: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_plate = self.keys.groupby(["experiment", "plate"], sort=False).indices

    @property
    def key_columns(self) -> list[str]:
        return ID_COLUMNS[self.level][1]

    def for_plate(self, experiment: str, plate: int | str, wells: list[str], sites: tuple[int, ...]) -> np.ndarray:
        """The plate's embeddings, (wells, sites, features) or (wells, features) for a per-well table; NaN where no row."""
        shape = (len(wells), len(sites), len(self.features)) if self.level == "site" else (len(wells), len(self.features))
        out = np.full(shape, np.nan, dtype=np.float32)
        rows = self._by_plate.get((experiment, plate))
        if rows is None:
            return out
        keys = self.keys.iloc[rows]
        well_index = keys["well"].map({w: i for i, w in enumerate(wells)}).to_numpy(dtype=float)
        if self.level == "site":
            site_index = keys["site"].map({s: i for i, s in enumerate(sites)}).to_numpy(dtype=float)
            placed = ~np.isnan(well_index) & ~np.isnan(site_index)
            out[well_index[placed].astype(int), site_index[placed].astype(int)] = self.values[rows[placed]]
        else:
            placed = ~np.isnan(well_index)
            out[well_index[placed].astype(int)] = self.values[rows[placed]]
        return out

    def digest(self) -> str:
        """A fingerprint of every key and value, so a resumed conversion notices a changed table."""
        digest = hashlib.sha256(pd.util.hash_pandas_object(self.keys, index=False).to_numpy().tobytes())
        digest.update("\x00".join(self.features).encode())
        digest.update(np.ascontiguousarray(self.values).data)
        return digest.hexdigest()


def read_embeddings(location: str | os.PathLike[str], schema: DatasetSchema, shown_as: str | None = None) -> EmbeddingsTable:
    """Read an embeddings CSV or parquet file, or a folder of them (one per plate), keyed by site_id or well_id."""
    path = Path(os.fspath(location).removeprefix("file://")).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise MetadataError(f"{path}: a folder with no embeddings tables in it (*.csv or *.parquet)")
    elif path.is_file():
        files = [path]
    else:
        raise MetadataError(f"{path}: embeddings table not found")
    parts = [_read_file(f) for f in files]
    level, features = parts[0][1], parts[0][2]
    for f, (_, other_level, other) in zip(files[1:], parts[1:]):
        if (other_level, other) != (level, features):
            raise MetadataError(f"{f}: its id column or feature columns differ from those of {files[0]}; "
                                "an embeddings folder holds tables of one kind")
    table = pa.concat_tables([p[0] for p in parts])
    id_column, key_columns = ID_COLUMNS[level]
    ids = table.column(id_column).to_numpy(zero_copy_only=False).astype(object)
    origins = [f"{f}:{row}" for f, (t, _, _) in zip(files, parts) for row in _row_numbers(f, t.num_rows)]
    keys = _parse_ids(ids, key_columns, origins, schema, id_column)
    values = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        values[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    return EmbeddingsTable(shown_as or str(path), level, features, keys, ids, values)


def _row_numbers(path: Path, n: int) -> range:
    """Line numbers of a CSV's rows (after the header), or 0-based row numbers of a parquet file."""
    return range(2, n + 2) if path.suffix == ".csv" else range(n)


def _read_file(path: Path) -> tuple[pa.Table, str, list[str]]:
    """One table, its level (site or well, from its id column) and its feature columns, read as float32."""
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            level = _level(header, path)
            types = {name: (pa.string() if name == ID_COLUMNS[level][0] else pa.float32()) for name in header}
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            import pyarrow.parquet as pq  # here: it loads pyarrow's cloud filesystems (and the AWS SDK) with it

            table = pq.read_table(path)
            level = _level(table.column_names, path)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: not a readable embeddings table: {exc}") from exc
    id_column = ID_COLUMNS[level][0]
    features = [name for name in table.column_names if name != id_column]
    for name in features:
        kind = table.schema.field(name).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise MetadataError(f"{path}: column {name!r} holds {kind}, not numbers; an embeddings table is "
                                f"{id_column} and one number per feature column")
    if not features:
        raise MetadataError(f"{path}: no feature columns beside {id_column}")
    return table, level, features


def _level(columns: list[str], path: Path) -> str:
    if "site_id" in columns:
        return "site"
    if "well_id" in columns:
        return "well"
    raise MetadataError(f"{path}: no site_id or well_id column; found {', '.join(columns[:5])}{', …' if len(columns) > 5 else ''}")


def _parse_ids(ids: np.ndarray, columns: list[str], origins: list[str], schema: DatasetSchema,
               id_column: str) -> pd.DataFrame:
    """Split `HUVEC-1_1_AA03_1` into experiment, plate, well, site (from the right: experiments may hold `_`)."""
    parts = pd.Series(ids, dtype=object).str.rsplit("_", n=len(columns) - 1, expand=True)
    numbers = [c for c in ("plate", "site") if c in columns and (c == "site" or schema.key_dtype("plate") != "str")]

    def refuse(i: int) -> MetadataError:
        shape, example = {"site_id": ("_site", "HUVEC-1_1_AA03_1"), "well_id": ("", "gene-079_8_H29")}[id_column]
        whole = f" ({' and '.join(numbers)}: whole numbers below 2**63)" if numbers else ""
        return MetadataError(
            f"{origins[i]}: {id_column} {ids[i]!r} is not experiment_plate_well{shape} like {example!r}{whole}"
        )

    bad = parts.isna().any(axis=1) if parts.shape[1] == len(columns) else pd.Series(True, index=parts.index)
    if bad.any():
        raise refuse(int(np.flatnonzero(bad.to_numpy())[0]))
    keys = parts.set_axis(columns, axis=1)
    for i, row in enumerate(keys.itertuples(index=False)):
        try:
            normalize_well(row.well)
        except ValueError:
            raise refuse(i) from None
        if not all(KEY_NUMBER.fullmatch(v) and int(v) < 2**63 for v in (getattr(row, name) for name in numbers)):
            raise refuse(i)
    keys["well"] = [normalize_well(w) for w in keys["well"]]
    keys = keys.astype({name: "int64" for name in numbers})
    dup = keys.duplicated(keep=False).to_numpy()
    if dup.any():
        first = np.flatnonzero(dup)[:2]
        raise MetadataError(f"{origins[first[0]]} and {origins[first[1]]}: two rows for {id_column} {ids[first[0]]!r}")
    return keys


def write_embeddings(store: Store, group: str, values: np.ndarray, table: EmbeddingsTable) -> None:
    """The plate's `embeddings` array and its `feature` coordinate, read back with plain xarray."""
    dims = ("well", "site", "feature") if values.ndim == 3 else ("well", "feature")
    per_well = max(1, int(np.prod(values.shape[1:])) * 4)
    chunks = (max(1, min(len(values), CHUNK_BYTES // per_well)), *values.shape[1:])
    attrs = {"description": f"Recursion's deep-learning embedding of each {table.level}, from {Path(table.location).name}; "
                            "NaN where the table has no row"}
    ds = xr.Dataset({"embeddings": (dims, values, attrs)},
                    coords={"feature": ("feature", np.array(table.features, dtype=object), {"description": "Feature column"})})
    ds.to_zarr(store, group=group, mode="a", zarr_format=3, consolidated=False,
               encoding={"embeddings": {"chunks": chunks, "compressors": [ZstdCodec(level=3)]}})
