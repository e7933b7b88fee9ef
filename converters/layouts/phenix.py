"""The Opera Phenix layout (JUMP Cell Painting): `r04c14f05p01-ch3sk1fk1fl1.tiff` files, one folder per
measurement (plate), whose barcode, channels and pixel size are in the `Index.idx.xml` beside them.

The experiment (batch) is not in the files: it is the batch folder of a Cell Painting Gallery path
`BATCH/images/PLATE__…-Measurement1/Images/` (with or without an outer `images/` folder, SRC the batch
or any folder above it), else the `--experiment` option. The plate is the barcode in `Index.idx.xml`,
else the measurement folder's name before `__`, else the `--plate` option.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from converters.errors import SourceError
from converters.layouts.files import EXAMPLES, IMAGE_COLUMNS, Scan, SourceIndex, check_unique, path_numbers
from converters.layouts.phenix_index import INDEX_FILE, Measurement, read_index
from converters.schema import DatasetSchema
from converters.source import Source
from converters.wells import well_name

log = logging.getLogger("platezarr")

GALLERY_FOLDER = re.compile(r"/(?P<experiment>[^/]+)/images/(?P<measurement>[^/]+)/Images$")
MEASUREMENT = re.compile(r"(?P<plate>[^/]+?)__[^/]*-Measurement\d+")  # BR00116991__2020-11-05T19_51_35-Measurement1
GALLERY_EXAMPLE = "2020_11_04_CPJUMP1/images/BR00116991__2020-11-05T19_51_35-Measurement1/Images/"


def scan_phenix(scan: Scan) -> SourceIndex:
    """Keep the files whose name matches the schema's pattern; name each folder's plate and experiment.

    The metadata table is not needed here: the file names list every image.
    """
    source, schema, experiment, plate = scan.source, scan.schema, scan.experiment, scan.plate
    folders: dict[str, list[tuple[str, dict[str, str], int]]] = {}
    indexes: dict[str, str] = {}
    ignored: list[str] = []
    ignored_count = 0
    for rel, size in scan.listing:
        folder, _, name = rel.rpartition("/")
        m = schema.path_pattern.match(rel)
        if name == INDEX_FILE:
            indexes[folder] = rel
        elif m is not None:
            folders.setdefault(folder, []).append((rel, m.groupdict(), size))
        else:
            ignored_count += 1
            if len(ignored) < EXAMPLES:
                ignored.append(rel)
    rows = []
    measurements: list[tuple[str, str, Measurement]] = []
    for folder in sorted(folders):
        index = indexes.get(folder)
        measurement = read_index(source.read(index), source.path(index)) if index else None
        names = _place(source, folder, measurement, experiment, plate)
        if index is not None and measurement is not None:
            measurements.append((f"{names[0]}/{schema.plate_name(names[1])}", index, measurement))
        rows += [(*names, _well(g, rel, source), g["site"], g["channel"], rel, size) for rel, g, size in folders[folder]]
    if plate is not None and folders and len(measurements) == len(folders):
        log.warning("--plate %s is not used: every measurement's Index.idx.xml gives its plate barcode", plate)
    images = path_numbers(pd.DataFrame(rows, columns=IMAGE_COLUMNS).astype({"bytes": "int64"}), ["site"], source.path)
    images["channel"] = [schema.channel_id.format(channel=c) for c in images["channel"]]
    check_unique(images, source.path)
    attrs = measurement_attrs(measurements, schema, source)
    options = {k: v for k, v in (("experiment", experiment), ("plate", plate)) if v is not None}
    attrs |= {"options": options} if options else {}
    return SourceIndex(images.sort_values("path", ignore_index=True), sorted(ignored), ignored_count, attrs)


def _well(groups: dict[str, str], rel: str, source: Source) -> str:
    try:
        return well_name(int(groups["row"]), int(groups["column"]))
    except ValueError as exc:
        raise SourceError(f"{source.path(rel)}: {exc}") from exc


def _place(
    source: Source, folder: str, measurement: Measurement | None, experiment: str | None, plate: str | None
) -> tuple[str, str]:
    """The (experiment, plate) of one folder of images, or an error saying which option to pass."""
    where = source.path(folder).rstrip("/")
    gallery = GALLERY_FOLDER.search(where)
    named = MEASUREMENT.fullmatch(gallery["measurement"]) if gallery else None
    found_experiment = experiment or (gallery["experiment"] if gallery else None)
    found_plate = measurement.barcode if measurement is not None else (named["plate"] if named else plate)
    missing = []
    if not found_experiment:
        missing.append(
            "--experiment NAME (the batch, e.g. 2020_11_04_CPJUMP1: the folder is not in a Cell Painting "
            f"Gallery path {GALLERY_EXAMPLE})"
        )
    if not found_plate:
        missing.append(f"--plate NAME (the barcode, e.g. BR00117010: there is no {INDEX_FILE} beside the images, "
                       "and their folder is not named PLATE__…-MeasurementN)")
    if missing:
        raise SourceError(f"{where}: cannot tell where these Phenix images go in the store; pass {' and '.join(missing)}")
    return str(found_experiment), str(found_plate)


def measurement_attrs(
    measurements: list[tuple[str, str, Measurement]], schema: DatasetSchema, source: Source
) -> dict:
    """What the Index.idx.xml files say, for the store's attributes; channels and pixel size must agree."""
    if not measurements:
        return {}
    channels: dict[str, dict] = {}
    seen_in: dict[str, str] = {}
    for _, rel, measurement in measurements:
        for number, info in sorted(measurement.channels.items()):
            channel = schema.channel_id.format(channel=number)
            name, before = info.get("microscope_name"), channels.get(channel, info).get("microscope_name")
            if name != before:
                raise SourceError(
                    f"{source.path(rel)}: channel {channel} is {name!r} here but {before!r} in "
                    f"{source.path(seen_in[channel])}; a store holds one channel layout: convert these "
                    "measurements into separate stores"
                )
            channels.setdefault(channel, info)
            seen_in.setdefault(channel, rel)
    sizes = {m.pixel_size_um for _, _, m in measurements if m.pixel_size_um is not None}
    if len(sizes) > 1:
        raise SourceError(
            f"the measurements' {INDEX_FILE} files give different pixel sizes "
            f"({', '.join(map(str, sorted(sizes)))} µm); a store holds one pixel size: convert them into separate stores"
        )
    attrs = {
        "channels": {c: channels[c] for c in schema.channel_ids if c in channels},
        "measurements": [{"group": group, "index": rel, **m.describe()} for group, rel, m in measurements],
    }
    return attrs | ({"pixel_size_um": sizes.pop()} if sizes else {})
