"""Metadata tables: read the dataset's table (or one of its variants) into one typed row per site."""

from __future__ import annotations

import codecs
import csv
import logging
import os
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from converters.errors import MetadataError
from converters.schema import KEYS, Column, ColumnLevel, ColumnType, DatasetSchema
from converters.sitekeys import repeated
from converters.wells import normalize_well

ORIGIN = "_origin"
COMPETITION_FILES = ("train.csv", "test.csv", "train_controls.csv", "test_controls.csv")
CSV_FORMATS = ("csv", "plate_map", "load_data")  # formats that are one CSV file
INTEGER = r"[+-]?(?:0|[1-9][0-9]*)"  # no leading zeros: "0101" is an id
NUMBER = r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
PLAIN_INT64 = r"[+-]?[0-9]{1,18}"  # always within int64, so parsed exactly by pandas
WRITTEN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # what a typed column accepts
INFINITY = r"\s*[+-]?inf(?:inity)?\s*"
INT64 = (-(2**63), 2**63 - 1)
FLOAT_EXACT = (-(2**53), 2**53)  # the integers float64 (an int column with blanks) holds exactly
CHUNK_ROWS = 16_384  # rows made into Arrow columns at a time, so a big table never sits in Python lists whole
UTF8_BLOCK = 8 << 20  # bytes of a table checked for UTF-8 at a time

log = logging.getLogger("platezarr")


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
    """A CSV as strings, blanks (and `na_values`) as missing, with the file:line each row starts on (a quoted
    field may span lines); malformed headers and rows are errors naming the file and line."""
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            records = _records(f if _is_utf8(path) else _utf8_lines(f, path), path)
            line, names, keep = _header(next(records, None), path)
            frame = _rows(records, names, keep, path, na_values)
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if keep < len(names):
        log.warning("%s:%d: the header ends with %d column(s) without a name (a trailing comma?) and no row has a "
                    "value there; ignoring them", path, line, len(names) - keep)
    return frame


def _is_utf8(path: Path) -> bool:
    """Whether the whole file is UTF-8, checked a block at a time: then no line needs checking (`_utf8_lines`)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as f:
        try:
            for block in iter(lambda: f.read(UTF8_BLOCK), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _utf8_lines(lines: Iterable[str], path: Path) -> Iterator[str]:
    """The lines of a file read with `surrogateescape`, refusing the first that holds a byte that is not UTF-8."""
    for number, line in enumerate(lines, 1):
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as exc:
                byte = bytes([ord(line[exc.start]) - 0xDC00])
                raise MetadataError(
                    f"{path}: not UTF-8 text (line {number} holds byte {byte!r}); re-save the table as UTF-8"
                ) from exc
        yield line


def _records(lines: Iterable[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank row of a CSV with the physical line it starts on; a malformed row is an error naming it."""
    reader = csv.reader(lines, strict=True)
    start = 1
    try:
        for row in reader:
            if len(row) > 1 or (row and row[0].strip()):
                yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise MetadataError(f"{path}:{start}: not a readable CSV row ({exc}); check the quotes of this row") from exc


def _header(header: tuple[int, list[str]] | None, path: Path) -> tuple[int, list[str], int]:
    """The header's line, its names and how many to keep: nameless columns at its end are left out (`_rows` checks
    they are empty); a nameless column elsewhere, a name given twice, or the reserved `_origin` is refused."""
    if header is None:
        raise MetadataError(f"{path}: empty file; a metadata table starts with a header row of column names")
    line, names = header
    keep = len(names)
    while keep and not names[keep - 1].strip():
        keep -= 1
    first: dict[str, int] = {}
    for number, name in enumerate(names[:keep], 1):
        if not name.strip():
            raise MetadataError(f"{path}:{line}: header column {number} has no name; name it or delete the column")
        if name in first:
            raise MetadataError(f"{path}:{line}: column {name!r} appears twice in the header (columns "
                                f"{first[name]} and {number}); rename or delete one of them")
        first[name] = number
    if ORIGIN in first:
        raise MetadataError(f"{path}:{line}: column name {ORIGIN!r} is reserved for platezarr; rename the column")
    return line, names, keep


def _rows(records: Iterator[tuple[int, list[str]]], names: list[str], keep: int, path: Path,
          na_values: tuple[str, ...]) -> pd.DataFrame:
    """The data rows as str columns of the first `keep` names, plus `_origin`, made into Arrow columns CHUNK_ROWS
    rows at a time (a table of millions of rows is never in Python lists whole, nor copied once more to join)."""
    columns: list[list[pa.Array]] = [[] for _ in names[:keep]]
    origins: list[pa.Array] = []
    chunk: list[list[str]] = []
    lines = array("q")
    for line, row in records:
        if len(row) != len(names) or keep < len(names):
            _check_fields(row, len(names), keep, f"{path}:{line}")
        chunk.append(row)
        lines.append(line)
        if len(chunk) == CHUNK_ROWS:
            _add_rows(columns, origins, chunk, lines, path, na_values)
            chunk, lines = [], array("q")
    _add_rows(columns, origins, chunk, lines, path, na_values)
    frame = pd.DataFrame({name: pa.chunked_array(parts, pa.large_string()).to_pandas()
                          for name, parts in zip(names, columns)}, columns=names[:keep])
    origin = pa.chunked_array(origins, pa.large_string())
    frame[ORIGIN] = origin.to_pandas() if len(origin) else []
    return frame


def _add_rows(columns: list[list[pa.Array]], origins: list[pa.Array], rows: list[list[str]], lines: array,
              path: Path, na_values: tuple[str, ...]) -> None:
    """Append rows of strings to `columns` (Arrow strings, `na_values` as missing, as pandas.read_csv reads them),
    and their `file:line` to `origins`. In the system's allocator: Arrow's default one keeps a third more memory
    than the table's when it is built of many small columns."""
    pool = pa.system_memory_pool()
    blank = pa.array(na_values, pa.large_string(), memory_pool=pool)
    for i, parts in enumerate(columns):
        column = pa.array([row[i] for row in rows], pa.large_string(), memory_pool=pool)
        missing = pc.is_in(column, value_set=blank, memory_pool=pool)
        parts.append(pc.if_else(missing, pa.scalar(None, pa.large_string()), column, memory_pool=pool))
    numbers = pc.cast(pa.array(np.frombuffer(lines, dtype=np.int64) if lines else np.zeros(0, np.int64)),
                      pa.large_string(), memory_pool=pool)
    origins.append(pc.binary_join_element_wise(pa.scalar(str(path), pa.large_string()), numbers,
                                               pa.scalar(":", pa.large_string()), memory_pool=pool))


def _check_fields(row: list[str], width: int, keep: int, where: str) -> None:
    """A row has one field per header column; under nameless trailing header columns it may have none, or blanks."""
    if not keep <= len(row) <= width:
        advice = ("remove the extra commas at its end, or quote values that hold a comma" if len(row) > width
                  else "add the missing fields (an empty field is a blank value)")
        raise MetadataError(f"{where}: row has {len(row)} fields and the header {width}; {advice}")
    extra = [(number, value) for number, value in enumerate(row[keep:], keep + 1) if value]
    if extra:
        raise MetadataError(f"{where}: value {extra[0][1]!r} in column {extra[0][0]}, which has no name in the header; "
                            "name the column in the header, or delete the value")


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
    _check_renames(frame, keys, where)
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
        frame["well"] = _normalized_wells(frame["well"])
    except ValueError as exc:
        raise MetadataError(f"{where}: column 'well': {exc}") from exc
    _check_unique(frame, [k for k in KEYS if k in keys])
    if "site" not in keys:
        frame = _every_site(frame, np.array(schema.sites, dtype="int64"))
    if "experiment" not in keys:
        frame["experiment"] = None
    _check_int_keys(frame)
    return _as_categories(frame, keys)


def _as_categories(frame: pd.DataFrame, keys: dict[str, str]) -> pd.DataFrame:
    """Text columns that repeat a few values (genes, treatments, cell types) as categoricals: the same values, a
    small int per row instead of a string (at RxRx3's 2.2 million rows, 170 MB less)."""
    for name in frame.columns.drop(ORIGIN):
        if name in keys or not isinstance(frame[name].dtype, pd.StringDtype):
            continue
        sample = frame[name].iloc[:: max(1, len(frame) // CHUNK_ROWS)]  # rows spread over the table
        if sample.nunique() > len(sample) // 2:  # about a value per row (ids): no full pass to find it out
            continue
        codes, values = pd.factorize(frame[name])
        if len(values) <= len(frame) // 2:
            frame[name] = pd.Categorical.from_codes(codes, values)
    return frame


def _normalized_wells(wells: pd.Series) -> pd.Series:
    """Each well in canonical form (`B2` → `B02`), each distinct name normalized once; the first bad one, in table
    order, raises ValueError."""
    codes, names = pd.factorize(wells)
    normal = pd.array([normalize_well(w) for w in names.tolist()], dtype="str")
    return pd.Series(normal.take(codes, allow_fill=True), index=wells.index)


def _every_site(frame: pd.DataFrame, sites: np.ndarray) -> pd.DataFrame:
    """A per-well table as one row per site of each well, in well order then site order (a cross join); with one
    site per well, the table itself (not a copy) with a site column."""
    if len(sites) == 1:
        return frame.assign(site=np.full(len(frame), sites[0]))
    rows = frame.take(np.repeat(np.arange(len(frame)), len(sites))).reset_index(drop=True)
    return rows.assign(site=np.tile(sites, len(frame)))


def _check_renames(frame: pd.DataFrame, keys: dict[str, str], where: str) -> None:
    """Refuse a table with both a key's source column and a column of the key's own name (`Metadata_Plate`, `plate`)."""
    for key, src in keys.items():
        if src != key and key in frame.columns:
            raise MetadataError(f"{where}: columns {src!r} and {key!r} would both be the key column {key!r}; "
                                f"rename or delete {key!r}")


def describe_columns(frame: pd.DataFrame, schema: DatasetSchema, keys: dict[str, str]) -> list[Column]:
    """Every non-key column of a typed table: the schema's columns, then any other, typed by its values."""
    skip = {*KEYS, *keys.values(), ORIGIN}
    known = {c.name for c in schema.columns}
    level = "site" if "site" in keys else "well"
    columns = [c for c in schema.columns if c.name in frame.columns and c.name not in skip]
    kinds = {"i": "int", "f": "float"}
    columns += [
        Column(name, cast(ColumnType, kinds.get(frame[name].dtype.kind, "str")), cast(ColumnLevel, level))
        for name in frame.columns
        if name not in known and name not in skip
    ]
    return columns


def _inferred_type(values: pd.Series) -> ColumnType:
    """int or float when every value is plainly a number, else str: ids with leading zeros, and integers that the
    column's dtype (int64, or float64 when some are blank) cannot hold exactly, stay text."""
    present = values.dropna().astype(str)
    if present.empty:
        return "str"
    if present.str.fullmatch(INTEGER).all():
        return "int" if _held_exactly(present, len(present) < len(values)) else "str"
    return "float" if present.str.fullmatch(NUMBER).all() else "str"


def _held_exactly(integers: pd.Series, blanks: bool) -> bool:
    """Whether integer texts fit int64, or with `blanks` the integers float64 holds exactly."""
    low, high = FLOAT_EXACT if blanks else INT64
    digits = integers.str.lstrip("+-").str.len().max()
    return digits <= 15 or (digits <= 19 and all(low <= int(v) <= high for v in integers))


def _to_number(values: pd.Series, origin: pd.Series, name: str, kind: str) -> pd.Series:
    """Numbers from strings; a value that is not a number, or that its dtype cannot hold, is an error naming its
    row; blank is missing."""
    values = values.astype("str")  # columns the code adds (the competition tables' sirna_id) may be all-NaN floats
    if kind == "int":
        return _to_int(values, origin, name)
    numbers = pd.to_numeric(values, errors="coerce")
    _refuse(numbers.isna() & values.notna(), values, origin, name, "a number")
    overflow = np.isinf(numbers) & ~values.str.fullmatch(INFINITY, case=False, na=False)
    _refuse(overflow, values, origin, name, f"a number within ±{np.finfo(np.float64).max:.4g} (float64)")
    return numbers.astype("float64")


def _to_int(values: pd.Series, origin: pd.Series, name: str) -> pd.Series:
    """Whole numbers exactly as written ("7", also "7.0" or "7e2"): int64, or float64 when some are blank; a value
    that is not a whole number, or that the column's dtype cannot hold exactly, is an error naming its row."""
    present = values.dropna()
    plain = present.str.fullmatch(PLAIN_INT64).to_numpy(dtype=bool)
    ints = pd.concat([pd.to_numeric(present[plain]).astype("int64"), _exact_ints(present[~plain], origin, name)])
    ints = ints.reindex(present.index)
    if len(present) == len(values):
        return ints
    low, high = FLOAT_EXACT
    _refuse((ints < low) | (ints > high), present, origin, name,
            f"an integer from {low} to {high} (the column has blanks, so it is stored as float64)",
            "; fill in the blank values")
    return ints.reindex(values.index).astype("float64")


def _exact_ints(texts: pd.Series, origin: pd.Series, name: str) -> pd.Series:
    """int64 values of integer texts in any number notation, compared as decimals so none is rounded or wrapped."""
    numbers = texts.map(lambda t: Decimal(t) if WRITTEN_NUMBER.fullmatch(t.strip()) else None)
    _refuse(numbers.map(lambda d: d is None or d != d.to_integral_value()), texts, origin, name, "an integer")
    low, high = INT64
    _refuse(numbers.map(lambda d: not low <= d <= high), texts, origin, name,
            f"an integer from {low} to {high} (int64)", "; correct the value in the table")
    return numbers.map(int).astype("int64")


def _refuse(bad: pd.Series, values: pd.Series, origin: pd.Series, name: str, expected: str, advice: str = "") -> None:
    """Raise naming the first row where `bad` holds: its file:line, the column, what was expected and what found."""
    rows = bad.index[bad.to_numpy(dtype=bool)]
    if len(rows):
        raise MetadataError(f"{origin[rows[0]]}: column {name!r} must be {expected}, found {values[rows[0]]!r} "
                            f"({len(rows)} such rows){advice}")


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
    dup = repeated(frame, keys)
    if dup.any():
        rows = frame[dup].sort_values(keys)
        first = rows.iloc[0]
        what = "site" if "site" in keys else "well"
        raise MetadataError(
            f"{rows[ORIGIN].iloc[0]} and {rows[ORIGIN].iloc[1]}: two rows for the same {what} "
            f"({', '.join(f'{k} {first[k]}' for k in keys)}); each {what} must appear once"
        )
