"""Dataset schemas: the declarative description of one dataset, loaded from `schemas/NAME.toml`."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from converters.errors import SchemaError

ColumnType = Literal["str", "int", "float"]
ColumnLevel = Literal["plate", "well", "site"]
KEYS = ("experiment", "plate", "well", "site")
REQUIRED_KEYS = ("plate", "well")
# The named groups each source layout needs from a file's path; the phenix layout reads the
# experiment and plate from elsewhere (the folder path, Index.idx.xml, or the command line), the
# tars layout from the tar's path (`tar_pattern`), its images' names being the tar's member names.
PATTERN_GROUPS = {
    "files": {"experiment", "plate", "well", "site", "channel"},
    "phenix": {"row", "column", "site", "channel"},
    "tars": {"well", "site", "channel"},
}
TAR_GROUPS = {"experiment", "plate"}


def schema_dir() -> Path:
    """The folder of schema files: packaged inside `converters/` when installed, beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise SchemaError(f"no schemas folder found next to {here}; reinstall platezarr")


@dataclass(frozen=True)
class Channel:
    """One imaging channel: its file id (`w1`), what it shows, and how it is drawn: a display colour
    (`RRGGBB`; RxRx's are rxrx1-utils' RGB_MAP), the fixed display range a dataset's tools use, if any,
    and whether it is shown by default (brightfield planes are not)."""

    id: str
    name: str
    stain: str = ""
    target: str = ""
    color: str = "FFFFFF"
    fixed_range: tuple[int, int] | None = None
    visible: bool = True

    def attrs(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "stain": self.stain, "target": self.target}


@dataclass(frozen=True)
class Column:
    """One metadata column: its type, whether it varies per plate, well or site, and its meaning."""

    name: str
    type: ColumnType
    level: ColumnLevel
    description: str = ""


@dataclass(frozen=True)
class Controls:
    """The negative-control wells pooled statistics are computed over: wells whose per-well `column` holds one of
    `values` (RxRx1: well_type == "negative_control"); a dataset that marks none says why in `none`."""

    column: str = ""
    values: tuple[str, ...] = ()
    none: str = "the schema declares no negative controls"

    def attrs(self) -> dict[str, Any]:
        return {"column": self.column, "values": list(self.values)} if self.column else {"none": self.none}


@dataclass(frozen=True)
class DatasetSchema:
    """Everything the converter needs to know about one dataset's files and metadata."""

    name: str
    title: str
    layout: str
    path_pattern: re.Pattern[str]
    plate_group: str
    channel_id: str
    image_shape: tuple[int, int]
    dtype: np.dtype
    sites: tuple[int, ...]
    channels: tuple[Channel, ...]
    columns: tuple[Column, ...]
    keys: dict[str, str]
    metadata_formats: tuple[str, ...]
    pixel_size_um: float | None = None
    url: str = ""
    format_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    na_values: tuple[str, ...] = ("",)
    tar_pattern: re.Pattern[str] | None = None  # tars layout: the path of each plate's tar in the source
    controls: Controls = Controls()
    plate_shape: tuple[int, int] | None = None  # (rows, columns) of the plate format, e.g. (16, 24) for 384 wells

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.channels)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise SchemaError(f"{self.name}: no column {name!r}; columns: {', '.join(c.name for c in self.columns)}")

    def keys_for(self, table_format: str) -> dict[str, str]:
        """The key map of one metadata format: a table without `site` is per well, one without `experiment`
        takes the experiment of its plate's images."""
        return self.format_keys.get(table_format, self.keys)

    def key_dtype(self, key: str) -> str:
        """The pandas dtype of a key column (`plate` is an int for RxRx, a barcode string for JUMP)."""
        try:
            kind = self.column(self.keys[key]).type
        except (KeyError, SchemaError):
            kind = "str"
        return {"str": "str", "int": "int64", "float": "float64"}[kind]

    def plate_name(self, plate: int | str) -> str:
        """The group name of a plate, e.g. 1 → `Plate1` for the RxRx layouts."""
        return self.plate_group.format(plate=plate)


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise SchemaError(f"{where}: missing required key {key!r}")
    return raw[key]


def parse_pattern(value: str, layout: str, where: str, key: str = "path_pattern") -> re.Pattern[str]:
    """Compile a path pattern and check it names every group its layout reads keys from."""
    if layout not in PATTERN_GROUPS:
        raise SchemaError(f"{where}: layout must be one of {sorted(PATTERN_GROUPS)}, found {layout!r}")
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise SchemaError(f"{where}: {key} is not a valid regular expression: {exc}") from exc
    missing = (TAR_GROUPS if key == "tar_pattern" else PATTERN_GROUPS[layout]) - set(pattern.groupindex)
    if missing:
        raise SchemaError(f"{where}: {key} lacks the named groups {sorted(missing)}")
    return pattern


def parse_dtype(value: str, where: str) -> np.dtype:
    if value not in ("uint8", "uint16"):
        raise SchemaError(f"{where}: dtype must be uint8 or uint16, found {value!r}")
    return np.dtype(value)


def parse_columns(raw: list[dict[str, Any]], where: str) -> tuple[Column, ...]:
    columns = []
    for i, entry in enumerate(raw):
        at = f"{where}: columns[{i}]"
        kind, level = _require(entry, "type", at), _require(entry, "level", at)
        if kind not in ("str", "int", "float"):
            raise SchemaError(f"{at}: type must be str, int or float, found {kind!r}")
        if level not in ("plate", "well", "site"):
            raise SchemaError(f"{at}: level must be plate, well or site, found {level!r}")
        columns.append(Column(_require(entry, "name", at), kind, level, entry.get("description", "")))
    return tuple(columns)


def parse_keys(raw: dict[str, Any], where: str) -> dict[str, str]:
    """A key map (store key → table column): it must name plate and well; experiment and site may be absent."""
    keys = dict(raw)
    unknown = set(keys) - set(KEYS)
    missing = set(REQUIRED_KEYS) - set(keys)
    if unknown or missing:
        raise SchemaError(
            f"{where}: a key map names store keys {list(KEYS)} (plate and well required), "
            f"found {sorted(keys)}"
        )
    return keys


def parse_schema(raw: dict[str, Any], where: str) -> DatasetSchema:
    """Build a DatasetSchema from the parsed TOML, checking every value."""
    channels = tuple(
        Channel(_require(c, "id", where), _require(c, "name", where), c.get("stain", ""), c.get("target", ""),
                parse_color(c.get("color", "FFFFFF"), where), parse_range(c.get("fixed_range"), where),
                bool(c.get("visible", True)))
        for c in _require(raw, "channels", where)
    )
    keys = parse_keys(_require(raw, "keys", where), f"{where}: [keys]")
    format_keys = {
        name: parse_keys(mapping, f"{where}: [format_keys.{name}]")
        for name, mapping in raw.get("format_keys", {}).items()
    }
    layout = _require(raw, "layout", where)
    columns = parse_columns(raw.get("columns", []), where)
    shape = tuple(_require(raw, "image_shape", where))
    if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise SchemaError(f"{where}: image_shape must be two positive integers, found {shape!r}")
    return DatasetSchema(
        name=_require(raw, "name", where),
        title=raw.get("title", raw["name"]),
        layout=layout,
        path_pattern=parse_pattern(_require(raw, "path_pattern", where), layout, where),
        plate_group=raw.get("plate_group", "{plate}"),
        channel_id=raw.get("channel_id", "{channel}"),
        image_shape=(shape[0], shape[1]),
        dtype=parse_dtype(_require(raw, "dtype", where), where),
        sites=tuple(_require(raw, "sites", where)),
        channels=channels,
        columns=columns,
        keys=keys,
        metadata_formats=tuple(raw.get("metadata_formats", ["csv"])),
        pixel_size_um=raw.get("pixel_size_um"),
        url=raw.get("url", ""),
        format_keys=format_keys,
        na_values=tuple(raw.get("na_values", [""])),
        tar_pattern=parse_pattern(_require(raw, "tar_pattern", where), layout, where, "tar_pattern")
        if layout == "tars" else None,
        controls=parse_controls(raw.get("controls"), {c.name: c for c in columns}, where),
        plate_shape=parse_plate_shape(raw.get("plate_format"), where),
    )


def parse_controls(value: object, columns: dict[str, Column], where: str) -> Controls:
    """`[controls]`: `column` (a per-well column) and `value` (one or a list), or `none` = why there are none."""
    if value is None:
        return Controls()
    if not isinstance(value, dict) or not (set(value) == {"none"} or set(value) == {"column", "value"}):
        raise SchemaError(f"{where}: [controls] takes `column` and `value`, or `none` (why the dataset has none)")
    if "none" in value:
        return Controls(none=str(value["none"]))
    column, values = value["column"], value["value"]
    values = values if isinstance(values, list) else [values]
    if column not in columns or columns[column].level == "site":
        raise SchemaError(f"{where}: [controls] column {column!r} is not a per-well or per-plate column of the schema")
    return Controls(column=column, values=tuple(map(str, values)))


def parse_plate_shape(value: object, where: str) -> tuple[int, int] | None:
    """(rows, columns) from `[plate_format]`, or None if the schema gives none."""
    if value is None:
        return None
    rows, columns = (value.get(k) if isinstance(value, dict) else None for k in ("rows", "columns"))
    if not (isinstance(rows, int) and isinstance(columns, int) and rows > 0 and columns > 0):
        raise SchemaError(f"{where}: [plate_format] needs positive integer `rows` and `columns`")
    return rows, columns


def parse_color(value: object, where: str) -> str:
    """A display colour as six hex digits, `RRGGBB`, upper case."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{6}", value):
        raise SchemaError(f"{where}: channel color {value!r} is not six hex digits like \"1300F9\"")
    return value.upper()


def parse_range(value: object, where: str) -> tuple[int, int] | None:
    """A fixed display range `[low, high]` of pixel values, low < high, or None."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value) and value[0] < value[1]):
        raise SchemaError(f"{where}: channel fixed_range {value!r} is not [low, high] with low < high")
    return value[0], value[1]


def load_schema(name: str) -> DatasetSchema:
    """Load the schema of dataset `name` (e.g. `rxrx1`) from the schemas folder."""
    path = schema_dir() / f"{name}.toml"
    return parse_schema(_load_raw(name), str(path))


def _load_raw(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The TOML of schema `name`, with `extends = "base"` resolved: its keys override the base's."""
    path = schema_dir() / f"{name}.toml"
    if not path.is_file():
        raise SchemaError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    if name in seen:
        raise SchemaError(f"{path}: 'extends' loops through {' → '.join(seen + (name,))}")
    with path.open("rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"{path}: not valid TOML: {exc}") from exc
    base = raw.pop("extends", None)
    return _load_raw(base, seen + (name,)) | raw if base else raw


def dataset_names() -> list[str]:
    """Names of every dataset with a schema file."""
    return sorted(p.stem for p in schema_dir().glob("*.toml"))
