"""A real dask.distributed LocalCluster (2 worker processes) that loses a worker, or its scheduler, mid-run.

The source is 4 plates of 128x128 tiles of the real RxRx1 PNGs (tests/sources.py). Whatever happens, the
conversion either finishes or stops with a clear error and resumes on a re-run, and every pixel is exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sources import write_rxrx_source

distributed = pytest.importorskip("distributed")

PLATES = {("HUVEC-01", p): [f"{r}{c:02d}" for r in "BCDE" for c in range(2, 12)] for p in (1, 2, 3, 4)}


@pytest.fixture
def source(tmp_path: Path) -> dict[str, np.ndarray]:
    return write_rxrx_source(tmp_path / "images", PLATES, size=128)


def start(tmp_path: Path, scheduler: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--dataset",
                             "rxrx1_demo", "--no-progress", "--scheduler", scheduler],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"PLATEZARR_SCHEDULER_TIMEOUT": "5"})


def wait_for_records(out: Path, n: int, process: subprocess.Popen, seconds: float = 120) -> None:
    """Until `n` wells are recorded as written (the run is under way), or fail if it ended first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(list((out / "_platezarr" / "wells").rglob("*.json"))) >= n:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} wells written in {seconds} s")


def check_pixels(out: Path, written: dict[str, np.ndarray]) -> None:
    """Every source image, through plain xarray, at its well, site and channel."""
    plates = {}
    for rel, pixels in written.items():
        experiment, plate, name = rel.split("/")
        well, site, channel = name.removesuffix(".png").split("_")
        if plate not in plates:
            plates[plate] = xr.open_zarr(out, group=f"{experiment}/{plate}").load()
        ds = plates[plate]
        np.testing.assert_array_equal(ds["images"].sel(well=well, site=int(site[1:]), channel=channel).values, pixels)
        assert ds["present"].sel(well=well, site=int(site[1:]), channel=channel)


def rerun(tmp_path: Path, scheduler: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--dataset",
                           "rxrx1_demo", "--no-progress", "--scheduler", scheduler],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_worker_killed_mid_run(tmp_path: Path, source: dict[str, np.ndarray]) -> None:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
        run = start(tmp_path, cluster.scheduler_address)
        wait_for_records(tmp_path / "o.zarr", 5, run)
        os.kill(pids[0], signal.SIGKILL)
        out, err = run.communicate(timeout=300)
        if run.returncode != 0:  # a clear error, then the same command resumes
            assert run.returncode == 1 and "Traceback" not in err and "re-run" in err, err
            again = rerun(tmp_path, cluster.scheduler_address)
            assert again.returncode == 0, again.stderr
    check_pixels(tmp_path / "o.zarr", source)


def test_the_scheduler_going_away_mid_run(tmp_path: Path, source: dict[str, np.ndarray]) -> None:
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    run = start(tmp_path, cluster.scheduler_address)
    wait_for_records(tmp_path / "o.zarr", 5, run)
    cluster.close()
    started = time.monotonic()
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1 and "Traceback" not in err, err
    assert "re-run" in err and time.monotonic() - started < 120, err
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as again:
        result = rerun(tmp_path, again.scheduler_address)
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout
    check_pixels(tmp_path / "o.zarr", source)
