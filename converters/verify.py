"""`platezarr verify`: re-read every source image and compare it with the store, pixel by pixel.

Stored wells are read whole through the store's one site reader (every checksum checked), source
images through the same paths the conversion took (files, or a streamed plate tar); each problem is
reported with the file or well at fault.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from converters.convert import ProgressCallback, Progress, build_plan, _noop
from converters.decode import decode_image
from converters.errors import OptionError, SourceError, StoreError
from converters.execute import run_tasks
from converters.layouts.tars import MemberNames, find_tars
from converters.options import Options
from converters.plan import TarTask, WellTask
from converters.formats.ome import OmeFormat
from converters.output import Output
from converters.readers import checked_root, plate_groups, read_array, read_index
from converters.schema import DatasetSchema, load_schema
from converters.sitereader import SiteReader
from converters.source import Listing, Source, open_source
from converters.tarstream import stream_wells
from converters.write import Image, WellImages, file_images


@dataclass(frozen=True)
class VerifyJob:
    """What every well check shares: the source, and the reader of the store's wells."""

    source: Source
    reader: SiteReader


@dataclass
class VerifyReport:
    """Images compared, wells read, and every mismatch as (file or well, reason)."""

    images: int = 0
    wells: int = 0
    mismatches: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def add(self, other: VerifyReport) -> None:
        self.images += other.images
        self.wells += other.wells
        self.mismatches.extend(other.mismatches)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "images_compared": self.images, "wells_read": self.wells,
                "mismatches": [{"where": w, "problem": p} for w, p in self.mismatches]}


@dataclass(frozen=True)
class StoredWell:
    """One well of the store: its plate group, position, name, and which images it holds (site, channel)."""

    group: str
    index: int
    well: str
    present: np.ndarray


def compare_well(job: VerifyJob, stored: StoredWell, images: Iterable[Image],
                 gone: Callable[[int, int], tuple[str, str]] | None) -> VerifyReport:
    """Compare a stored well with its source images; unless `gone` is None, also flag each stored image no source
    gave, as `gone(site index, channel index)` names it: (where, problem)."""
    report = VerifyReport(wells=1)
    try:
        block = job.reader.read_well(stored.group, stored.index, stored.well)
    except StoreError as error:
        report.mismatches.append((f"{stored.group}/{stored.well}", f"cannot read the stored well: {error}"))
        return report
    arrived = set()
    for site, channel, where, data in images:
        try:
            if isinstance(data, SourceError):
                raise data
            pixels = decode_image(data, where, block.shape[2:], block.dtype)
        except SourceError as error:
            report.mismatches.append((where, str(error)))
            continue
        report.images += 1
        arrived.add((site, channel))
        if not stored.present[site, channel]:
            report.mismatches.append((where, "the image exists but the store marks it missing (present=False)"))
        elif not np.array_equal(block[site, channel], pixels):
            changed = int(np.count_nonzero(block[site, channel] != pixels))
            report.mismatches.append((where, f"{changed} pixels differ from the store"))
    if gone is not None:
        report.mismatches += [gone(int(s), int(c)) for s, c in zip(*np.nonzero(stored.present)) if (s, c) not in arrived]
    return report


@dataclass(frozen=True)
class WellCheck:
    """One stored well and the source files expected in it: (site index, channel index, path)."""

    stored: StoredWell
    files: tuple[tuple[int, int, str], ...]
    whole: bool  # also flag stored images whose source file is gone


def check_well(job: VerifyJob, check: WellCheck) -> VerifyReport:
    """Read one well's shard and compare it with its source files."""
    s = check.stored
    task = WellTask(s.group, s.index, s.well, check.files)
    def gone(site: int, channel: int) -> tuple[str, str]:
        return f"{s.group}/{s.well} site index {site} channel index {channel}", "stored, but its source file is gone"

    return compare_well(job, s, file_images(job.source, task), gone if check.whole else None)


@dataclass(frozen=True)
class TarCheck:
    """One plate's tar and the store's wells of that plate."""

    tar: str
    names: MemberNames
    stored: tuple[StoredWell, ...]


def check_tar(job: VerifyJob, check: TarCheck) -> VerifyReport:
    """Stream the plate's tar once, as the conversion did, comparing each well with the store."""
    by_well = {s.well: s for s in check.stored}
    group = check.stored[0].group
    grid = [(s, c) for s in range(len(check.names.sites)) for c in range(len(check.names.channels))]
    wells = tuple(WellTask(group, s.index, s.well, tuple((i, j, "") for i, j in grid)) for s in check.stored)
    task = TarTask(group, check.tar, wells, check.names, frozenset(by_well))
    tar = job.source.path(check.tar)

    def compare(well: WellImages, settled: bool) -> VerifyReport:
        def gone(site: int, channel: int) -> tuple[str, str]:
            return f"{group}/{check.names.label(well.task.well, site, channel)}", f"stored, but not in {tar}"

        return compare_well(job, by_well[well.task.well], well.images, gone)

    results, _ = stream_wells(job.source, task, compare, lambda report: None)
    total = VerifyReport()
    for report in results:
        total.add(report)
    return total


def tar_checks(plates: dict[str, list[StoredWell]], source: Source,
               schema: DatasetSchema) -> tuple[list[TarCheck], list[tuple[str, str]]]:
    """A check per plate tar of the source (found by name, no metadata needed), and tars the store lacks."""
    tars, _ = find_tars(Listing.of(source.walk()), schema)
    checks, problems = [], []
    for experiment, plate, rel in tars[["experiment", "plate", "path"]].itertuples(index=False):
        wells = plates.pop(f"{experiment}/{schema.plate_name(plate)}", None)
        if wells is None:
            problems.append((source.path(rel), "a plate tar the store does not have"))
        elif wells:
            checks.append(TarCheck(rel, MemberNames.of(schema), tuple(wells)))
    return checks, problems


def plan_checks(plates: dict[str, list[StoredWell]], tasks: list[WellTask], sample: int | None,
                seed: int | None) -> tuple[list[WellCheck], list[tuple[str, str]]]:
    """Checks of every stored well (or of `sample` random images), mapped onto the store's own well order."""
    stored = {(s.group, s.well): s for wells in plates.values() for s in wells}
    known = [t for t in tasks if (t.group, t.well) in stored]
    problems = [(f"{t.group}/{t.well}", "source images for a well the store does not have")
                for t in tasks if (t.group, t.well) not in stored]
    if sample is not None:
        images = [(t, f) for t in known for f in t.files]
        picked = random.Random(seed).sample(images, min(sample, len(images)))
        return [WellCheck(stored[(t.group, t.well)], (f,), False) for t, f in picked], problems
    files = {(t.group, t.well): t.files for t in known}
    return [WellCheck(s, files.get(key, ()), True) for key, s in stored.items()], problems


def stored_wells(root: zarr.Group) -> dict[str, list[StoredWell]]:
    """Every plate group's wells as the store holds them, with their present masks."""
    plates = {}
    for group in plate_groups(root):
        names = read_array(root, f"{group}/well").tolist()
        present = read_array(root, f"{group}/present")
        plates[group] = [StoredWell(group, i, str(w), present[i]) for i, w in enumerate(names)]
    return plates


def ome_stored_wells(out: str | os.PathLike[str], output: Output,
                     storage_options: dict[str, Any] | None) -> dict[str, list[StoredWell]]:
    """Every plate group of an OME-Zarr output (as its index lists them) with its wells and their present masks."""
    groups = sorted(set(read_index(output.store)["group"].values.tolist()))
    fmt = SiteReader(out, groups[0], storage_options).format if groups else None
    if not isinstance(fmt, OmeFormat):
        raise StoreError(f"{out}: the root says OME-Zarr but its plates are not (or it has none)")
    return {g: [StoredWell(g, i, well, mask) for i, (well, mask) in enumerate(fmt.stored_wells(output, g))]
            for g in groups}


def verify(src: str | os.PathLike[str], out: str | os.PathLike[str], sample: int | None = None,
           workers: int | None = None, seed: int | None = None, progress: ProgressCallback = _noop,
           storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Compare every source image (or `sample` random ones) with the store; the report lists each mismatch."""
    output, attrs = checked_root(out, storage_options)
    schema = dataclasses.replace(load_schema(attrs["dataset"]), image_shape=tuple(attrs["image_shape"]))
    if attrs.get("format", "native") == "native":
        plates = stored_wells(zarr.open_group(output.store, mode="r", zarr_format=3, use_consolidated=True))
    else:
        plates = ome_stored_wells(out, output, storage_options)
    first = next((g for g, wells in plates.items() if wells), None)
    if first is None:
        raise StoreError(f"{out}: the store holds no wells, so there is nothing to verify")
    job_source: Source
    checks: list[Any]
    if schema.tar_pattern is not None:
        if sample is not None:
            raise OptionError(f"{src}: images in tars are read by streaming whole tars; verify without --sample")
        job_source = open_source(src, storage_options)
        checks, problems = tar_checks(plates, job_source, schema)
        check: Any = check_tar
        unit = "tars"
    else:
        options = Options(dataset=schema, storage_options=storage_options, **attrs["source"].get("options", {}))
        plan, job_source = build_plan(src, options, progress=progress)
        checks, problems = plan_checks(plates, [t for p in plan.plates for t in p.tasks], sample, seed)
        check, unit = check_well, "wells" if sample is None else "images"
    total = VerifyReport(mismatches=problems)
    job = VerifyJob(job_source, SiteReader(out, first, storage_options))
    for n, report in enumerate(run_tasks(check, job, checks, workers or os.cpu_count() or 1), 1):
        total.add(report)
        progress(Progress("verify", n, len(checks), unit))
    if total.images == 0:
        raise SourceError(f"{src}: not one source image of the store's {sum(map(len, plates.values()))} wells was "
                          f"found (looked for {schema.title} images as the store was converted, from "
                          f"{attrs['source']['url']}); pass the folder the store was converted from")
    return total
