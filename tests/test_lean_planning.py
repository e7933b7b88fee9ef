"""Planning that stays lean at scale (issue 15): a dry run loads no store libraries, the source's files are planned
in path order whatever order it lists them in, a plan's paths are the listing's own (not a copy per plate), and
keys are compared as small integer codes. Memory and time themselves are measured by benchmarks/planning.py.

The sources are the real RxRx1 sample of ../shared/data (images and metadata.csv); the listings and frames are
small ones made here, each checked against what Python's `sorted`, `re` and pandas' `duplicated` say.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import REPO, shared
from converters.layouts.matching import match_names
from converters.sitekeys import repeated
from converters.source import Listing

STORE_LIBRARIES = ["dask", "distributed", "matplotlib", "numcodecs", "obstore", "PIL", "scipy", "torch", "xarray",
                   "zarr"]


def test_a_dry_run_imports_no_store_library(tmp_path: Path) -> None:
    """The CLI's dry run plans the real sample without loading zarr, xarray, dask or the other writers' and readers'
    libraries (they are most of a plan's memory at RxRx1's scale), and the package's readers still load on use."""
    images, metadata = shared("rxrx1", "images"), shared("rxrx1", "metadata.csv")
    code = (
        "import json, sys\n"
        "from converters.cli import main\n"
        f"main(['convert', {str(images)!r}, 'never.zarr', '--dataset', 'rxrx1', '--metadata', {str(metadata)!r},\n"
        "      '--dry-run', '--json'], standalone_mode=False)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({STORE_LIBRARIES!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    *plan, loaded = done.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    assert json.loads("\n".join(plan))["images"] == 100 and not (tmp_path / "never.zarr").exists()

    code = ("import types, converters as pz, converters.convert, converters.export\n"
            "assert callable(pz.convert) and callable(pz.export), 'a module shadows a function'\n"
            "assert not isinstance(pz.convert, types.ModuleType) and not isinstance(pz.export, types.ModuleType)\n"
            "print(pz.open_store.__module__, pz.SiteDataset.__module__, pz.compute_stats.__module__)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["converters.readers", "converters.sites", "converters.measure"]


def test_a_listing_is_in_path_order_whatever_order_the_source_gives() -> None:
    """Files come out sorted by path (as Python sorts them), sizes with their files, across many chunks."""
    rng = np.random.default_rng(15)
    names = [f"{e}/Plate{p}/{w}_s{s}_w{c}.png" for e in ("HUVEC-01", "HUVEC-1", "HUVEC-01-b", "RPE-01")
             for p in (1, 2, 10) for w in ("B02", "B10", "AA02") for s in (1, 2) for c in range(1, 7)]
    names += ["a.png", "a/b.png", "a-b/c.png", "é/x.png", "z"] + [f"many/{i:05d}.png" for i in range(20_000)]
    sizes = {name: int(rng.integers(1, 10**9)) for name in names}
    shuffled = [names[i] for i in rng.permutation(len(names))]
    listing = Listing.of((name, sizes[name]) for name in shuffled)
    expected = sorted(names)
    assert list(listing) == [(name, sizes[name]) for name in expected]
    assert listing.all_names().to_pylist() == expected
    assert max(len(chunk) for chunk in listing.all_names().chunks) == Listing.CHUNK
    assert len(Listing.of([])) == 0 and list(Listing.of([])) == []


def test_a_plans_paths_are_the_listings_own(rxrx1_dir: Path) -> None:
    """Every planned file is the right one for its well, site and channel, and every plate's paths are indices into
    the one column of the source's paths (no copy of them per plate, nor in plan order)."""
    from converters.convert import build_plan
    from converters.options import Options

    plan, _ = build_plan(rxrx1_dir / "images", Options(dataset="rxrx1", metadata=rxrx1_dir / "metadata.csv"))
    files = [(task, file) for plate in plan.plates for task in plate.tasks for file in task.files]
    assert len(files) == plan.n_images == 100
    for task, (site, channel, path) in files:
        assert path.endswith(f"/{task.group.split('/')[1]}/{task.well}_s{site + 1}_w{channel + 1}.png")
        assert (rxrx1_dir / "images" / path).is_file()
    assert all(isinstance(p.tasks.paths, pa.DictionaryArray) for p in plan.plates)
    assert len({p.tasks.paths.dictionary.buffers()[2].address for p in plan.plates}) == 1


@pytest.mark.parametrize("rows", [1_000, 100_000])
def test_repeated_rows_are_those_pandas_finds(rows: int) -> None:
    """`repeated` is `DataFrame.duplicated(keep=False)`, missing values equal, for categorical, integer and text keys;
    five keys of 60,000 values and more overflow int64 as a product and are numbered afresh on the way."""
    rng = np.random.default_rng(rows)
    span = rows if rows > 1_000 else 7  # values per key
    frame = pd.DataFrame({
        "experiment": pd.Categorical(rng.choice(["HUVEC-01", "RPE-01", None], rows)),
        "plate": rng.integers(0, span, rows),
        "well": pd.Series([None if i == 0 else f"B{i:02d}" for i in rng.integers(0, span, rows)], dtype="str"),
        "site": rng.integers(0, span, rows),
        "channel": pd.Categorical(rng.integers(0, span, rows)),
    })
    frame = pd.concat([frame, frame.iloc[::97]], ignore_index=True)  # rows that certainly repeat
    keys = list(frame.columns)
    assert (repeated(frame, keys) == frame.duplicated(keys, keep=False).to_numpy()).all()
    assert repeated(frame, keys).any()
    assert not repeated(frame.iloc[:0], keys).any()


def test_matched_names_give_their_groups_as_codes() -> None:
    """Each named group's values are codes into its values numbered as first met, -1 where an optional group took no
    part, as Python's `re` reads them, for names RE2 matches and for those only `re` does (non-ASCII)."""
    pattern = re.compile(r"(?P<experiment>[^/]+)/Plate(?P<plate>\d+)/(?P<well>[A-Z]+\d+)(?:_s(?P<site>\d))?\.png")
    names = ["HUVEC-01/Plate1/B02_s1.png", "HUVEC-01/Plate1/B02.png", "notes.txt", "HUVEC-01/Plate2/C03_s2.png",
             "HÜVEC/Plate1/B02_s2.png", "RPE-01/Plate10/AA02_s1.png"] * 3
    column = pa.chunked_array([pa.array(names[:7], pa.large_string()), pa.array(names[7:], pa.large_string())])
    kept, groups = match_names(column, pattern)
    matches = [(i, pattern.match(name)) for i, name in enumerate(names)]
    assert kept.tolist() == [i for i, m in matches if m is not None]
    for group, (codes, values) in groups.items():
        read = [m[group] for _, m in matches if m is not None]
        assert [None if c < 0 else values[c] for c in codes.tolist()] == read
        assert values == list(dict.fromkeys(v for v in read if v is not None))
