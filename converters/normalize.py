"""Normalization and crops of sites for the training readers (`SiteDataset`, streams of sites).

Normalized sites are float32 `(x - mean) / std` per channel, with the statistics of one scope, as the
field normalizes: each image by its own (`sample`: instance norm, OpenPhenom's), or by the pooled
pixels of its plate (`plate`), its experiment (`experiment`), its plate's negative-control wells
(`plate_controls`, as JUMP profiling normalizes) or the whole store (`global`, rxrx1-utils'). The
statistics are those the conversion stored (converters/statstore.py), so no pixel is read for them.
A crop is a square of the site, at a place drawn from (seed, index) alone, or its centre.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from converters.errors import OptionError
from converters.statstore import index_column, pooled_array, read_pooled

SCOPES = ("sample", "plate", "experiment", "plate_controls", "global")
CROP_MODES = ("random", "center")


@dataclass(frozen=True)
class SiteTransform:
    """Crop, then normalize, the (channel, y, x) pixels of row `index` of a reader's table of sites.

    `mean` and `std` (rows, channels) are the chosen scope's statistics of each row's channels, None when
    not normalizing; a missing image (NaN statistics) stays 0, and a channel with std 0 is only centred."""

    mean: np.ndarray | None
    std: np.ndarray | None
    crop: int | None = None
    crop_mode: str = "random"
    seed: int = 0

    @classmethod
    def for_table(cls, url: str | os.PathLike[str], table: pd.DataFrame, channels: Sequence[str],
                  image_shape: Sequence[int], normalize: str | None = None, crop: int | None = None,
                  crop_mode: str = "random", seed: int = 0,
                  storage_options: dict[str, Any] | None = None) -> SiteTransform:
        """The transform of a reader of `table` (the store's index rows it reads) and `channels` (ids, in the
        order it returns them), checking every option against the store."""
        if crop_mode not in CROP_MODES:
            raise OptionError(f"crop_mode must be one of {', '.join(CROP_MODES)}, not {crop_mode!r}")
        if crop is not None and not 0 < crop <= min(image_shape):
            raise OptionError(f"crop {crop} does not fit in the sites, {image_shape[0]}x{image_shape[1]} pixels")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise OptionError(f"seed must be an integer >= 0, not {seed!r}")
        mean = std = None
        if normalize is not None:
            mean, std = scope_stats(url, table, channels, normalize, storage_options)
        return cls(mean, std, crop, crop_mode, int(seed))

    def window(self, index: int, shape: Sequence[int]) -> tuple[slice, slice]:
        """The (y, x) slices of row `index`'s crop in a site of `shape` (y, x): the same for the same seed and index."""
        if self.crop is None:
            return slice(None), slice(None)
        height, width = shape[-2], shape[-1]
        if self.crop_mode == "center":
            y, x = (height - self.crop) // 2, (width - self.crop) // 2
        else:
            rng = np.random.default_rng([self.seed, index])
            y, x = (int(v) for v in rng.integers(0, [height - self.crop + 1, width - self.crop + 1]))
        return slice(y, y + self.crop), slice(x, x + self.crop)

    def __call__(self, pixels: np.ndarray, index: int) -> np.ndarray:
        y, x = self.window(index, pixels.shape)
        site = pixels[..., y, x]
        if self.mean is None or self.std is None:
            return np.ascontiguousarray(site)
        mean, std = self.mean[index][:, None, None], self.std[index][:, None, None]
        return (site.astype(np.float32) - mean) / std


def scope_stats(url: str | os.PathLike[str], table: pd.DataFrame, channels: Sequence[str], scope: str,
                storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, channels) float32 means and stds of `scope` for each row of `table`, from the store's statistics."""
    if scope not in SCOPES:
        raise OptionError(f"normalize must be one of {', '.join(SCOPES)} or None, not {scope!r}")
    if scope == "sample":
        columns = [index_column(stat, c) for stat in ("mean", "std") for c in channels]
        if any(c not in table for c in columns):
            raise OptionError(f"{url}: no pixel statistics in this store; add them with `platezarr stats {url}`")
        mean = table[columns[: len(channels)]].to_numpy(np.float64)
        std = table[columns[len(channels):]].to_numpy(np.float64)
        missing = np.isnan(mean) | np.isnan(std)
        mean, std = np.where(missing, 0.0, mean), np.where(missing, 1.0, std)
    else:
        mean, std = _pooled_rows(url, table, channels, scope, storage_options)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _pooled_rows(url: str | os.PathLike[str], table: pd.DataFrame, channels: Sequence[str], scope: str,
                 storage_options: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's pooled mean and std: of its plate, experiment, plate's negative controls, or the whole store."""
    from converters.readers import open_root

    root, _, attrs = open_root(url, storage_options)
    groups = table["group"].astype(str)
    keys = {"plate": groups, "plate_controls": groups, "experiment": groups.str.split("/").str[0],
            "global": pd.Series("", index=table.index)}[scope]
    codes, names = pd.factorize(keys)
    pool = "negative_controls" if scope == "plate_controls" else "all"
    stored = [c["id"] for c in attrs["channels"]]
    picked = [stored.index(c) for c in channels]
    means, stds = np.zeros((len(names), len(channels))), np.zeros((len(names), len(channels)))
    for k, name in enumerate(names):
        pooled = read_pooled(root, name)
        if pooled is None:
            raise OptionError(f"{url}: no pixel statistics in this store; add them with `platezarr stats {url}`")
        means[k], stds[k] = pooled_array(pooled, pool, "mean")[picked], pooled_array(pooled, pool, "std")[picked]
        if np.isnan(means[k]).any():
            what = f"plate {name}'s negative controls" if pool != "all" else (name or "the store")
            controls = pooled.get("negative_control_wells", {})
            why = f" (negative controls: {controls})" if pool != "all" else ""
            raise OptionError(f"{url}: {what} have no pixels to normalize {scope!r} with{why}")
    return means[codes], stds[codes]
