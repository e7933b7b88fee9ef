"""Which dataset is this folder? Match every schema's path pattern, then one image header, the channels and sites.

RxRx1, RxRx2, RxRx19a and RxRx19b share a file-name pattern: the image size (from one header) tells
RxRx1 (512²) from RxRx2 and RxRx19a (1024²) from RxRx19b (2048²); the channels and sites the names
give tell RxRx2 (w1–w6) from RxRx19a (w1–w5). RxRx3 is found by its plate tars.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from converters.decode import ImageHeader, image_header
from converters.errors import SourceError
from converters.layouts.tars import tar_sample
from converters.schema import DatasetSchema, dataset_names, load_schema
from converters.source import Listing, Source

HINT_FILES = 10_000  # file names tried against every dataset's pattern for a hint when nothing matched


@dataclass(frozen=True)
class Found:
    """What one schema's pattern finds in a source: the channels and sites its names give, and one image's header."""

    channels: frozenset[str]
    sites: frozenset[int]
    header: ImageHeader | None  # None when no image could be sampled (a tar without one in its first 64 KiB)


def detect_dataset(source: Source, listing: Listing) -> DatasetSchema:
    """The one schema whose file names, image size, channels and sites fit the source; otherwise an error naming the candidates."""
    scans: dict[tuple[str, str], tuple[tuple[str, int], set[str], set[str]] | None] = {}
    headers: dict[str, ImageHeader | None] = {}
    found: dict[str, tuple[DatasetSchema, Found]] = {}
    for name in dataset_names():
        schema = load_schema(name)
        hit = _found(source, listing, schema, scans, headers)
        if hit is not None:
            found[name] = (schema, hit)
    if not found:
        examples = ", ".join(rel for rel, _ in islice(listing, 3)) or "no files at all"
        raise SourceError(
            f"{source.url}: no known dataset layout matches its files ({examples}); "
            f"pass --dataset ({', '.join(dataset_names())})"
        )
    fitting = [(s, f) for s, f in found.values() if not _misfit(s, f)]
    if len(fitting) == 1:
        return fitting[0][0]
    complete = [s for s, f in fitting if f.channels == set(s.channel_ids) and f.sites == set(s.sites)]
    if len(complete) == 1:
        return complete[0]
    if fitting:
        candidates = "; ".join(_describe(s) for s, _ in fitting)
        raise SourceError(f"{source.url}: the files fit several datasets ({candidates}); found {_seen(fitting[0][1])}; "
                          "pass --dataset to choose one")
    reasons = "; ".join(f"{s.name}: {_misfit(s, f)}" for s, f in found.values())
    raise SourceError(f"{source.url}: the file names fit {', '.join(found)}, but not the images ({reasons}); "
                      "pass --dataset if this is one of them")


def _found(source: Source, listing: Listing, schema: DatasetSchema,
           scans: dict, headers: dict) -> Found | None:
    """What the schema's pattern finds; listings are scanned once per distinct pattern, headers read once per file."""
    pattern = schema.tar_pattern or schema.path_pattern
    groups = () if schema.tar_pattern else ("site", "channel")
    key = (pattern.pattern, schema.channel_id)
    if key not in scans:
        scans[key] = _scan(listing, pattern.match, groups)
    scan = scans[key]
    if scan is None:
        return None
    first, sites, channels = scan
    if first not in headers:
        headers[first] = _header(source, first, schema)
    return Found(frozenset(schema.channel_id.format(channel=c) for c in channels),
                 frozenset(int(s) for s in sites), headers[first])


def _scan(listing: Listing, match: Callable[[str], re.Match[str] | None],
          groups: tuple[str, ...]) -> tuple[tuple[str, int], set[str], set[str]] | None:
    """The first matching (path, size), and the sites and channels the matching names give (none for tars)."""
    first, sites, channels = None, set(), set()
    for rel, size in listing:
        m = match(rel)
        if m is None:
            continue
        first = (rel, size) if first is None or rel < first[0] else first
        if groups:
            sites.add(m["site"])
            channels.add(m["channel"])
    return None if first is None else (first, sites, channels)


def _header(source: Source, file: tuple[str, int], schema: DatasetSchema) -> ImageHeader | None:
    """The header of the file's image, or for a tar of its first image member."""
    rel, size = file
    if schema.tar_pattern is None:
        return image_header(source.read(rel), source.path(rel))
    sample = tar_sample(source, rel, size, schema)
    return image_header(*sample) if sample is not None else None


def _misfit(schema: DatasetSchema, found: Found) -> str:
    """Why the found images are not this dataset's ("" if they may be)."""
    header = found.header
    if header is not None and (header.height, header.width) != schema.image_shape:
        return f"images are {schema.image_shape[0]}x{schema.image_shape[1]}, found {header.height}x{header.width}"
    extra_channels = sorted(found.channels - set(schema.channel_ids))
    if extra_channels:
        return f"channels are {', '.join(schema.channel_ids)}, found {', '.join(extra_channels)}"
    extra_sites = sorted(found.sites - set(schema.sites))
    if extra_sites:
        return f"sites are {_span(schema.sites)}, found {', '.join(map(str, extra_sites))}"
    return ""


def _describe(schema: DatasetSchema) -> str:
    y, x = schema.image_shape
    return f"{schema.name}: {y}x{x}, channels {', '.join(schema.channel_ids)}, sites {_span(schema.sites)}"


def _seen(found: Found) -> str:
    size = f"{found.header.height}x{found.header.width} images" if found.header else "images"
    return f"{size} of channels {', '.join(sorted(found.channels))} and sites {', '.join(map(str, sorted(found.sites)))}"


def _span(values: tuple[int, ...]) -> str:
    return f"{values[0]}-{values[-1]}" if len(values) > 1 else str(values[0])


def nothing_found(source: Source, schema: DatasetSchema, listing: Listing) -> SourceError:
    """The error of a source in which not one image of `schema` was found: what was looked for, what was
    found, and where the images may be instead."""
    pattern = (schema.tar_pattern or schema.path_pattern).pattern
    names = [rel for rel, _ in islice(listing, HINT_FILES)]
    found = f"{len(listing)} files, none matching, e.g. {', '.join(names[:3])}" if names else "no files at all"
    return SourceError(f"{source.url}: not one {schema.title} image found: looked for paths matching {pattern}; "
                       f"found {found}{_elsewhere(source, schema, names)}")


def _elsewhere(source: Source, schema: DatasetSchema, names: list[str]) -> str:
    """A hint: the names are another dataset's, or the images sit one folder up or down from the source."""
    url = source.url.rstrip("/")
    parent, _, folder = url.rpartition("/")
    for name in dataset_names():
        other = load_schema(name)
        match = (other.tar_pattern or other.path_pattern).match
        for rel in names:
            inner = rel.split("/", 1)
            if name != schema.name and match(rel):
                return f"; these are {other.title} names: pass --dataset {name}"
            if name == schema.name and folder and match(f"{folder}/{rel}"):
                return f"; they match one folder up: pass {parent or '/'} as the source"
            if name == schema.name and len(inner) == 2 and match(inner[1]):
                return f"; they match one folder down: pass {url}/{inner[0]} as the source"
    return "; check the source folder and --dataset"
