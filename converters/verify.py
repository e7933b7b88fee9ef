"""`platezarr verify`: re-read every source image and compare it with the store, pixel by pixel.

It reads every shard of the store too (sampled runs read only the sampled wells), so corrupted
bytes surface as checksum errors; each problem is reported with the file or well at fault.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field

import numpy as np
import zarr

from converters.convert import ProgressCallback, Progress, build_plan, _noop
from converters.decode import decode_image
from converters.errors import PlatezarrError, SourceError
from converters.execute import run_tasks
from converters.layouts.tars import MemberNames, find_tars
from converters.output import ROOT_ATTR
from converters.plan import WellTask
from converters.readers import open_root
from converters.schema import DatasetSchema, load_schema
from converters.source import Source, open_source
from converters.tarwrite import members, open_tar, read_member


@dataclass(frozen=True)
class VerifyJob:
    """What every well check shares: the source root, the store, and the read-only root group."""

    source: Source
    root: zarr.Group


@dataclass
class VerifyReport:
    """Images compared, wells read, and every mismatch as (file or well, reason)."""

    images: int = 0
    wells: int = 0
    mismatches: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict:
        return {"ok": self.ok, "images_compared": self.images, "wells_read": self.wells,
                "mismatches": [{"where": w, "problem": p} for w, p in self.mismatches]}


@dataclass(frozen=True)
class WellCheck:
    """One stored well and the source images expected in it: (site index, channel index, path)."""

    group: str
    index: int
    well: str
    files: tuple[tuple[int, int, str], ...]
    whole: bool  # also flag stored images whose source file is gone


def check_well(job: VerifyJob, check: WellCheck) -> VerifyReport:
    """Read one well's shard (checksums verified) and compare it with its source images."""
    report = VerifyReport(wells=1)
    source = job.source
    try:
        block = job.root[f"{check.group}/images"][check.index]
        present = job.root[f"{check.group}/present"][check.index]
    except Exception as error:  # zarr raises codec-specific errors for corrupted bytes
        report.mismatches.append((f"{check.group}/{check.well}", f"cannot read the stored well: {error}"))
        return report
    for site, channel, rel in check.files:
        path = source.path(rel)
        try:
            pixels = decode_image(source.read(rel), path, block.shape[2:], block.dtype)
        except SourceError as error:
            report.mismatches.append((path, str(error)))
            continue
        report.images += 1
        if not present[site, channel]:
            report.mismatches.append((path, "the file exists but the store marks it missing (present=False)"))
        elif not np.array_equal(block[site, channel], pixels):
            changed = int(np.count_nonzero(block[site, channel] != pixels))
            report.mismatches.append((path, f"{changed} pixels differ from the store"))
    if check.whole:
        found = {(s, c) for s, c, _ in check.files}
        for s, c in zip(*np.nonzero(present)):
            if (s, c) not in found:
                report.mismatches.append((f"{check.group}/{check.well} site index {s} channel index {c}",
                                          "stored, but its source file is gone"))
    return report


@dataclass(frozen=True)
class TarCheck:
    """One plate's tar and the store's wells of that plate (well → index)."""

    group: str
    tar: str
    names: MemberNames
    stored: dict[str, int]


def check_tar(job: VerifyJob, check: TarCheck) -> VerifyReport:
    """Stream the plate's tar once and compare each image with the store; flag stored images the tar lacks."""
    report = VerifyReport()
    where = job.source.path(check.tar)
    present = job.root[f"{check.group}/present"][...]
    seen: set[tuple[int, int, int]] = set()
    well, block = None, None
    with open_tar(job.source, check.tar) as tar:
        for member in members(tar, where):
            key = check.names.key(member.name) if member.isfile() else None
            if key is None or key[0] not in check.stored:
                continue
            if key[0] != well:  # a tar ordered by well reads each stored well once
                well, block = key[0], _stored_well(job, check, key[0], report)
            if block is None:
                continue
            index, (_, site, channel) = check.stored[well], key
            path = f"{where}:{member.name}"
            try:
                pixels = decode_image(read_member(tar, member, where), path, block.shape[2:], block.dtype)
            except SourceError as error:
                report.mismatches.append((path, str(error)))
                continue
            report.images += 1
            seen.add((index, site, channel))
            if not present[index, site, channel]:
                report.mismatches.append((path, "the image is in the tar but the store marks it missing (present=False)"))
            elif not np.array_equal(block[site, channel], pixels):
                report.mismatches.append((path, f"{int(np.count_nonzero(block[site, channel] != pixels))} pixels differ from the store"))
    wells = {i: w for w, i in check.stored.items()}
    report.mismatches += [(f"{check.group}/{check.names.label(wells[w], s, c)}", f"stored, but not in {where}")
                          for w, s, c in zip(*np.nonzero(present)) if (w, s, c) not in seen]
    return report


def _stored_well(job: VerifyJob, check: TarCheck, well: str, report: VerifyReport) -> np.ndarray | None:
    """One stored well (checksums verified), or None with the reason reported."""
    report.wells += 1
    try:
        return job.root[f"{check.group}/images"][check.stored[well]]
    except Exception as error:  # zarr raises codec-specific errors for corrupted bytes
        report.mismatches.append((f"{check.group}/{well}", f"cannot read the stored well: {error}"))
        return None


def tar_checks(root: zarr.Group, source: Source, schema: DatasetSchema) -> tuple[list[TarCheck], list[tuple[str, str]]]:
    """A check per plate tar of the source (found by name, no metadata needed), and tars the store lacks."""
    tars, _ = find_tars(list(source.walk()), schema)
    stored = {g: _wells(root, g) for g in _plate_groups(root)}
    checks, problems = [], []
    for experiment, plate, rel in tars[["experiment", "plate", "path"]].itertuples(index=False):
        group = f"{experiment}/{schema.plate_name(plate)}"
        if group in stored:
            checks.append(TarCheck(group, rel, MemberNames.of(schema), stored.pop(group)))
        else:
            problems.append((source.path(rel), "a plate tar the store does not have"))
    return checks, problems


def plan_checks(root: zarr.Group, tasks: list[WellTask], sample: int | None,
                seed: int | None) -> tuple[list[WellCheck], list[tuple[str, str]]]:
    """Checks of every stored well (or of `sample` random images), mapped onto the store's own well order."""
    stored = {g: _wells(root, g) for g in _plate_groups(root)}
    known = [t for t in tasks if t.well in stored.get(t.group, {})]
    problems = [(f"{t.group}/{t.well}", "source images for a well the store does not have")
                for t in tasks if t.well not in stored.get(t.group, {})]
    if sample is not None:
        images = [(t, f) for t in known for f in t.files]
        picked = random.Random(seed).sample(images, min(sample, len(images)))
        return [WellCheck(t.group, stored[t.group][t.well], t.well, (f,), False) for t, f in picked], problems
    by_well = {(t.group, t.well): t.files for t in known}
    checks = [WellCheck(g, i, w, by_well.get((g, w), ()), True) for g, wells in stored.items() for w, i in wells.items()]
    return checks, problems


def _wells(root: zarr.Group, group: str) -> dict[str, int]:
    return {str(w): i for i, w in enumerate(root[f"{group}/well"][...].tolist())}


def _plate_groups(root: zarr.Group) -> list[str]:
    return sorted(f"{e}/{p}" for e, g in root.groups() if e != "index" for p, _ in g.groups())


def verify(src: str | os.PathLike[str], out: str | os.PathLike[str], sample: int | None = None,
           workers: int | None = None, seed: int | None = None, progress: ProgressCallback = _noop,
           storage_options: dict | None = None) -> VerifyReport:
    """Compare every source image (or `sample` random ones) with the store; the report lists each mismatch."""
    root, _ = open_root(out, storage_options)
    attrs = root.attrs[ROOT_ATTR]
    schema = dataclasses.replace(load_schema(attrs["dataset"]), image_shape=tuple(attrs["image_shape"]))
    if schema.tar_pattern is not None:
        if sample is not None:
            raise PlatezarrError(f"{src}: images in tars are read by streaming whole tars; verify without --sample")
        source = open_source(src, storage_options)
        checks, problems = tar_checks(root, source, schema)
        check, unit = check_tar, "tars"
    else:
        plan, source = build_plan(src, schema, **attrs["source"].get("options", {}), progress=progress,
                                  storage_options=storage_options)
        checks, problems = plan_checks(root, [t for p in plan.plates for t in p.tasks], sample, seed)
        check, unit = check_well, "wells" if sample is None else "images"
    total = VerifyReport(mismatches=problems)
    job = VerifyJob(source, root)
    for n, report in enumerate(run_tasks(check, job, checks, workers or os.cpu_count() or 1), 1):
        total.images += report.images
        total.wells += report.wells
        total.mismatches.extend(report.mismatches)
        progress(Progress("verify", n, len(checks), unit))
    return total
