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


def well_position(well: str) -> tuple[int, int]:
    """Where a well sits on the plate: (row, column), for sorting wells row by row."""
    row, column = split_well(well)
    return row_index(row), column


def shared_codes(columns: list[pd.Series], order: Callable[[Any], Any] | None = None) -> tuple[list, list[np.ndarray]]:
    """The distinct values of all `columns`, sorted (by `order` if given), and each column as positions in them."""
    factorized = [pd.factorize(column) for column in columns]
    values = sorted(set().union(*(uniques.tolist() for _, uniques in factorized)), key=order)
    position = {value: i for i, value in enumerate(values)}
    coded = []
    for codes, uniques in factorized:
        lookup = np.array([position[u] for u in uniques.tolist()], dtype=np.int64)
        coded.append(lookup[codes] if len(lookup) else codes.astype(np.int64))
    return values, coded


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
        experiments, (image_e, row_e) = shared_codes([images["experiment"], rows["experiment"]])
        plate_values, (image_p, row_p) = shared_codes([images["plate"], rows["plate"]])
        image_pair, row_pair = image_e * len(plate_values) + image_p, row_e * len(plate_values) + row_p
        pairs = distinct(np.concatenate([image_pair, row_pair]))
        plates = [(str(experiments[p // len(plate_values)]), plate_values[p % len(plate_values)]) for p in pairs.tolist()]
        wells, (image_w, row_w) = shared_codes([images["well"], rows["well"]], well_position)
        sites, (image_s, row_s) = shared_codes([images["site"], rows["site"]])
        n_wells, n_sites = max(len(wells), 1), max(len(sites), 1)

        def keys(pair: np.ndarray, well: np.ndarray, site: np.ndarray) -> np.ndarray:
            return (np.searchsorted(pairs, pair) * n_wells + well) * n_sites + site

        return cls(plates, wells, sites, keys(image_pair, image_w, image_s), keys(row_pair, row_w, row_s))

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
