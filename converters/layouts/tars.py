"""The RxRx3 layout: one tar per experiment plate, whose members are the plate's `AA02_s1_w3.png` images.

Tars are never extracted. Planning lists a local tar's members from their headers alone (tarfile
seeks past each member's data, so a 9,216-image RxRx3 tar costs 9,216 small reads; tars are listed
in parallel). A tar in a bucket is not read while planning: its images are expected from the
metadata table (every site and channel of every well the table gives the plate), and an expected
image the tar lacks is found, and reported, when the tar is converted (converters/tarwrite.py).
"""

from __future__ import annotations

import io
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from converters.decode import probe_dtype
from converters.errors import SourceError
from converters.layouts.files import (EXAMPLES, IMAGE_COLUMNS, Scan, SourceIndex, check_unique, number_keys, path_numbers,
                                      refuse_experiment_and_plate)
from converters.metadata import MetadataTable
from converters.schema import DatasetSchema
from converters.source import Listing, Source
from converters.wells import normalize_well

TAR_COLUMN = "tar"  # the images table's column naming each image's tar
MEMBER_NAME = "{well}_s{site}_{channel}.png"  # an image's name in a tar, as planned from the metadata
LIST_THREADS = 8  # local tars whose headers are read at once while planning
SAMPLE_BYTES = 64 * 1024  # read from the start of a bucket tar to find its first image's header
HEADER_BYTES = 64  # of an image: enough for a PNG's IHDR (size, bit depth)


@dataclass(frozen=True)
class MemberNames:
    """How a tar's member names map onto a well's (site, channel) grid; plain data, so tasks carry it to workers."""

    pattern: str
    channel_id: str
    sites: tuple[int, ...]
    channels: tuple[str, ...]

    @classmethod
    def of(cls, schema: DatasetSchema) -> MemberNames:
        return cls(schema.path_pattern.pattern, schema.channel_id, schema.sites, schema.channel_ids)

    def key(self, name: str) -> tuple[str, int, int] | None:
        """(well, site index, channel index) of an image member, or None for any other member."""
        m = re.match(self.pattern, name)
        if m is None:
            return None
        site, channel = int(m["site"]), self.channel_id.format(channel=m["channel"])
        if site not in self.sites or channel not in self.channels:
            return None
        return normalize_well(m["well"]), self.sites.index(site), self.channels.index(channel)

    def label(self, well: str, site: int, channel: int) -> str:
        """`AA02 site 1 w3`: an image by well, site and channel id, for reports."""
        return f"{well} site {self.sites[site]} {self.channels[channel]}"


def scan_tars(scan: Scan) -> SourceIndex:
    """The images of every tar in `listing` whose path matches the schema's `tar_pattern`."""
    source, schema = scan.source, scan.schema
    refuse_experiment_and_plate(scan, "tar")
    tars, ignored = find_tars(scan.listing, schema)
    member_name = None
    if not source.lists_cheaply:
        images, unmatched, member_name = expected_images(source, tars, schema, scan.metadata), list[str](), MEMBER_NAME
    else:
        images, unmatched = listed_images(source, tars, schema)
        images = images.sort_values(["path", TAR_COLUMN], ignore_index=True)
    ignored += unmatched
    sample = tar_sample(source, tars["path"].iloc[0], int(tars["bytes"].iloc[0]), schema) if len(tars) else None
    return SourceIndex(images, sorted(ignored)[:EXAMPLES], len(ignored), bytes=int(tars["bytes"].sum()),
                       dtype=probe_dtype(*sample) if sample is not None else schema.dtype, member_name=member_name)


def find_tars(listing: Listing, schema: DatasetSchema) -> tuple[pd.DataFrame, list[str]]:
    """The plate tars of the listing (experiment, plate, path, bytes), and the other files' paths."""
    assert schema.tar_pattern is not None
    rows, ignored = [], []
    for rel, size in listing:
        m = schema.tar_pattern.match(rel)
        if m is None:
            ignored.append(rel)
        else:
            rows.append((m["experiment"], m["plate"], rel, size))
    tars = pd.DataFrame(rows, columns=["experiment", "plate", "path", "bytes"])
    plate = [c for c in number_keys(schema) if c == "plate"]
    tars = path_numbers(tars, plate, str).astype({"bytes": "int64"}).sort_values("path", ignore_index=True)
    twice = tars[tars.duplicated(["experiment", "plate"], keep=False)]
    if not twice.empty:
        a, b = twice["path"].iloc[:2]
        raise SourceError(f"two tars for one plate: {a} and {b}; keep one copy of each plate's tar under the source folder")
    return tars, ignored


def tar_members(source: Source, rel: str) -> list[tuple[str, int]]:
    """(name, size) of every regular file in a local tar, from its headers only."""
    path = Path(source.path(rel))
    try:
        with tarfile.open(path, mode="r:") as tar:
            return [(m.name, m.size) for m in tar if m.isfile()]
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{path}: not a readable uncompressed tar ({exc}); re-download it") from exc


def listed_images(source: Source, tars: pd.DataFrame, schema: DatasetSchema) -> tuple[pd.DataFrame, list[str]]:
    """One row per image member of the local tars, and the `tar:member` names that match no pattern."""
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        members = list(pool.map(lambda rel: tar_members(source, rel), tars["path"]))
    rows, ignored = [], []
    for (experiment, plate, rel), names in zip(tars[["experiment", "plate", "path"]].itertuples(index=False), members):
        for name, size in names:
            m = schema.path_pattern.match(name)
            if m is None:
                ignored.append(f"{rel}:{name}")
            else:
                rows.append((experiment, plate, m["well"], m["site"], m["channel"], name, size, rel))
    images = _typed(pd.DataFrame(rows, columns=[*IMAGE_COLUMNS, TAR_COLUMN]), tars, schema)
    for rel, members_of_tar in images.groupby(TAR_COLUMN, sort=False):
        where = source.path(str(rel))
        check_unique(members_of_tar, lambda member: f"{where}:{member}")
    return images, ignored


def expected_images(source: Source, tars: pd.DataFrame, schema: DatasetSchema,
                    metadata: MetadataTable | None) -> pd.DataFrame:
    """The sites whose images a bucket's tars should hold: every site of each well the metadata gives a plate, one
    row per site standing for each of its channels, named in the tar as MEMBER_NAME says."""
    if metadata is None:
        raise SourceError(
            f"{source.url}: tars in a bucket are not read while planning (that would read every tar twice); "
            f"pass --metadata with {schema.title}'s metadata table, from which each plate's wells are planned"
        )
    sites = metadata.table[["experiment", "plate", "well", "site"]]
    plates = pd.MultiIndex.from_frame(tars[["experiment", "plate"]])
    tar = plates.get_indexer(pd.MultiIndex.from_frame(sites[["experiment", "plate"]]))  # -1: a plate with no tar
    if (tar < 0).any():
        sites, tar = sites[tar >= 0].reset_index(drop=True), tar[tar >= 0]
    return sites.assign(**{TAR_COLUMN: pd.Categorical.from_codes(tar, tars["path"])}).astype({"site": "int64"})


def _typed(images: pd.DataFrame, tars: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    images = path_numbers(images.astype({"plate": tars["plate"].dtype, "bytes": "int64"}), ["site"], str)
    images["well"] = [normalize_well(w) for w in images["well"]]
    images["channel"] = [schema.channel_id.format(channel=c) for c in images["channel"]]
    return images


def tar_sample(source: Source, rel: str, size: int, schema: DatasetSchema) -> tuple[bytes, str] | None:
    """The first bytes of the first image in a tar of `size` bytes (read from its first 64 KiB), or None if none is there."""
    head = source.read_head(rel, min(size, SAMPLE_BYTES))
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as tar:
            for member in tar:
                if member.isfile() and schema.path_pattern.match(member.name):
                    data = tar.extractfile(member)
                    return (data.read(HEADER_BYTES) if data else b""), f"{source.path(rel)}:{member.name}"
    except tarfile.TarError:  # the head ends inside a member: no complete image header in it
        return None
    return None
