"""Describe a finished store: what it holds and how it compares with its source."""

from __future__ import annotations

import os

from converters.output import ROOT_ATTR, output_path, store_bytes
from converters.readers import open_root


def store_info(url: str | os.PathLike[str]) -> dict:
    """Experiments, plates, wells, sites, channels, bytes and ratio to the source, from the root attributes."""
    root, _ = open_root(url)
    attrs = root.attrs[ROOT_ATTR]
    size = store_bytes(output_path(url))
    source_bytes = attrs["source"]["bytes"]
    experiments = sorted(name for name, _ in root.groups() if name != "index")
    return {
        "store": str(output_path(url)),
        "dataset": attrs["dataset"],
        **attrs["counts"],
        "experiment_names": experiments,
        "plate_groups": sorted(f"{e}/{p}" for e in experiments for p, _ in root[e].groups()),
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
