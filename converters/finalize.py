"""Finish the native store: present masks, the whole-store index, root attributes, consolidated metadata.

The root `platezarr` attribute and the consolidated metadata are written last, so a store reads as
complete only when every well is in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr
from zarr.abc.store import Store

from converters.nodes import META, Nodes
from converters.output import MARKER_ATTR, RECORDS, ROOT_ATTR, Output
from converters.plan import EXAMPLES, Plan
from converters.statstore import finish_stats, index_columns
from converters.template import dataset_objects, plate_coords, strings
from converters.version import __version__

if TYPE_CHECKING:
    from converters.write import WrittenWells

LAYOUT_VERSION = 1
INDEX_GROUP = "index"


def write_present(nodes: Nodes, present: dict[str, np.ndarray]) -> None:
    """Every plate's `present` mask, stored at once."""
    nodes.put([chunk for group, mask in present.items() for chunk in nodes.chunks(f"{group}/present", mask)])


def index_table(plan: Plan, present: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per site of the whole store, with its group path, array position and metadata (each plate's
    coordinates made in turn, not every plate's at once)."""
    frames = []
    for plate in plan.plates:
        n_wells, n_sites = len(plate.wells), len(plan.schema.sites)
        frame = pd.DataFrame(
            {
                "experiment": plate.experiment,
                "plate": plate.plate,
                "well": np.repeat(plate.wells, n_sites),
                "site": np.tile(plan.schema.sites, n_wells),
                "group": plate.group,
                "well_index": np.repeat(np.arange(n_wells), n_sites),
                "site_index": np.tile(np.arange(n_sites), n_wells),
                "channels_present": present[plate.group].sum(axis=2).ravel(),
            }
        )
        for name, (dims, values, _) in plate_coords(plan, plate).items():
            if name in frame or "well" not in dims or name in ("row", "column"):
                continue
            values = values if len(dims) == 2 else np.repeat(values, n_sites)
            frame[name] = values.ravel()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_index(store: Store, table: pd.DataFrame, nodes: Nodes | None = None,
                more: Iterable[tuple[str, np.ndarray]] = ()) -> None:
    """The root `index` group (dim `sample`): the whole metadata `table` and the columns `more` yields, in one read per
    column, consolidated so that readers open it without the whole tree. Encoded a column at a time, strings packed
    in numpy's StringDType (xarray would copy an object column into new str objects; the bytes stored are the same),
    so that a table of millions of rows is not held twice over. `nodes`: the store's documents written so far."""
    nodes = nodes or Nodes(store)
    names: set[str] = set()
    for name, values in chain(table.items(), more):
        text = values.dtype == object or pd.api.types.is_string_dtype(values)
        coord = {name: ("sample", strings(values).astype(np.dtypes.StringDType()) if text else np.asarray(values))}
        objects = dataset_objects(xr.Dataset(coords=coord), {name: {"chunks": (max(len(table), 1),)}})
        names.update(str(json.loads(dict(objects)[META])["attributes"].get("coordinates", "")).split())
        nodes.put([(f"{INDEX_GROUP}/{key}", value) for key, value in objects if key != META])
    nodes.put([nodes.consolidated_group(INDEX_GROUP, {"coordinates": " ".join(sorted(names))})])


def write_root(store: Store, attrs: dict, nodes: Nodes | None = None) -> None:
    """Mark the store complete and consolidate it, in the last write of a conversion: the root zarr.json, with the
    consolidated metadata of every node made from `nodes` (the documents written, else read back from the store)."""
    nodes = nodes or Nodes(store)
    current = dict(nodes.document("").get("attributes", {}))
    current.pop(MARKER_ATTR, None)
    current[ROOT_ATTR] = attrs
    nodes.put([nodes.consolidated(current)])


def finish_store(output: Output, plan: Plan, written: WrittenWells, identity: dict) -> None:
    """Present masks, pixel statistics, the index, then the root attribute (with the plan's `identity`) and
    consolidated metadata: the store is complete. Every object is written once and nothing is read back but the
    template's documents (`Nodes`)."""
    nodes = Nodes.load(output)
    write_present(nodes, written.present)
    table = index_table(plan, written.present)
    pixel_stats = finish_stats(output.store, written.stats, output.location, nodes)
    write_index(output.store, table, nodes, index_columns(table, written.stats) if pixel_stats else ())
    skipped = written.skipped()
    attrs = root_attrs(plan, reported(plan, written), len(table), skipped)
    write_root(output.store, attrs | {"plan": identity} | pixel_stats, nodes)
    output.delete(RECORDS)


def reported(plan: Plan, written: WrittenWells) -> dict[str, Any]:
    """The plan as data, counting only the images stored: those found missing while writing (tars planned from
    metadata) are counted in the missing ones, and bad images skipped are not counted as images."""
    data = plan.describe()
    found = written.missing()
    if found:
        planned = data["missing_images"]
        data["missing_images"] = {"count": planned["count"] + len(found), "examples": (planned["examples"] + found)[:EXAMPLES]}
    data["images"] -= len(found) + len(written.skipped())
    return data


def root_attrs(plan: Plan, described: dict[str, Any], n_index: int, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The root `platezarr` attribute (SPEC.md, store layout v1); its presence marks the store complete."""
    return {
        "layout_version": LAYOUT_VERSION,
        "dataset": plan.schema.name,
        "title": plan.schema.title,
        "channels": plan.channel_attrs(),
        "image_shape": list(plan.schema.image_shape),
        "dtype": str(plan.dtype),
        "sites": list(plan.schema.sites),
        "pixel_size_um": plan.pixel_size_um,
        "chunks": described["chunks"],
        "shards": described["shards"],
        "compression": described["compression"],
        "codec": described["codec"],
        "converter_version": __version__,
        "created": now(),
        "counts": {k: described[k] for k in ("experiments", "plates", "wells", "sites", "images")} | {"index_rows": n_index},
        "missing_images": described["missing_images"],
        "skipped_images": {"count": len(skipped), "examples": skipped[:5]},
        "embeddings": _embeddings_attrs(described),
        "source": {
            "url": plan.source,
            "layout": plan.schema.layout,
            "metadata": plan.metadata_location,
            "metadata_format": plan.metadata_format,
            "bytes": plan.source_bytes,
            **plan.source_details,
        },
    }


def _embeddings_attrs(described: dict[str, Any]) -> dict[str, Any] | None:
    """Where the embeddings came from, and their rows with no site in the store and sites with no row."""
    if described["embeddings"] is None:
        return None
    gaps = {k: v for k, v in described.items() if k == "embeddings_without_sites" or k.endswith("_without_embeddings")}
    return dict(described["embeddings"]) | gaps


def now() -> str:
    """The time in UTC, to the second, as ISO 8601: when a conversion started or a store was finished."""
    return datetime.now(UTC).isoformat(timespec="seconds")
