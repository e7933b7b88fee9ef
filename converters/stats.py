"""Pixel statistics of every image, and pooled per plate, experiment and store, from one pass over each well.

The worker that decoded a well computes them from the block it holds (`well_stats`, a step of
`write.finish_well`); `platezarr stats` feeds wells read back from a store to the same function.

- Per image (well, site, channel): `STATS` = count, sum, sum of squares, mean, std (population,
  ddof=0), min, max and the 1st, 50th and 99th percentiles, exact: each image's histogram over every
  value of its dtype (256 or 65,536 bins) gives them, percentiles by numpy's default ("linear") method.
  A missing image gives NaN.
- Pooled (`Pool`): mean and std from the summed counts, sums and sums of squares (float64), min and max
  exact, percentiles from merged histograms. Those are compact, so that a well's completion record stays
  small: `BINS_PER_OCTAVE` bins per octave above 255 and one bin per value below 256, i.e. 256 bins for
  8-bit images (every value its own bin: pooled percentiles are exact) and 1,280 for 16-bit ones
  (a bin spans at most 1/128 of its values: pooled percentiles are within 0.8% of the exact ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from converters.spill import Region, Spill

if TYPE_CHECKING:
    from converters.plan import Plan
    from converters.schema import Controls

STATS = ("count", "sum", "sumsq", "mean", "std", "min", "max", "p1", "p50", "p99")
COUNT, SUM, SUMSQ, MEAN, STD, MIN, MAX = range(7)
PERCENTILES = (1.0, 50.0, 99.0)
POOLS = ("all", "negative_controls")
EXACT_BELOW = 256  # values below this have a histogram bin each
BINS_PER_OCTAVE = 128


def bin_lows(dtype: np.dtype) -> np.ndarray:
    """The lowest value of each compact histogram bin of `dtype`: 0..255, then 128 bins per octave."""
    top = 1 << (8 * np.dtype(dtype).itemsize)
    lows = [np.arange(min(top, EXACT_BELOW), dtype=np.int64)]
    shift = 1
    while EXACT_BELOW << (shift - 1) < top:
        lows.append(np.arange(BINS_PER_OCTAVE, 2 * BINS_PER_OCTAVE, dtype=np.int64) << shift)
        shift += 1
    return np.concatenate(lows)


def bin_widths(lows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """How many values each compact bin spans (1 below 256)."""
    return np.diff(np.append(lows, 1 << (8 * np.dtype(dtype).itemsize)))


def percentiles(hist: np.ndarray, lows: np.ndarray, widths: np.ndarray,
                qs: tuple[float, ...] = PERCENTILES) -> np.ndarray:
    """(n, len(qs)) percentiles `qs` of each row of `hist` (n, bins), as numpy's "linear" method computes them
    on the pixels; a value inside a bin wider than 1 is placed evenly across it. NaN for an empty row.

    All rows are searched at once: row i's cumulative counts are shifted past row i-1's, so the rows make one
    increasing sequence."""
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1] if cum.shape[1] else np.zeros(len(cum), dtype=np.int64)
    virtual = np.maximum(n - 1, 0)[:, None] * (np.array(qs) / 100)
    below = np.floor(virtual)
    ranks = np.concatenate([below, np.minimum(below + 1, np.maximum(n - 1, 0)[:, None])], axis=1).astype(np.int64)
    shift = np.concatenate([[0], np.cumsum(n + 1)[:-1]])
    found = np.searchsorted((cum + shift[:, None]).ravel(), (ranks + shift[:, None]).ravel(), side="right")
    bins = np.minimum(found.reshape(ranks.shape) % max(cum.shape[1], 1), max(cum.shape[1] - 1, 0))  # an empty row's: any
    rows = np.arange(len(cum))[:, None]
    counts = np.maximum(hist[rows, bins], 1) if hist.size else np.ones_like(bins)
    start = cum[rows, bins] - counts if hist.size else np.zeros_like(bins)
    values = (lows[bins] + ((ranks - start) * widths[bins]) // counts).astype(np.float64)
    a, b = values[:, : len(qs)], values[:, len(qs):]
    t = virtual - below
    out = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's _lerp
    out[n == 0] = np.nan
    return out


def summarize(count: np.ndarray, total: np.ndarray, squares: np.ndarray, low: np.ndarray, high: np.ndarray,
              hist: np.ndarray, lows: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """(n, len(STATS)) statistics from n rows of counts, sums, sums of squares, minima, maxima and histograms."""
    out = np.full((len(count), len(STATS)), np.nan)
    out[:, COUNT], out[:, SUM], out[:, SUMSQ], out[:, MIN], out[:, MAX] = count, total, squares, low, high
    filled = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        out[:, MEAN] = np.where(filled, mean, np.nan)
        out[:, STD] = np.where(filled, np.sqrt(np.maximum(squares / count - mean * mean, 0)), np.nan)
    out[:, MAX + 1:] = percentiles(hist, lows, widths)
    out[~filled, MIN:] = np.nan
    return out


@dataclass(frozen=True)
class WellStats:
    """One well's statistics: `images` (site, channel, len(STATS)) float64, NaN where an image is missing, and
    `histogram` (channel, bins) int64, the compact histogram of its present pixels over all sites."""

    images: np.ndarray
    histogram: np.ndarray

    def record(self) -> dict[str, Any]:
        """As JSON-able data for the well's completion record: NaN as null, each channel's histogram as its first
        non-empty bin followed by the counts up to its last one."""
        images = [[[None if math.isnan(v) else v for v in image] for image in site] for site in self.images.tolist()]
        hist = []
        for row in self.histogram:
            used = np.flatnonzero(row)
            hist.append([int(used[0]), *row[used[0]: used[-1] + 1].tolist()] if len(used) else [])
        return {"images": images, "bins": self.histogram.shape[1], "histogram": hist}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> WellStats:
        images = np.array(record["images"], dtype=np.float64)  # null → NaN
        histogram = np.zeros((images.shape[1], int(record["bins"])), dtype=np.int64)
        for row, counts in zip(histogram, record["histogram"]):
            if counts:
                row[counts[0]: counts[0] + len(counts) - 1] = counts[1:]
        return cls(images, histogram)


def well_stats(block: np.ndarray, present: np.ndarray) -> WellStats:
    """Statistics of every present image of a (site, channel, y, x) block of uint8 or uint16 pixels."""
    sites, channels = block.shape[:2]
    levels = 1 << (8 * block.dtype.itemsize)
    where = np.argwhere(present)
    full = np.zeros((len(where), levels), dtype=np.int64)
    for row, (s, c) in zip(full, where):
        row[:] = image_histogram(block[s, c], levels)
    values = np.arange(levels, dtype=np.int64)
    used = full > 0
    low = np.where(used.any(axis=1), used.argmax(axis=1), 0)
    high = levels - 1 - used[:, ::-1].argmax(axis=1)
    count, total, squares = full.sum(axis=1), full @ values, full @ (values * values)  # exact in int64
    stats = summarize(count.astype(np.float64), total.astype(np.float64), squares.astype(np.float64), low, high,
                      full, values, np.ones(levels, dtype=np.int64))
    stats[:, STD] = [_exact_std(int(n), int(s), int(q)) for n, s, q in zip(count, total, squares)]
    images = np.full((sites, channels, len(STATS)), np.nan)
    images[where[:, 0], where[:, 1]] = stats
    lows = bin_lows(block.dtype)
    if len(lows) == levels or not len(full):  # 8-bit: a bin per value
        compact = full[:, : len(lows)]
    else:
        compact = np.add.reduceat(full, lows, axis=1)
    histogram = np.zeros((channels, len(lows)), dtype=np.int64)
    np.add.at(histogram, where[:, 1], compact)
    return WellStats(images, histogram)


def image_histogram(image: np.ndarray, levels: int) -> np.ndarray:
    """How many pixels of a 2-D image hold each of its dtype's `levels` values. Pillow counts 8-bit images
    about twice as fast as np.bincount (which first casts every pixel to intp), and this runs on every pixel
    of a conversion; np.bincount counts 16-bit ones."""
    if levels == 256:
        height, width = image.shape
        picture = Image.frombuffer("L", (width, height), np.ascontiguousarray(image), "raw", "L", 0, 1)
        return np.array(picture.histogram(), dtype=np.int64)
    return np.bincount(image.reshape(-1), minlength=levels)


def _exact_std(n: int, total: int, squares: int) -> float:
    """The population standard deviation from exact integer sums: sqrt(n·Σx² − (Σx)²) / n, no cancellation."""
    return math.sqrt(n * squares - total * total) / n if n else math.nan


@dataclass
class Pool:
    """Pooled statistics of a set of images, per channel: sums, extremes and a merged compact histogram."""

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    low: np.ndarray
    high: np.ndarray
    histogram: np.ndarray  # (channel, bins) int64

    @classmethod
    def empty(cls, channels: int, bins: int) -> Pool:
        zeros = np.zeros(channels)
        return cls(zeros.copy(), zeros.copy(), zeros.copy(), np.full(channels, np.nan), np.full(channels, np.nan),
                   np.zeros((channels, bins), dtype=np.int64))

    def add(self, stats: WellStats) -> None:
        """Pool a well's images (its missing images, NaN, count for nothing)."""
        images = stats.images
        self.count += np.nansum(images[:, :, COUNT], axis=0)
        self.total += np.nansum(images[:, :, SUM], axis=0)
        self.squares += np.nansum(images[:, :, SUMSQ], axis=0)
        self.low = np.fmin(self.low, np.fmin.reduce(images[:, :, MIN], axis=0))
        self.high = np.fmax(self.high, np.fmax.reduce(images[:, :, MAX], axis=0))
        self.histogram += stats.histogram

    def merge(self, other: Pool) -> None:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.low, self.high = np.fmin(self.low, other.low), np.fmax(self.high, other.high)
        self.histogram += other.histogram

    def summary(self, dtype: np.dtype) -> np.ndarray:
        """(channel, len(STATS)): exact mean and std from the pooled sums, percentiles from the merged histogram."""
        lows = bin_lows(dtype)
        return summarize(self.count, self.total, self.squares, self.low, self.high, self.histogram, lows,
                         bin_widths(lows, dtype))


@dataclass
class PlateStats:
    """A plate's per-image statistics, filled in as its wells finish, and its pools over all images and over
    the negative-control wells."""

    images: Region  # (well, site, channel, len(STATS)) float64 in a temporary file, NaN until a well is added
    controls: np.ndarray  # (well,) bool
    pools: dict[str, Pool]

    @classmethod
    def empty(cls, spill: Spill, wells: int, sites: int, channels: int, dtype: np.dtype,
              controls: np.ndarray) -> PlateStats:
        bins = len(bin_lows(dtype))
        return cls(spill.region(wells, sites, channels, len(STATS)), controls,
                   {name: Pool.empty(channels, bins) for name in POOLS})

    def add(self, well_index: int, stats: WellStats) -> None:
        self.images.write(well_index, stats.images)
        self.pools["all"].add(stats)
        if self.controls[well_index]:
            self.pools["negative_controls"].add(stats)


@dataclass
class StoreStats:
    """Statistics of every plate of a store as its wells report them; wells reported without statistics (a
    conversion resumed from an earlier platezarr's records) are counted in `unmeasured`. The images' statistics
    are kept in `spill`, a temporary file that `close` removes; the pools, a few KB a plate, in memory."""

    dtype: np.dtype
    channels: tuple[str, ...]
    controls: Controls
    plates: dict[str, PlateStats]
    spill: Spill
    unmeasured: set[tuple[str, int]] = field(default_factory=set)

    @classmethod
    def of(cls, dtype: np.dtype, channels: tuple[str, ...], sites: int, controls: Controls,
           control_wells: dict[str, np.ndarray]) -> StoreStats:
        """Empty statistics of plates `control_wells` (group → which of its wells are negative controls)."""
        spill = Spill()
        plates = {group: PlateStats.empty(spill, len(mask), sites, len(channels), dtype, mask)
                  for group, mask in control_wells.items()}
        return cls(np.dtype(dtype), channels, controls, plates, spill)

    @classmethod
    def for_plan(cls, plan: Plan) -> StoreStats:
        """Empty statistics of a conversion's plates, their controls taken from the metadata table."""
        controls, masks = plan.schema.controls, {}
        for plate in plan.plates:
            table = plate.metadata.drop_duplicates("well")
            found = controls.column in table
            marked = set(table["well"][control_mask(table[controls.column].to_numpy(), controls)]) if found else set()
            masks[plate.group] = np.array([w in marked for w in plate.wells], dtype=bool)
        return cls.of(plan.dtype, plan.schema.channel_ids, len(plan.schema.sites), controls, masks)

    def add(self, group: str, well_index: int, stats: WellStats | None) -> None:
        if stats is None:
            self.unmeasured.add((group, well_index))
        else:
            self.plates[group].add(well_index, stats)

    def pooled(self, groups: list[str]) -> dict[str, Pool]:
        """The pools of the plates `groups` merged: an experiment's, or the whole store's."""
        channels, bins = len(self.channels), len(bin_lows(self.dtype))
        merged = {name: Pool.empty(channels, bins) for name in POOLS}
        for group in groups:
            for name, pool in self.plates[group].pools.items():
                merged[name].merge(pool)
        return merged

    def close(self) -> None:
        """Remove the temporary file of the images' statistics."""
        self.spill.close()


def control_mask(values: np.ndarray, controls: Controls) -> np.ndarray:
    """Which of a per-well column's `values` mark a negative control."""
    if not controls.column:
        return np.zeros(len(values), dtype=bool)
    return np.isin(np.array([str(v) for v in values], dtype=object), list(controls.values))
