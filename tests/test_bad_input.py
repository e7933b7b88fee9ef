"""The bad-input catalogue: each case gives a clear error naming the file or row, exit status 1, and
never a store that reads as complete. Sources are 128x128 tiles of the real RxRx1 PNGs (sources.py),
converted as `rxrx1_demo`; each test then breaks one thing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from zarr.storage import LocalStore, WrapperStore

import converters as pz
from converters.output import Output
from sources import write_metadata, write_rxrx_source

PLATES = {("HUVEC-01", 1): ["B02", "B03"], ("HUVEC-01", 2): ["B02"]}
BAD = "HUVEC-01/Plate1/B03_s2_w4.png"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    write_rxrx_source(tmp_path / "images", PLATES, size=128)
    write_metadata(tmp_path / "metadata.csv", PLATES)
    return tmp_path


def cli(cwd: Path, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "converters.cli", *args]
    if user:
        cmd = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *cmd]
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def convert(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(cwd, "convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress", *extra)


def assert_failed(result: subprocess.CompletedProcess, *needles: str, out: Path | None = None) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    if out is not None and out.exists():
        assert Output.open(out).state() != "complete"
        with pytest.raises(pz.StoreError):
            pz.open_sites(out)


def png_with_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring the given size, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


BROKEN = {
    "truncated PNG": (lambda data: data[: len(data) // 2], "corrupt PNG"),
    "not a PNG": (lambda data: b"GIF89a" + data[6:], "not a PNG file"),
    "zero bytes": (lambda data: b"", "empty file (0 bytes)"),
    "wrong size": (lambda data: imagecodecs.png_encode(np.zeros((64, 128), np.uint8)), "image is 64x128"),
    "wrong bit depth": (lambda data: imagecodecs.png_encode(np.zeros((128, 128), np.uint16)), "16-bit image in a 8-bit"),
    "colour": (lambda data: imagecodecs.png_encode(np.zeros((128, 128, 3), np.uint8)), "PNG is RGB, expected grayscale"),
    "huge declared size": (lambda data: png_with_header(200_000, 200_000), "image is 200000x200000"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_bad_image_fails_naming_the_file(src: Path, case: str) -> None:
    breaker, message = BROKEN[case]
    path = src / "images" / BAD
    path.write_bytes(breaker(path.read_bytes()))
    assert_failed(convert(src), str(path), message, out=src / "o.zarr")


@pytest.mark.parametrize("case", ["truncated PNG", "wrong size"])
def test_on_error_skip_records_the_bad_image_and_goes_on(src: Path, case: str) -> None:
    breaker, message = BROKEN[case]
    path = src / "images" / BAD
    path.write_bytes(breaker(path.read_bytes()))
    result = convert(src, "--on-error", "skip", "--json")
    assert result.returncode == 0, result.stderr
    skipped = json.loads(result.stdout)["skipped_images"]
    assert skipped["count"] == 1 and skipped["files"][0]["file"] == str(path) and message in skipped["files"][0]["reason"]
    plate = pz.open_plate(src / "o.zarr", "HUVEC-01", 1)
    assert plate["present"].sel(well="B03", site=2).values.tolist() == [True, True, True, False, True, True]
    assert not plate["images"].sel(well="B03", site=2, channel="w4").values.any()


def test_unreadable_file(src: Path) -> None:
    """Permissions are enforced for a non-root user: as root the run drops to uid/gid 65534 (nobody)."""
    work = Path(tempfile.mkdtemp(prefix="platezarr-perm-"))
    try:
        shutil.copytree(src / "images", work / "images")
        os.chmod(work, 0o777)
        for folder, dirs, files in os.walk(work / "images"):
            os.chmod(folder, 0o755)
            for f in files:
                os.chmod(os.path.join(folder, f), 0o644)
        os.chmod(work / "images" / BAD, 0o000)
        user = "65534" if os.geteuid() == 0 else None
        result = cli(work, "convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress", user=user)
        assert_failed(result, str(work / "images" / BAD), "Permission denied")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_output_parent_not_writable(src: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="platezarr-perm-"))
    try:
        shutil.copytree(src / "images", work / "images")
        (work / "locked").mkdir()
        for folder, _, files in os.walk(work):
            os.chmod(folder, 0o755)
            for f in files:
                os.chmod(os.path.join(folder, f), 0o644)
        user = "65534" if os.geteuid() == 0 else None
        if user is None:
            os.chmod(work / "locked", 0o555)
        result = cli(work, "convert", "images", "locked/o.zarr", "--dataset", "rxrx1_demo", "--no-progress", user=user)
        assert_failed(result, "no write permission in", str(work / "locked"))
        assert not (work / "locked" / "o.zarr").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_two_files_for_one_image(src: Path) -> None:
    """The 2019 and 2020 layouts side by side: the same image twice."""
    shutil.copytree(src / "images" / "HUVEC-01", src / "images" / "train" / "HUVEC-01")
    assert_failed(convert(src), "two files for the same image", "HUVEC-01/Plate1/B02_s1_w1.png")


def test_unknown_file_names_are_counted_and_ignored(src: Path) -> None:
    (src / "images" / "README.txt").write_text("notes")
    (src / "images" / "HUVEC-01" / "Plate1" / "B02_s1_w1 (copy).png").write_bytes(b"x")
    result = convert(src, "--json")
    assert result.returncode == 0, result.stderr
    ignored = json.loads(result.stdout)["ignored_files"]
    assert ignored["count"] == 2 and "README.txt" in ignored["examples"]


METADATA_CASES = {
    "missing column": (lambda t: t.replace(",well,", ",wel,", 1), "missing required column(s) well"),
    "wrong type": (lambda t: t.replace("HUVEC-01,1,B03,1", "HUVEC-01,one,B03,1"), "column 'plate' must be an integer, found 'one'"),
    "duplicate site_id": (lambda t: t.replace("HUVEC-01_1_B03_2,", "HUVEC-01_1_B03_1,"), "duplicate site_id 'HUVEC-01_1_B03_1'"),
    "NaN in a key column": (lambda t: t.replace("HUVEC-01,1,B03,2", "HUVEC-01,1,,2"), "key column 'well' is blank"),
    "path in a name": (lambda t: t.replace("HUVEC-01,2,B02", "../../evil,2,B02"), "experiment name '../../evil' cannot be a group"),
}


@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_bad_metadata_names_the_row(src: Path, case: str) -> None:
    change, message = METADATA_CASES[case]
    table = src / "metadata.csv"
    table.write_text(change(table.read_text()))
    result = convert(src, "--metadata", "metadata.csv")
    assert_failed(result, message)
    if case != "missing column" and case != "path in a name":
        assert "metadata.csv:" in result.stderr  # file:line of the row
    assert not (src / "o.zarr").exists() and not (src / "evil").exists()


def test_non_utf8_metadata(src: Path) -> None:
    table = src / "metadata.csv"
    table.write_bytes(table.read_bytes().replace(b"EMPTY", b"EMPT\xe9"))
    assert_failed(convert(src, "--metadata", "metadata.csv"), "metadata.csv: not UTF-8")


def test_output_inside_the_source(src: Path) -> None:
    assert_failed(cli(src, "convert", "images", "images/o.zarr", "--dataset", "rxrx1_demo"), "inside the source folder")


class FullDisk(WrapperStore[LocalStore]):
    """A store that fails with ENOSPC once `room` more keys have been written, like a disk filling up."""

    room = 10**9
    written: list[str] = []

    async def set(self, key, value) -> None:
        if type(self).room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        type(self).room -= 1
        type(self).written.append(key)
        await self._store.set(key, value)


def test_no_space_left_then_resume(src: Path) -> None:
    out = src / "o.zarr"
    FullDisk.room, FullDisk.written = 10**9, []
    pz.convert(src / "images", FullDisk(LocalStore(src / "probe.zarr")), "rxrx1_demo", workers=1)
    template = FullDisk.written.index("_platezarr/template.json") + 1
    FullDisk.room = template + 2  # the template, then the disk fills up among the wells
    with pytest.raises(pz.StoreError, match="No space left on device.*re-run the same command to resume"):
        pz.convert(src / "images", FullDisk(LocalStore(out)), "rxrx1_demo", workers=1)
    assert Output.open(out).state() == "incomplete"
    with pytest.raises(pz.StoreError, match="did not finish"):
        pz.open_sites(out)
    FullDisk.room = 0  # still full: failing in the template or finalization is just as clear
    with pytest.raises(pz.StoreError, match="No space left on device"):
        pz.convert(src / "images", FullDisk(LocalStore(src / "other.zarr")), "rxrx1_demo", workers=1)
    FullDisk.room = 10**9  # space freed: the same command resumes
    summary = pz.convert(src / "images", FullDisk(LocalStore(out)), "rxrx1_demo", workers=1).as_dict()
    assert summary["resumed_wells"] >= 1
    a, b = pz.open_sites(out), pz.open_sites(src / "probe.zarr")
    assert np.array_equal(a["images"].values, b["images"].values) and a["images"].values.any()
