"""The `platezarr` command as a user runs it: real subprocesses, exit statuses, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import xarray as xr

from sources import small_rxrx1, write_rxrx_source

CLI = [sys.executable, "-m", "converters.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_demo_converts_and_says_how_to_open(tmp_path: Path) -> None:
    result = run("demo", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "32 sites" in result.stdout and "missing images: 1" in result.stdout
    assert "xr.open_datatree('demo.zarr', engine='zarr')" in result.stdout
    tree = xr.open_datatree(tmp_path / "demo.zarr", engine="zarr")
    assert tree["HUVEC-01/Plate1"]["images"].shape == (4, 2, 6, 128, 128)
    again = run("demo", "--no-progress", cwd=tmp_path)  # a second demo replaces the first
    assert again.returncode == 0, again.stderr


def test_convert_json_and_info(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "src", {("HUVEC-01", 1): ["B02", "B03"]}, size=512)
    result = run("convert", "src", "out.zarr", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "rxrx1" and summary["sites"] == 4 and summary["images"] == 24
    assert summary["bytes_out"] > 0 and summary["sites_per_second"] > 0
    info = run("info", "out.zarr", "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["plate_groups"] == ["HUVEC-01/Plate1"]
    text = run("info", "out.zarr", cwd=tmp_path)
    assert "w1 (Hoechst)" in text.stdout


def test_progress_bar_on_stderr(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "src", {("HUVEC-01", 1): ["B02"]}, size=512)
    result = run("convert", "src", "out.zarr", cwd=tmp_path)
    assert result.returncode == 0
    assert "write" in result.stderr and "site/s" in result.stderr
    assert "1 wells, 2 sites, 12 images" in result.stdout


def test_exit_statuses(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "src", {("HUVEC-01", 1): ["B02"]}, size=512)
    assert run("convert", "src", cwd=tmp_path).returncode == 2  # wrong usage
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    refused = run("convert", "src", "precious", "--overwrite", cwd=tmp_path)
    assert refused.returncode == 1 and "not a platezarr store" in refused.stderr
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    missing = run("convert", "nowhere", "o.zarr", cwd=tmp_path)
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    assert run("convert", "src", "o.zarr", "--no-progress", cwd=tmp_path).returncode == 0
    exists = run("convert", "src", "o.zarr", cwd=tmp_path)
    assert exists.returncode == 1 and "--overwrite" in exists.stderr
    assert run("convert", "src", "o.zarr", "--overwrite", "--no-progress", cwd=tmp_path).returncode == 0


def test_dataset_is_detected_and_small_schema_usable_from_python(tmp_path: Path) -> None:
    import converters as pz

    write_rxrx_source(tmp_path / "src", {("HUVEC-01", 1): ["B02"]})
    summary = pz.convert(tmp_path / "src", tmp_path / "o.zarr", small_rxrx1()).as_dict()
    assert summary["dataset"] == "rxrx1"
    undetectable = run("convert", "src", "p.zarr", cwd=tmp_path)  # 64x64 images fit no schema's size
    assert undetectable.returncode == 1 and "--dataset" in undetectable.stderr


def test_verbose_errors_say_what_caused_them(tmp_path: Path) -> None:
    """-v adds the chain of causes under the one-line error; without it, the line alone."""
    write_rxrx_source(tmp_path / "images", {("HUVEC-01", 1): ["B02"]}, size=128)
    bad = tmp_path / "images" / "HUVEC-01" / "Plate1" / "B02_s1_w2.png"
    bad.write_bytes(bad.read_bytes()[:200])
    args = ["convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress"]
    quiet = subprocess.run([sys.executable, "-m", "converters.cli", *args], cwd=tmp_path, capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-m", "converters.cli", "-v", *args], cwd=tmp_path, capture_output=True, text=True)
    for result in (quiet, loud):
        assert result.returncode == 1 and f"error: {bad}: corrupt PNG" in result.stderr
        assert "Traceback" not in result.stderr
    assert "caused by" not in quiet.stderr and "caused by" in loud.stderr


# A process in which obstore's runtime threads hand finished requests back to Python all the time, as zarr's reads
# of a bucket do at the end of `platezarr info s3://...`; then the command itself.
BUSY_OBSTORE = """
import asyncio, sys, threading, time
import obstore
from obstore.store import MemoryStore
import converters.info, converters.readers  # what `info` imports, before the requests compete for the GIL
from converters.cli import run

store = MemoryStore()
obstore.put(store, "key", b"x")

async def forever():
    while True:
        await asyncio.gather(*(obstore.get_async(store, "key") for _ in range(64)))

threading.Thread(target=asyncio.run, args=(forever(),), daemon=True).start()
time.sleep(0.2)
sys.argv[0] = "platezarr"
run()
"""


def test_the_command_exits_with_its_status_while_obstore_hands_back_requests(tmp_path: Path) -> None:
    """Python 3.11 ends a thread that re-enters the interpreter while it finalizes with pthread_exit, which aborts the
    process through obstore's Rust frames: `platezarr info s3://...` died with SIGABRT after printing its error
    (about 1 run in 30 under load). With requests finishing all the time, click's own exit aborted 14 runs of 20."""
    for _ in range(5):
        result = subprocess.run([sys.executable, "-c", BUSY_OBSTORE, "info", "none.zarr"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "none.zarr: no Zarr store here" in result.stderr
