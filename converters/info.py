"""Describe a finished store: what it holds and how it compares with its source."""

from __future__ import annotations

import os

from converters.output import ROOT_ATTR, Output
from converters.readers import open_root


def store_info(url: str | os.PathLike[str], storage_options: dict | None = None) -> dict:
    """Experiments, plates, wells, sites, channels, bytes and ratio to the source, from the root attributes."""
    root, store = open_root(url, storage_options)
    attrs = root.attrs[ROOT_ATTR]
    size = Output(store, str(url)).nbytes()
    source_bytes = attrs["source"]["bytes"]
    experiments = sorted(name for name, _ in root.groups() if name != "index")
    return {
        "store": str(url),
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
