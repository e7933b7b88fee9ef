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
from converters.layouts.files import IMAGE_COLUMNS, SourceIndex, check_unique, refuse_experiment_and_plate
from converters.metadata import MetadataTable
from converters.schema import DatasetSchema
from converters.source import Listing, Source
from converters.wells import normalize_well

TAR_COLUMN = "tar"  # the images table's column naming each image's tar
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


def scan_tars(
    source: Source,
    listing: Listing,
    schema: DatasetSchema,
    *,
    experiment: str | None = None,
    plate: str | None = None,
    metadata: MetadataTable | None = None,
    examples: int = 5,
) -> SourceIndex:
    """The images of every tar in `listing` whose path matches the schema's `tar_pattern`."""
    refuse_experiment_and_plate(schema, "tar", experiment, plate)
    tars, ignored = find_tars(listing, schema)
    if source.root is None:
        images, unmatched = expected_images(source, tars, schema, metadata), []
    else:
        images, unmatched = listed_images(source, tars, schema)
    ignored += unmatched
    sample = tar_sample(source, tars["path"].iloc[0], int(tars["bytes"].iloc[0]), schema) if len(tars) else None
    return SourceIndex(images.sort_values(["path", TAR_COLUMN], ignore_index=True), sorted(ignored)[:examples],
                       len(ignored), bytes=int(tars["bytes"].sum()),
                       dtype=probe_dtype(*sample) if sample is not None else schema.dtype)


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
    tars = tars.astype({"plate": schema.key_dtype("plate"), "bytes": "int64"}).sort_values("path", ignore_index=True)
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
        raise SourceError(f"{path}: not a readable uncompressed tar ({exc}); re-download it") from None


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
        check_unique(members_of_tar, _InTar(source, rel))
    return images, ignored


def expected_images(source: Source, tars: pd.DataFrame, schema: DatasetSchema,
                    metadata: MetadataTable | None) -> pd.DataFrame:
    """The images a bucket's tars should hold: every site and channel of each well the metadata gives a plate."""
    if metadata is None:
        raise SourceError(
            f"{source.url}: tars in a bucket are not read while planning (that would read every tar twice); "
            f"pass --metadata with {schema.title}'s metadata table, from which each plate's wells are planned"
        )
    sites = metadata.table[["experiment", "plate", "well", "site"]].merge(tars[["experiment", "plate", "path"]])
    sites = sites.rename(columns={"path": TAR_COLUMN})
    channels = pd.DataFrame({"channel": list(schema.channel_ids)})
    images = sites.merge(channels, how="cross")
    images["path"] = images["well"] + "_s" + images["site"].astype(str) + "_" + images["channel"] + ".png"
    images["bytes"] = 0
    return images[[*IMAGE_COLUMNS, TAR_COLUMN]].astype({"site": "int64", "bytes": "int64"})


def _typed(images: pd.DataFrame, tars: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    images = images.astype({"plate": tars["plate"].dtype, "site": "int64", "bytes": "int64"})
    images["well"] = [normalize_well(w) for w in images["well"]]
    images["channel"] = [schema.channel_id.format(channel=c) for c in images["channel"]]
    return images


def tar_sample(source: Source, rel: str, size: int, schema: DatasetSchema) -> tuple[bytes, str] | None:
    """The first bytes of the first image in a tar of `size` bytes (read from its first 64 KiB), or None if none is there."""
    if source.root is None:
        head = read_head(source, rel, min(size, SAMPLE_BYTES))
    else:
        with open(source.path(rel), "rb") as f:
            head = f.read(SAMPLE_BYTES)
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as tar:
            for member in tar:
                if member.isfile() and schema.path_pattern.match(member.name):
                    data = tar.extractfile(member)
                    return (data.read(HEADER_BYTES) if data else b""), f"{source.path(rel)}:{member.name}"
    except tarfile.TarError:  # the head ends inside a member: no complete image header in it
        return None
    return None


def read_head(source: Source, rel: str, n: int) -> bytes:
    """The first `n` bytes of a bucket object, in one ranged GET."""
    import obstore

    try:
        return bytes(obstore.get_range(source.store, rel, start=0, end=n))
    except Exception as exc:  # obstore raises per-cloud errors; all mean the read failed
        raise SourceError(f"{source.path(rel)}: cannot read: {exc}") from None


class _InTar:
    """Names members as `tar:member` in check_unique's messages."""

    def __init__(self, source: Source, rel: str) -> None:
        self.where = source.path(rel)

    def path(self, member: str) -> str:
        return f"{self.where}:{member}"
