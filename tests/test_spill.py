"""The images' statistics kept in a temporary file (converters/spill.py): read back as written, NaN where nothing
was written, the client's memory flat as wells are added, the index columns laid out from any row order, and a
full disk named with what to do. Values are random floats (a conversion's are the images' statistics; test_stats.py
checks those end to end)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd

from converters.schema import Controls
from converters.spill import Spill
from converters.stats import STATS, StoreStats, WellStats
from converters.statstore import INDEX_STATS, index_column_names, index_columns

CHANNELS = ("w1", "w2", "w3")
NO_CONTROLS = Controls(none="test")


def empty_stats(wells: dict[str, int], sites: int = 2) -> StoreStats:
    return StoreStats.of(np.dtype(np.uint8), CHANNELS, sites, NO_CONTROLS,
                         {group: np.zeros(n, dtype=bool) for group, n in wells.items()})


def random_well(rng: np.random.Generator, sites: int = 2) -> WellStats:
    return WellStats(rng.random((sites, len(CHANNELS), len(STATS))), np.zeros((len(CHANNELS), 256), dtype=np.int64))


def test_regions_read_back_what_was_written_and_nan_elsewhere() -> None:
    rng = np.random.default_rng(0)
    spill = Spill()
    try:
        first, second = spill.region(5, 2, 3), spill.region(4, 7)
        rows = rng.random((2, 2, 3))
        first.write(1, rows)
        first.write(4, np.full((2, 3), 9.0))
        other = rng.random((4, 7))
        second.write(0, other)
        got = first.read()
        np.testing.assert_array_equal(got[1:3], rows)
        assert (got[4] == 9).all() and np.isnan(got[[0, 3]]).all()
        np.testing.assert_array_equal(second.read(), other)
    finally:
        spill.close()


def test_the_clients_memory_stays_flat_as_wells_are_added() -> None:
    """20,000 wells of 2 sites and 3 channels: 9.6 MB of statistics, which were held in memory."""
    rng = np.random.default_rng(1)
    well = random_well(rng)
    tracemalloc.start()
    try:
        stats = empty_stats({"E/P1": 10_000, "E/P2": 10_000})
        for group in ("E/P1", "E/P2"):
            for i in range(10_000):
                stats.add(group, i, well)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    try:
        assert held < 1_000_000, f"{held:,} bytes held"
        np.testing.assert_array_equal(stats.plates["E/P2"].images.read()[9_999], well.images)
    finally:
        stats.close()


def test_index_columns_follow_the_tables_rows_in_any_order() -> None:
    """Rows of two plates interleaved and reversed, and a plate without statistics (its columns NaN)."""
    rng = np.random.default_rng(2)
    stats = empty_stats({"E/P1": 3, "E/P2": 2})
    wells = {(group, i): random_well(rng) for group, n in (("E/P1", 3), ("E/P2", 2)) for i in range(n)}
    for (group, i), well in wells.items():
        stats.add(group, i, well)
    rows = [(group, i, s) for (group, i) in wells for s in range(2)] + [("E/P3", 0, 0), ("E/P3", 0, 1)]
    order = rng.permutation(len(rows))
    table = pd.DataFrame([rows[k] for k in order], columns=["group", "well_index", "site_index"])
    try:
        columns = dict(index_columns(table, stats))
        assert list(columns) == index_column_names(CHANNELS)
        for stat in INDEX_STATS:
            for c, channel in enumerate(CHANNELS):
                expected = [wells[(g, i)].images[s, c, STATS.index(stat)] if g != "E/P3" else np.nan
                            for g, i, s in table.itertuples(index=False)]
                np.testing.assert_array_equal(columns[f"{stat}_{channel}"], expected)
    finally:
        stats.close()


FULL_DISK = """
import resource, signal
import numpy as np
from converters.errors import StoreError
from converters.spill import Spill

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
spill = Spill()
try:
    spill.region(10_000).write(0, np.zeros(10_000))
except StoreError as error:
    print(error)
"""


def test_a_full_temporary_disk_is_a_store_error_that_says_what_to_do() -> None:
    result = subprocess.run([sys.executable, "-c", FULL_DISK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cannot keep the images' statistics in a temporary file there" in result.stdout
    assert "TMPDIR" in result.stdout and "re-run the same command to resume" in result.stdout
