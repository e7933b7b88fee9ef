"""A real dask.distributed LocalCluster with 2 worker processes: same store as the local run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sources import write_metadata, write_rxrx_source

PLATES = {("HUVEC-01", 1): ["B02", "B03", "C02"], ("RPE-02", 4): ["B02", "D05"]}


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_cluster_run_equals_local_run(cluster, tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "images", PLATES, size=128)
    write_metadata(tmp_path / "metadata.csv", PLATES)
    base = [sys.executable, "-m", "converters.cli", "convert", "images", "--dataset", "rxrx1_demo",
            "--metadata", "metadata.csv", "--no-progress"]
    local = subprocess.run([*base[:5], "local.zarr", *base[5:]], cwd=tmp_path, capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    remote = subprocess.run([*base[:5], "cluster.zarr", *base[5:], "--scheduler", cluster.scheduler_address],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stderr
    for experiment, plate in PLATES:
        group = f"{experiment}/Plate{plate}"
        a = xr.open_zarr(tmp_path / "local.zarr", group=group).load()
        b = xr.open_zarr(tmp_path / "cluster.zarr", group=group).load()
        xr.testing.assert_identical(a, b)
        assert np.array_equal(a["images"].values, b["images"].values) and a["images"].values.any()
    ia = xr.open_zarr(tmp_path / "local.zarr", group="index").load()
    ib = xr.open_zarr(tmp_path / "cluster.zarr", group="index").load()
    xr.testing.assert_identical(ia, ib)


def test_bad_image_on_a_worker_fails_with_its_name(cluster, tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "images", PLATES, size=128)
    bad = tmp_path / "images" / "RPE-02" / "Plate4" / "D05_s2_w3.png"
    bad.write_bytes(bad.read_bytes()[:100])
    result = subprocess.run([sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--dataset",
                             "rxrx1_demo", "--no-progress", "--scheduler", cluster.scheduler_address],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "D05_s2_w3.png" in result.stderr and "corrupt PNG" in result.stderr


def test_unreachable_scheduler(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "images", {("HUVEC-01", 1): ["B02"]}, size=128)
    result = subprocess.run([sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--dataset",
                             "rxrx1_demo", "--no-progress", "--scheduler", "tcp://127.0.0.1:1"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "cannot reach the Dask scheduler" in result.stderr


def _square(offset: int, task: int) -> int:
    return offset + task * task


def test_small_tasks_go_to_the_cluster_in_batches(cluster) -> None:
    """300 tasks of microseconds: every result comes back once, in far fewer jobs than tasks (the scheduler's work per
    job would otherwise bound the cluster), the first window one task a job."""
    import distributed

    from converters.execute import run_tasks

    with distributed.Client(cluster) as client:
        client.get_task_stream()  # starts the scheduler's record of the jobs run
        results = list(run_tasks(_square, 7, range(300), workers=1, scheduler=cluster.scheduler_address))
        jobs = [t for t in client.get_task_stream() if t["key"].startswith("run_batch")]
    assert sorted(results) == [7 + t * t for t in range(300)]
    assert 4 <= len(jobs) <= 20, len(jobs)
