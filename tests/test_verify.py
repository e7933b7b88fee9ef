"""`platezarr verify`: all equal after a conversion; a flipped shard byte or a changed source file is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import pytest

from sources import write_rxrx_source

PLATES = {("HUVEC-01", 1): ["B02", "B03"], ("HUVEC-01", 2): ["C04"]}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converters.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def converted(tmp_path: Path) -> Path:
    write_rxrx_source(tmp_path / "images", PLATES, size=128)
    assert cli("convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress", cwd=tmp_path).returncode == 0
    return tmp_path


def test_verify_passes_on_a_fresh_store(converted: Path) -> None:
    result = cli("verify", "images", "o.zarr", "--no-progress", cwd=converted)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified 36 images in 3 wells: all equal" in result.stdout
    sampled = cli("verify", "images", "o.zarr", "--sample", "5", "--no-progress", cwd=converted)
    assert sampled.returncode == 0 and "verified 5 images" in sampled.stdout


def test_a_corrupted_shard_byte_is_reported(converted: Path) -> None:
    shard = converted / "o.zarr" / "HUVEC-01" / "Plate1" / "images" / "c.1.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    result = cli("verify", "images", "o.zarr", "--no-progress", cwd=converted)
    assert result.returncode == 1
    assert "MISMATCH HUVEC-01/Plate1/B03: cannot read the stored well" in result.stdout


def test_a_changed_source_file_is_named(converted: Path) -> None:
    changed = converted / "images" / "HUVEC-01" / "Plate2" / "C04_s2_w5.png"
    pixels = imagecodecs.png_decode(changed.read_bytes())
    pixels[0, :7] ^= 0xFF
    changed.write_bytes(imagecodecs.png_encode(pixels))
    result = cli("verify", "images", "o.zarr", "--no-progress", cwd=converted)
    assert result.returncode == 1
    assert f"MISMATCH {changed}: 7 pixels differ from the store" in result.stdout
    deleted = converted / "images" / "HUVEC-01" / "Plate1" / "B02_s1_w1.png"
    deleted.unlink()
    again = cli("verify", "images", "o.zarr", "--no-progress", cwd=converted)
    assert "HUVEC-01/Plate1/B02 site index 0 channel index 0: stored, but its source file is gone" in again.stdout


def test_verify_of_an_unfinished_store_says_so(tmp_path: Path) -> None:
    write_rxrx_source(tmp_path / "images", PLATES, size=128)
    result = cli("verify", "images", "missing.zarr", cwd=tmp_path)
    assert result.returncode == 1 and "no Zarr store" in result.stderr
