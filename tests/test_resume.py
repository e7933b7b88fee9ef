"""Kill the real CLI with SIGKILL at several points, re-run it, and check that it resumed exactly.

The source is 30 plates x 4 wells of 128x128 tiles cut from the real RxRx1 PNGs (tests/sources.py),
converted as the `rxrx1_demo` dataset (the RxRx1 layout at 128x128) with one worker, so each stage
lasts long enough to be caught by polling the output folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import converters as pz
from sources import full_plate_wells, small_rxrx1, write_metadata, write_rxrx_source

PLATES = {(f"HUVEC-{e:02d}", p): ["B02", "B03", "C02", "C03"] for e in range(1, 11) for p in (1, 2, 3)}
N_WELLS = sum(len(w) for w in PLATES.values())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("resume")
    written = write_rxrx_source(root / "images", PLATES, size=128)
    write_metadata(root / "metadata.csv", PLATES)
    return root, written


def command(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "converters.cli", "convert", str(root / "images"), str(out),
            "--dataset", "rxrx1_demo", "--metadata", str(root / "metadata.csv"), "--workers", "1", "--no-progress", "--json"]


def records(out: Path) -> list[Path]:
    return sorted((out / "_platezarr" / "wells").rglob("*.json")) if (out / "_platezarr" / "wells").exists() else []


def in_finalize(out: Path) -> bool:
    return any(out.glob("*/*/present/c/*")) or (out / "index" / "zarr.json").exists()


def kill_when(cmd: list[str], condition: Callable[[], bool], timeout: float = 120) -> bool:
    """Start the CLI, SIGKILL it as soon as `condition()` holds; False if it finished first."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                reached = condition()
            except FileNotFoundError:  # a .partial file renamed while the folder was listed
                reached = False
            if reached:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.001)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def shard_stamps(out: Path, recorded: list[Path]) -> dict[Path, tuple[int, int]]:
    """(inode, mtime) of the shard of every recorded well: unchanged if the resumed run kept it."""
    stamps = {}
    for record in recorded:
        group = record.parent.relative_to(out / "_platezarr" / "wells")
        shard = out / group / "images" / f"c.{record.stem}.0.0.0.0"
        stat = shard.stat()
        stamps[shard] = (stat.st_ino, stat.st_mtime_ns)
    return stamps


def check_store(out: Path, written: dict[str, np.ndarray], root: Path) -> None:
    """Every pixel and every metadata value, through plain zarr and xarray."""
    store = zarr.open_group(out, mode="r")
    table = {r["site_id"]: r for r in _rows(root)}
    for (experiment, plate), wells in PLATES.items():
        group = f"{experiment}/Plate{plate}"
        images = store[f"{group}/images"][...]
        ds = xr.open_zarr(out, group=group)
        assert ds["well"].values.tolist() == wells
        for w, well in enumerate(wells):
            for s in (1, 2):
                row = table[f"{experiment}_{plate}_{well}_{s}"]
                assert ds["site_id"].values[w, s - 1] == row["site_id"]
                assert ds["sirna_id"].values[w] == int(row["sirna_id"]) and ds["well_type"].values[w] == row["well_type"]
                for c in range(6):
                    assert np.array_equal(images[w, s - 1, c], written[f"{group}/{well}_s{s}_w{c + 1}.png"])
    assert store["index"]["site_id"].shape == (N_WELLS * 2,)


def _rows(root: Path) -> list[dict]:
    lines = (root / "metadata.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


POINTS = {
    "planning": lambda out: True,  # killed right away: during start-up and planning, before any write
    "template": lambda out: (out / "zarr.json").exists() and not (out / "_platezarr" / "template.json").exists(),
    "first wells": lambda out: len(records(out)) >= 1,
    "mid-way": lambda out: len(records(out)) >= N_WELLS // 2,
    "last well": lambda out: len(records(out)) >= N_WELLS - 1 and not in_finalize(out),
    "consolidation": in_finalize,
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_then_resume(source, tmp_path: Path, point: str) -> None:
    root, written = source
    out = tmp_path / "out.zarr"
    killed = kill_when(command(root, out), lambda: POINTS[point](out))
    assert killed, f"the conversion finished before the {point!r} point was reached"
    if out.exists() and (out / "zarr.json").exists():
        with pytest.raises(pz.StoreError, match="did not finish.*re-run"):
            pz.open_sites(out)  # never reads as complete after a kill
    recorded = records(out)
    stamps = shard_stamps(out, recorded)
    rerun = subprocess.run(command(root, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed_wells"] == len(recorded)
    for shard, stamp in stamps.items():  # no finished well is written twice
        stat = shard.stat()
        assert (stat.st_ino, stat.st_mtime_ns) == stamp, shard
    check_store(out, written, root)
    assert not (out / "_platezarr").exists()
    assert not list(out.rglob("*.partial")), "a shard write cut by the kill left its partial file"


def test_a_different_plan_is_refused_and_overwrite_starts_over(source, tmp_path: Path) -> None:
    root, _ = source
    out = tmp_path / "out.zarr"
    assert kill_when(command(root, out), lambda: len(records(out)) >= 3)
    other = [*command(root, out)]
    other[other.index("--metadata") : other.index("--metadata") + 2] = []
    refused = subprocess.run(other, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "different plan" in refused.stderr and "metadata" in refused.stderr
    assert len(records(out)) >= 3  # nothing was touched
    fresh = subprocess.run([*other, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["resumed_wells"] == 0


def test_a_resumed_run_does_not_hold_every_finished_wells_record(tmp_path: Path) -> None:
    """A well's record holds its statistics with its histogram: 61 KB for 6 channels of 16-bit images, gigabytes for
    the millions of wells of a half-converted RxRx3 if all were held at once. 100 wells of 16-bit tiles cut from the
    real RxRx1 PNGs; the last well's image is corrupt, so a one-worker run stops with records of the wells before it;
    the image mended, the run resumes in this process, and when writing starts, what converters/stats.py allocated
    and still holds stays under 1 MB (holding the records: about 6 MB)."""
    wells = full_plate_wells()[:100]
    written = write_rxrx_source(tmp_path / "src", {("HUVEC-01", 1): wells}, sites=(1,), size=16,
                                dtype=np.dtype("uint16"))
    bad = tmp_path / "src" / f"HUVEC-01/Plate1/{wells[-1]}_s1_w1.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not a png")
    with pytest.raises(pz.PlatezarrError):
        pz.convert(tmp_path / "src", tmp_path / "o.zarr", small_rxrx1(16), workers=1)
    finished = len(records(tmp_path / "o.zarr"))
    assert finished > 50
    bad.write_bytes(good)
    held: list[int] = []

    def at_write(event: pz.Progress) -> None:
        if event.stage == "write" and not held:
            traces = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*converters/stats.py")])
            held.append(sum(stat.size for stat in traces.statistics("filename")))

    tracemalloc.start()
    try:
        summary = pz.convert(tmp_path / "src", tmp_path / "o.zarr", small_rxrx1(16), workers=1, progress=at_write)
    finally:
        tracemalloc.stop()
    assert summary.extra["resumed_wells"] == finished
    assert held and held[0] < 1_000_000, f"{held[0]:,} bytes of statistics held"
    images = xr.open_zarr(tmp_path / "o.zarr", group="HUVEC-01/Plate1")["images"]
    np.testing.assert_array_equal(images.sel(well=wells[-1], site=1, channel="w1").values,
                                  written[f"HUVEC-01/Plate1/{wells[-1]}_s1_w1.png"])
