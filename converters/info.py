"""Describe a finished store: what it holds and how it compares with its source, after checking that every
well it recorded is still there."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from converters.errors import StoreError
from converters.output import Output
from converters.readers import open_root, plate_groups, read_array
from converters.sitereader import SiteReader

EXAMPLES = 10


def store_info(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Experiments, plates, wells, sites, channels, bytes and ratio to the source, from the root attributes."""
    root, output, attrs = open_root(url, storage_options)
    plates = plate_groups(root)
    lost = missing_shards(url, root, plates, output, storage_options)
    if lost:
        raise StoreError(f"{url}: {len(lost)} wells the store recorded as written have no shard any more "
                         f"(deleted after the conversion?), e.g. {', '.join(lost[:EXAMPLES])}; plain zarr reads "
                         "them as zeros. Restore the files, or convert again into a new output")
    size = output.nbytes()
    source_bytes = attrs["source"]["bytes"]
    return {
        "store": str(url),
        "dataset": attrs["dataset"],
        **attrs["counts"],
        "experiment_names": sorted({p.split("/")[0] for p in plates}),
        "plate_groups": plates,
        "channels": [f"{c['id']} ({c['name']})" for c in attrs["channels"]],
        "image_shape": attrs["image_shape"],
        "dtype": attrs["dtype"],
        "codec": attrs["codec"],
        "missing_images": attrs["missing_images"]["count"],
        "bytes": size,
        "source_bytes": source_bytes,
        "ratio_to_source": round(size / source_bytes, 4) if source_bytes else None,
        "created": attrs["created"],
        "converter_version": attrs["converter_version"],
    }


def missing_shards(url: str | os.PathLike[str], root: zarr.Group, plates: list[str], output: Output,
                   storage_options: dict[str, Any] | None) -> list[str]:
    """`plate/well` of every well with an image marked present whose shard is not in the store (one listing)."""
    if not plates:
        return []
    fmt = SiteReader(url, plates[0], storage_options).format
    stored = set(output.keys(""))
    lost = []
    for group in plates:
        wells = read_array(root, f"{group}/well").tolist()
        written = read_array(root, f"{group}/present").any(axis=(1, 2))
        lost += [f"{group}/{wells[i]}" for i in np.flatnonzero(written) if fmt.locate(group, int(i), 0)[0] not in stored]
    return lost
