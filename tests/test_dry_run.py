"""`--dry-run` plans the whole of RxRx1 from the real competition tables in seconds and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import shared


def test_plan_of_the_whole_rxrx1(tmp_path: Path) -> None:
    kaggle = shared("rxrx1", "kaggle")
    (tmp_path / "images").mkdir()  # metadata only: no images at all
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "converters.cli", "convert", "images", "rxrx1.zarr", "--dataset", "rxrx1",
         "--metadata", str(kaggle), "--dry-run", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["experiments"], plan["plates"], plan["wells"], plan["sites"]) == (51, 204, 62755, 125510)
    assert plan["images"] == 0 and plan["metadata_without_images"]["count"] == 125510
    assert plan["missing_images"]["count"] == 125510 * 6
    assert plan["channels"] == ["w1", "w2", "w3", "w4", "w5", "w6"]
    assert plan["estimated_output_bytes"] > 0
    assert not (tmp_path / "rxrx1.zarr").exists()
    assert elapsed < 60, f"planning took {elapsed:.1f} s"  # seconds, not minutes (includes interpreter start)


def test_dry_run_text(tmp_path: Path) -> None:
    from sources import write_rxrx_source

    write_rxrx_source(tmp_path / "images", {("HUVEC-01", 1): ["B02"]}, size=128, skip=frozenset({"HUVEC-01/Plate1/B02_s2_w6.png"}))
    result = subprocess.run([sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--dry-run",
                             "--dataset", "rxrx1_demo"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 wells, 2 sites, 6 channels" in result.stdout and "missing images: 1" in result.stdout
    assert "nothing written (dry run)" in result.stdout and not (tmp_path / "o.zarr").exists()
