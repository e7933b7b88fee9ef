"""Pixel statistics in a store: written at the end of a conversion (or of `platezarr stats`), read back by the
training reader, the pictures and other output formats, and exported as the RxRx1 competition's table.

Each plate group gets `pixel_stats` (well, site, channel, stat), `plate_stats` (pool, channel, stat) and
`plate_histogram` (pool, channel, bin), pools being all images and the negative-control wells; the plate,
experiment and root groups get the pooled statistics as an attribute `pixel_stats` (root: inside
attrs["platezarr"]); the root `index` gets `{stat}_{channel}` columns. All additive: layout_version stays 1.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.abc.store import Store

from converters.errors import OptionError, StoreError
from converters.nodes import Nodes
from converters.spill import ITEM
from converters.stats import POOLS, STATS, Pool, StoreStats, bin_lows
from converters.template import dataset_objects

if TYPE_CHECKING:
    from converters.write import WrittenWells

log = logging.getLogger("platezarr")

ATTR = "pixel_stats"
INDEX_STATS = ("mean", "std", "min", "max", "p1", "p50", "p99")
HOW = ("per image: exact, population std, percentiles by numpy's 'linear' method; pooled: mean and std from the "
       "summed count, sum and sum of squares, percentiles from merged histograms (exact for 8-bit images, within 1/128 "
       "of the value for 16-bit ones)")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def index_column(stat: str, channel: str) -> str:
    """The `index` column of one statistic of one channel, e.g. `mean_w1`."""
    return f"{stat}_{channel}"


def finish_stats(store: Store, stats: StoreStats, location: str, nodes: Nodes | None = None) -> dict[str, Any]:
    """Write the statistics at the end of a conversion; the root attribute to add: {"pixel_stats": ...}, or nothing
    if some wells were written by an earlier platezarr that computed none (then `platezarr stats` adds them)."""
    if stats.unmeasured:
        log.warning("%s: %d wells were written by an earlier platezarr, without pixel statistics; the store is finished "
                    "without any: add them with `platezarr stats %s`", location, len(stats.unmeasured), location)
        return {}
    return {"pixel_stats": write_stats(store, stats, nodes)}


def write_stats(store: Store, stats: StoreStats, nodes: Nodes | None = None) -> dict[str, Any]:
    """Write every plate's statistics and every experiment's pooled ones, and return the store's pooled ones for the
    root (the index's per-sample columns are `index_columns`).
    `nodes`: the store's documents written so far (else the groups' are read from the store), kept up to date."""
    nodes = nodes or Nodes(store)
    experiments: dict[str, list[str]] = {}
    for group, plate in stats.plates.items():
        summary = {name: pool.summary(stats.dtype) for name, pool in plate.pools.items()}
        objects, added = plate_objects(group, plate.images.read(), summary, plate.pools, stats)
        before = str(nodes.document(group).get("attributes", {}).get("coordinates", "")).split()
        attrs = {"coordinates": " ".join(sorted({*before, *added})),
                 ATTR: pooled_attrs(summary, stats, int(plate.controls.sum()))}
        nodes.put([*objects, nodes.group(group, attrs)])
        experiments.setdefault(group.split("/")[0], []).append(group)
    nodes.put([nodes.group(experiment, {ATTR: pooled_attrs(_summaries(stats.pooled(groups), stats), stats,
                                                            _controls(stats, groups))})
               for experiment, groups in experiments.items()])
    return pooled_attrs(_summaries(stats.pooled(list(stats.plates)), stats), stats, _controls(stats, list(stats.plates)))


def _summaries(pools: dict[str, Pool], stats: StoreStats) -> dict[str, np.ndarray]:
    return {name: pool.summary(stats.dtype) for name, pool in pools.items()}


def _controls(stats: StoreStats, groups: list[str]) -> int:
    return sum(int(stats.plates[g].controls.sum()) for g in groups)


def plate_objects(group: str, images: np.ndarray, summary: dict[str, np.ndarray], pools: dict[str, Pool],
                  stats: StoreStats) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The objects of the plate's statistic variables, read back with plain xarray, and the coordinates the caller
    adds to the plate group's list of them."""
    coords = {
        "stat": ("stat", np.array(STATS, dtype=object), {"description": "Statistic of the pixels"}),
        "pool": ("pool", np.array(POOLS, dtype=object), {"description": "Images pooled: all, or the negative-control wells'"}),
        "bin_low": ("bin", bin_lows(stats.dtype), {"description": "Lowest pixel value of each histogram bin (each bin "
                                                    "reaches up to the next one's)"}),
    }
    ds = xr.Dataset(
        {
            "pixel_stats": (("well", "site", "channel", "stat"), images,
                            {"description": f"Statistics of each image, NaN where it is missing; {HOW}"}),
            "plate_stats": (("pool", "channel", "stat"), np.stack([summary[p] for p in POOLS]),
                            {"description": f"Statistics of the plate's pooled images; {HOW}", **_controls_attrs(stats)}),
            "plate_histogram": (("pool", "channel", "bin"), np.stack([pools[p].histogram for p in POOLS]),
                                {"description": "Pixel counts of the plate's pooled images per histogram bin"}),
        },
        coords=coords,
    )
    whole = {name: {"chunks": ds[name].shape} for name in ("pixel_stats", "plate_stats", "plate_histogram")}
    objects = dict(dataset_objects(ds, whole))
    own = json.loads(objects.pop("zarr.json"))  # the group's document, made for these variables alone
    added = str(own["attributes"].get("coordinates", "")).split()
    return [(f"{group}/{key}", value) for key, value in objects.items()], added


def _controls_attrs(stats: StoreStats) -> dict[str, Any]:
    return {"negative_controls": stats.controls.attrs()}


def pooled_attrs(summary: dict[str, np.ndarray], stats: StoreStats, control_wells: int) -> dict[str, Any]:
    """The pooled statistics as a JSON attribute: per pool, per statistic, one value per channel (null for NaN)."""
    pools = {name: {stat: [_plain(v) for v in values[:, i]] for i, stat in enumerate(STATS)}
             for name, values in summary.items()}
    controls = stats.controls.attrs() | {"wells": control_wells}
    return {"channels": list(stats.channels), "how": HOW, "negative_control_wells": controls, **pools}


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def index_column_names(channels: tuple[str, ...]) -> list[str]:
    """The index's columns of statistics, in the order `index_columns` makes them."""
    return [index_column(stat, channel) for stat in INDEX_STATS for channel in channels]


def index_columns(table: pd.DataFrame, stats: StoreStats) -> Iterator[tuple[str, np.ndarray]]:
    """The index's `{stat}_{channel}` columns, one value per sample (rows of `table`, keyed by group, well_index,
    site_index): the image's statistics, NaN where it is missing. Each plate's statistics are read once and laid
    out by column in the statistics' temporary file, from which the columns are read one at a time as
    `write_index` writes them: memory for a plate and a column, not for every image's statistics."""
    n, names = len(table), index_column_names(stats.channels)
    wells, sites = table["well_index"].to_numpy(), table["site_index"].to_numpy()
    codes, groups = pd.factorize(table["group"])
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(groups) + 1))
    start, covered = stats.spill.reserve(len(names) * n), np.zeros(n, dtype=bool)
    picked = [STATS.index(stat) for stat in INDEX_STATS]
    for code, group in enumerate(groups):
        rows = order[bounds[code]:bounds[code + 1]]
        if group not in stats.plates:
            continue
        values = stats.plates[group].images.read()[wells[rows], sites[rows]][:, :, picked]  # (row, channel, stat)
        by_column = values.transpose(2, 1, 0).reshape(len(names), len(rows))  # index_column_names' order
        for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1):
            for k in range(len(names)):
                stats.spill.write(start + (k * n + int(rows[run[0]])) * ITEM, by_column[k, run])
        covered[rows] = True
    for k, name in enumerate(names):
        column = stats.spill.read(start + k * n * ITEM, n)
        column[~covered] = np.nan
        yield name, column


def read_pooled(root: zarr.Group, path: str = "") -> dict[str, Any] | None:
    """The pooled statistics of the group at `path` (a plate, an experiment, or "" for the whole store), or None
    if the store has none."""
    attrs = dict(root[path].attrs) if path else dict(root.attrs).get("platezarr") or {}
    found = attrs.get(ATTR) if isinstance(attrs, dict) else None
    return found if isinstance(found, dict) else None


def pooled_array(pooled: dict[str, Any], pool: str, stat: str) -> np.ndarray:
    """One pooled statistic per channel (NaN where null) from `read_pooled`'s attribute."""
    return np.array([np.nan if v is None else v for v in pooled[pool][stat]], dtype=np.float64)


def pooled_window(pooled: dict[str, Any]) -> np.ndarray:
    """(channel, 2): the pooled 1st and 99th percentiles over all images, from `read_pooled`'s attribute."""
    return np.stack([pooled_array(pooled, "all", "p1"), pooled_array(pooled, "all", "p99")], axis=1)


def plate_display_range(source: WrittenWells | str | os.PathLike[str], group: str,
                        storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """(channel, 2): a plate's robust display window per channel, its pooled 1st and 99th percentiles over all
    images, from the wells a conversion just wrote (`WrittenWells`) or from a finished store (NaN: no pixels)."""
    if isinstance(source, (str, os.PathLike)):
        from converters.readers import open_root

        root, _, _ = open_root(source, storage_options)
        if group not in root:
            raise StoreError(f"{source}: no plate {group}")
        pooled = read_pooled(root, group)
        if pooled is None:
            raise OptionError(f"{source}: no pixel statistics in this store; add them with `platezarr stats {source}`")
        return pooled_window(pooled)
    stats = source.stats
    summary = stats.plates[group].pools["all"].summary(stats.dtype)
    return summary[:, [STATS.index("p1"), STATS.index("p99")]]


def pixel_stats_table(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """The RxRx1 competition's `pixel_stats` table: one row per site and channel, `id_code, experiment, plate, well,
    site, channel, mean, std, median, min, max` (channel numbered from 1), then p1, p99, the channel's id and whether
    the image is present (its statistics are NaN if not)."""
    from converters.readers import open_root, plate_groups, read_array

    root, _, attrs = open_root(url, storage_options)
    if read_pooled(root) is None:
        raise OptionError(f"{url}: no pixel statistics in this store; add them with `platezarr stats {url}`")
    channels = [c["id"] for c in attrs["channels"]]
    frames = []
    for group in plate_groups(root):
        experiment, plate = group.split("/")
        wells = np.array([str(w) for w in read_array(root, f"{group}/well")], dtype=object)
        sites = read_array(root, f"{group}/site")
        values = read_array(root, f"{group}/pixel_stats")
        present = read_array(root, f"{group}/present")
        w, s, c = (a.ravel() for a in np.meshgrid(np.arange(len(wells)), np.arange(len(sites)), np.arange(len(channels)),
                                                  indexing="ij"))
        flat = values.reshape(-1, len(STATS))
        plate_number = plate.removeprefix("Plate")
        frames.append(pd.DataFrame({
            "id_code": [f"{experiment}_{plate_number}_{well}" for well in wells[w]],
            "experiment": experiment,
            "plate": int(plate_number) if plate_number.isdigit() else plate,
            "well": wells[w],
            "site": sites[s],
            "channel": c + 1,
            **{name: flat[:, STATS.index(stat)] for name, stat in
               (("mean", "mean"), ("std", "std"), ("median", "p50"), ("min", "min"), ("max", "max"), ("p1", "p1"),
                ("p99", "p99"))},
            "channel_id": np.array(channels, dtype=object)[c],
            "present": present.ravel(),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table as CSV or parquet, as the file's extension says."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise OptionError(f"{path}: a table is written as .csv or .parquet, not {suffix or 'a file without extension'!r}")
    try:
        if suffix == ".csv":
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path, index=False)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write the table: {exc.strerror or exc}") from exc
