"""Sites as integers: the (experiment, plate, well, site) of every image and metadata row as one int64 key.

With keys, images and metadata of millions of sites are joined, grouped into plates and put in plate
order by a few numpy operations over whole columns, not by pandas work per plate or a Python object per
row. Each key part is a position in a vocabulary of the values both sides hold, sorted as the plan
orders them (experiments and plates by value, wells as they sit on the plate, sites by number), so
sorting keys sorts sites in plan order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from converters.wells import row_index, split_well


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array, by sorting (numpy 2's hashing `np.unique` is 40x slower on
    millions of keys)."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered


def first_of_runs(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins in `values` (e.g. each well's first file in files sorted by well)."""
    return np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]])) if len(values) else np.zeros(0, np.int64)


def not_in(values: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The values of a sorted distinct array that are not in another one."""
    at = np.searchsorted(other, values)
    return values[(at == len(other)) | (other[np.minimum(at, len(other) - 1)] != values)] if len(other) else values


def codes_of(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Each value's code (-1 for missing) and the distinct values: a categorical column's own codes (small ints, not
    a new int64 per row), else `pd.factorize`'s."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.cat.remove_unused_categories()
        return values.cat.codes.to_numpy(), values.cat.categories.tolist()
    codes, uniques = pd.factorize(values)
    return codes, uniques.tolist()


def repeated(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Which rows share their `keys` with another row (`frame.duplicated(keys, keep=False)`, missing values equal),
    found from each key column's codes, which takes a fraction of the memory pandas takes on millions of rows."""
    group = np.zeros(len(frame), dtype=np.int64)
    span = 1  # group < span
    for key in keys:
        codes, values = codes_of(frame[key])
        if span * (len(values) + 1) >= 2**62:  # numbered 0, 1, ... again, so that products stay within int64
            ordered = distinct(group)
            group, span = np.searchsorted(ordered, group), len(ordered)
        group *= len(values) + 1
        group += codes
        group += 1  # missing (-1) is a value of its own
        span *= len(values) + 1
    ordered = np.sort(group)
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    return np.isin(group, twice) if len(twice) else np.zeros(len(group), dtype=bool)


def well_position(well: str) -> tuple[int, int]:
    """Where a well sits on the plate: (row, column), for sorting wells row by row."""
    row, column = split_well(well)
    return row_index(row), column


class Vocabulary:
    """The distinct values of some columns, sorted (by `order` if given): each value's position is its code."""

    def __init__(self, columns: list[pd.Series], order: Callable[[Any], Any] | None = None) -> None:
        self.values = sorted(set().union(*(pd.factorize(column)[1].tolist() for column in columns)), key=order)
        self.position = {value: i for i, value in enumerate(self.values)}

    def __len__(self) -> int:
        return max(len(self.values), 1)

    def codes(self, column: pd.Series) -> np.ndarray:
        """The code of each value of a column (one of those the vocabulary was made of)."""
        codes, uniques = pd.factorize(column)
        lookup = np.array([self.position[u] for u in uniques.tolist()], dtype=np.int64)
        return lookup[codes] if len(lookup) else codes.astype(np.int64)


@dataclass
class SiteKeys:
    """The sites of images and of metadata rows as keys `(plate * n_wells + well) * n_sites + site`, where plate,
    well and site are positions in `plates` ((experiment, plate) pairs), `wells` and `sites`."""

    plates: list[tuple[str, Any]]
    wells: list[str]
    sites: list[int]
    images: np.ndarray  # one key per images row
    rows: np.ndarray  # one key per metadata row

    @classmethod
    def of(cls, images: pd.DataFrame, rows: pd.DataFrame) -> SiteKeys:
        """The keys of images and rows; each key is built in place a column at a time, so that millions of rows
        take a few int64 columns at once."""
        frames = (images, rows)
        experiments = Vocabulary([f["experiment"] for f in frames])
        plate_values = Vocabulary([f["plate"] for f in frames])
        pair = [experiments.codes(f["experiment"]) * len(plate_values) + plate_values.codes(f["plate"]) for f in frames]
        pairs = distinct(np.concatenate(pair))
        wells = Vocabulary([f["well"] for f in frames], well_position)
        sites = Vocabulary([f["site"] for f in frames])
        keys = []
        for frame, key in zip(frames, pair):
            key = np.searchsorted(pairs, key)
            key *= len(wells)
            key += wells.codes(frame["well"])
            key *= len(sites)
            key += sites.codes(frame["site"])
            keys.append(key)
        plates = [(str(experiments.values[p // len(plate_values)]), plate_values.values[p % len(plate_values)])
                  for p in pairs.tolist()]
        return cls(plates, wells.values, sites.values, keys[0], keys[1])

    @property
    def n_wells(self) -> int:
        return max(len(self.wells), 1)

    @property
    def n_sites(self) -> int:
        return max(len(self.sites), 1)

    def plate_of(self, keys: np.ndarray) -> np.ndarray:
        return keys // (self.n_wells * self.n_sites)

    def well_of(self, keys: np.ndarray) -> np.ndarray:
        """The plate-and-well part of keys, `plate * n_wells + well`."""
        return keys // self.n_sites

    def names(self, keys: np.ndarray, plate_name: Callable[[Any], str], limit: int) -> list[str]:
        """`experiment/Plate1/B02 site 1` of the first `limit` keys in the order of their values (wells by name)."""
        by_name = np.argsort(np.argsort(np.array(self.wells, dtype=object))) if self.wells else np.zeros(1, np.int64)
        well = self.well_of(keys) % self.n_wells
        first = np.lexsort((keys % self.n_sites, by_name[well], self.plate_of(keys)))[:limit]
        out = []
        for key in keys[first].tolist():
            (experiment, plate), well_name = self.plates[key // (self.n_wells * self.n_sites)], self.wells[key // self.n_sites % self.n_wells]
            out.append(f"{experiment}/{plate_name(plate)}/{well_name} site {self.sites[key % self.n_sites]}")
        return out
