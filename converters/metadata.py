"""Metadata tables: read the dataset's table (or one of its variants) into one typed row per site."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from converters.errors import MetadataError
from converters.schema import KEYS, Column, ColumnType, DatasetSchema
from converters.wells import normalize_well

ORIGIN = "_origin"
COMPETITION_FILES = ("train.csv", "test.csv", "train_controls.csv", "test_controls.csv")
CSV_FORMATS = ("csv", "plate_map", "load_data")  # formats that are one CSV file
INTEGER = r"[+-]?(?:0|[1-9]\d{0,17})"  # no leading zeros ("0101" is an id), no more digits than int64 holds
NUMBER = r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


@dataclass
class MetadataTable:
    """One row per site, keyed by experiment, plate, well, site; `_origin` says file:line of each row.

    `columns` types every other column; `keys` are the keys the table gave: without `experiment`, the
    experiment is blank until the plan takes it from the images of the row's plate.
    """

    table: pd.DataFrame
    location: str
    format: str
    columns: list[Column]
    keys: tuple[str, ...] = KEYS


def read_csv(path: Path, na_values: tuple[str, ...] = ("",)) -> pd.DataFrame:
    """A CSV as strings, blanks (and `na_values`) as missing, with the file:line of every row; errors name the file."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=list(na_values), encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
            "re-save the table as UTF-8"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MetadataError(f"{path}: not a readable CSV table: {exc}") from None
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    frame[ORIGIN] = [f"{path}:{line}" for line in range(2, len(frame) + 2)]
    return frame


def read_metadata(location: str | os.PathLike[str], schema: DatasetSchema) -> MetadataTable:
    """Read a metadata table (a CSV, or a folder in one of the schema's other formats) and type it."""
    path = Path(os.fspath(location).removeprefix("file://")).expanduser()
    if path.is_dir():
        if "rxrx1_competition" in schema.metadata_formats and any((path / f).is_file() for f in COMPETITION_FILES):
            frame, fmt = read_rxrx1_competition(path, schema), "rxrx1_competition"
        else:
            raise MetadataError(
                f"{path}: a folder, but no metadata format of {schema.name} found in it "
                f"(expected a CSV file, or for RxRx1 the competition tables {', '.join(COMPETITION_FILES)})"
            )
    elif path.is_file():
        frame = read_csv(path, schema.na_values)
        fmt = table_format(frame, schema, path)
    else:
        raise MetadataError(f"{path}: metadata table not found")
    keys = schema.keys_for(fmt)
    table = type_table(frame, schema, str(path), keys)
    given = tuple(k for k in KEYS if k in keys)
    return MetadataTable(table, str(path), fmt, describe_columns(table, schema, keys), given)


def table_format(frame: pd.DataFrame, schema: DatasetSchema, path: Path) -> str:
    """Which of the schema's CSV formats a table is: a CellProfiler load_data table has FileName_* columns."""
    formats = [f for f in schema.metadata_formats if f in CSV_FORMATS]
    if "load_data" in formats and any(c.startswith("FileName_") for c in frame.columns):
        return "load_data"
    others = [f for f in formats if f != "load_data"]
    if not others:
        raise MetadataError(
            f"{path}: not a CellProfiler load_data table (no FileName_* columns), the table {schema.title} reads"
        )
    return others[0]


def read_rxrx1_competition(folder: Path, schema: DatasetSchema) -> pd.DataFrame:
    """The 2019 competition tables, mapped onto the official schema: `sirna` there is `sirna_id`."""
    parts = []
    for name in COMPETITION_FILES:
        if not (folder / name).is_file():
            continue
        frame = read_csv(folder / name, schema.na_values)
        _require_columns(frame, ["id_code", "experiment", "plate", "well"], str(folder / name))
        frame["dataset"] = name.split("_")[0].removesuffix(".csv")
        if "well_type" not in frame:
            frame["well_type"] = "treatment"
        frame["sirna_id"] = frame["sirna"] if "sirna" in frame else np.nan
        frame["sirna"] = np.nan
        frame["well_id"] = frame["id_code"]
        frame["cell_type"] = frame["experiment"].str.split("-").str[0]
        parts.append(frame.drop(columns=["id_code"]))
    wells = pd.concat(parts, ignore_index=True)
    sites = pd.DataFrame({"site": [str(s) for s in schema.sites]})
    table = wells.merge(sites, how="cross")
    table["site_id"] = table["well_id"] + "_" + table["site"]
    return table


def _require_columns(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(c for c in frame.columns if c != ORIGIN)
        raise MetadataError(f"{where}: missing required column(s) {', '.join(missing)}; found columns: {found}")


def type_table(frame: pd.DataFrame, schema: DatasetSchema, where: str, keys: dict[str, str]) -> pd.DataFrame:
    """Check the key columns, type every column, refuse duplicates, and give a per-well table every site."""
    _require_columns(frame, list(keys.values()), where)
    frame = frame.rename(columns={src: key for key, src in keys.items() if src != key})
    for key in keys:
        blank = frame[key].isna()
        if blank.any():
            raise MetadataError(f"{frame[ORIGIN][blank].iloc[0]}: key column {key!r} is blank; every row needs one")
    known = {column.name: column.type for column in schema.columns}
    for name in frame.columns.drop(ORIGIN):
        kind = known.get(keys[name]) if name in keys else (known.get(name) or _inferred_type(frame[name]))
        if kind in ("int", "float"):
            frame[name] = _to_number(frame[name], frame[ORIGIN], name, kind)
    try:
        frame["well"] = [normalize_well(w) for w in frame["well"]]
    except ValueError as exc:
        raise MetadataError(f"{where}: column 'well': {exc}") from None
    _check_unique(frame, [k for k in KEYS if k in keys])
    if "site" not in keys:
        frame = frame.merge(pd.DataFrame({"site": np.array(schema.sites, dtype="int64")}), how="cross")
    if "experiment" not in keys:
        frame["experiment"] = None
    _check_int_keys(frame)
    return frame


def describe_columns(frame: pd.DataFrame, schema: DatasetSchema, keys: dict[str, str]) -> list[Column]:
    """Every non-key column of a typed table: the schema's columns, then any other, typed by its values."""
    skip = {*KEYS, *keys.values(), ORIGIN}
    known = {c.name for c in schema.columns}
    level = "site" if "site" in keys else "well"
    columns = [c for c in schema.columns if c.name in frame.columns and c.name not in skip]
    kinds = {"i": "int", "f": "float"}
    columns += [
        Column(name, kinds.get(frame[name].dtype.kind, "str"), level)
        for name in frame.columns
        if name not in known and name not in skip
    ]
    return columns


def _inferred_type(values: pd.Series) -> ColumnType:
    """int or float when every value is plainly a number, else str (ids with leading zeros stay str)."""
    present = values.dropna().astype(str)
    if present.empty:
        return "str"
    if present.str.fullmatch(INTEGER).all():
        return "int"
    return "float" if present.str.fullmatch(NUMBER).all() else "str"


def _to_number(values: pd.Series, origin: pd.Series, name: str, kind: str) -> pd.Series:
    """Numbers from strings; a value that is not a number is an error naming its row, blank is missing."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if kind == "int":
        bad |= numbers.notna() & (numbers != np.round(numbers))
    if bad.any():
        raise MetadataError(
            f"{origin[bad].iloc[0]}: column {name!r} must be {'an integer' if kind == 'int' else 'a number'}, "
            f"found {values[bad].iloc[0]!r} ({int(bad.sum())} such rows)"
        )
    if kind == "int" and not numbers.isna().any():
        return numbers.astype("int64")
    return numbers.astype("float64")


def _check_int_keys(frame: pd.DataFrame) -> None:
    if frame["site"].dtype != np.int64:
        frame["site"] = _to_number(frame["site"], frame[ORIGIN], "site", "int")


def _check_unique(frame: pd.DataFrame, keys: list[str]) -> None:
    """Each site_id, and each site (or well, for a per-well table), appears once."""
    if "site_id" in frame:
        dup_id = frame["site_id"].notna() & frame.duplicated("site_id", keep=False)
        if dup_id.any():
            rows = frame[dup_id].sort_values("site_id")
            raise MetadataError(
                f"{rows[ORIGIN].iloc[0]} and {rows[ORIGIN].iloc[1]}: duplicate site_id {rows['site_id'].iloc[0]!r}; "
                "each site must appear once"
            )
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        rows = frame[dup].sort_values(keys)
        first = rows.iloc[0]
        what = "site" if "site" in keys else "well"
        raise MetadataError(
            f"{rows[ORIGIN].iloc[0]} and {rows[ORIGIN].iloc[1]}: two rows for the same {what} "
            f"({', '.join(f'{k} {first[k]}' for k in keys)}); each {what} must appear once"
        )
