"""The bad-input catalogue: each case gives a clear error naming the file or row, exit status 1, and
never a store that reads as complete. Sources are 128x128 tiles of the real RxRx1 PNGs (sources.py),
converted as `rxrx1_demo`; each test then breaks one thing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from zarr.storage import LocalStore, WrapperStore

import converters as pz
from converters.lock import Lock, new_record
from converters.output import LOCK_KEY, Output, check_output
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


def readable_copy(src: Path) -> tuple[Path, str | None]:
    """A copy of the source's images in a new folder that anyone may write in, every folder and file in it readable
    by all, and the user the permission tests run as: nobody (65534) when root, who reads everything."""
    work = Path(tempfile.mkdtemp(prefix="platezarr-perm-"))
    shutil.copytree(src / "images", work / "images")
    os.chmod(work, 0o777)
    for folder, _, files in os.walk(work / "images"):
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return work, "65534" if os.geteuid() == 0 else None


def test_unreadable_file(src: Path) -> None:
    """Permissions are enforced for a non-root user: as root the run drops to uid/gid 65534 (nobody)."""
    work, user = readable_copy(src)
    try:
        os.chmod(work / "images" / BAD, 0o000)
        result = cli(work, "convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress", user=user)
        assert_failed(result, str(work / "images" / BAD), "Permission denied")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_output_parent_not_writable(src: Path) -> None:
    work, user = readable_copy(src)
    try:
        (work / "locked").mkdir()
        os.chmod(work / "locked", 0o755 if user else 0o555)  # nobody may not write in root's folder
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


# Issue 11: metadata tables and image decoding


def edit_metadata(src: Path, change: Callable[[str], str]) -> subprocess.CompletedProcess:
    """Convert with the source's metadata.csv changed by `change` (rows: lines 2-7, Plate1 B02, B03, Plate2 B02)."""
    table = src / "metadata.csv"
    table.write_text(change(table.read_text()))
    return convert(src, "--metadata", "metadata.csv")


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data and its CRC (or `crc`, to make it bad)."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def after_ihdr(png: bytes, chunk: bytes) -> bytes:
    """`png` with `chunk` inserted after its signature and IHDR chunk (8 + 25 bytes)."""
    return png[:33] + chunk + png[33:]


INT64_RANGE = "must be an integer from -9223372036854775808 to 9223372036854775807 (int64)"
TOO_BIG = {  # each used to be stored wrapped or rounded, with exit status 0
    "the reported sirna_id": (lambda t: t.replace(",1138\n", ",12345678901234567890\n"),
                              "metadata.csv:2: column 'sirna_id'"),
    "a key column": (lambda t: t.replace("HUVEC-01,2,B02", "HUVEC-01,12345678901234567890,B02"),
                     "metadata.csv:6: column 'plate'"),
    "float notation": (lambda t: t.replace(",1138\n", ",1.2345678901234567e19\n"), "metadata.csv:2: column 'sirna_id'"),
}


@pytest.mark.parametrize("case", list(TOO_BIG))
def test_integer_beyond_int64_is_refused(src: Path, case: str) -> None:
    change, where = TOO_BIG[case]
    assert_failed(edit_metadata(src, change), f"{where} {INT64_RANGE}")
    assert not (src / "o.zarr").exists()


def test_duplicate_column_name_is_refused(src: Path) -> None:
    result = edit_metadata(src, lambda t: t.replace(",sirna_id\n", ",plate\n", 1))
    assert_failed(result, "metadata.csv:1: column 'plate' appears twice in the header (columns 6 and 11)")


def test_rows_are_named_by_their_physical_line(src: Path) -> None:
    """A quoted field spanning two lines and a blank line: Plate2's first row, line 6 of the table, moves to line 8."""
    def change(text: str) -> str:
        lines = text.split("\n")
        lines[1] = lines[1].replace(",EMPTY,", ',"EMPTY\nnon-targeting",')
        lines[5] = lines[5].replace("HUVEC-01,2,B02", "HUVEC-01,two,B02")
        return "\n".join(lines[:3] + [""] + lines[3:])

    assert_failed(edit_metadata(src, change), "metadata.csv:8: column 'plate' must be an integer, found 'two'")


FIELD_COUNTS = {
    "a trailing comma on every row": (lambda t: t.replace("\n", ",\n").replace(",sirna_id,\n", ",sirna_id\n"),
                                      "metadata.csv:2: row has 12 fields and the header 11"),
    "two extra fields in one row": (lambda t: t.replace("B03,1,treatment,s100001,1\n", "B03,1,treatment,s100001,1,,\n"),
                                    "metadata.csv:4: row has 13 fields and the header 11"),
    "a row cut short": (lambda t: t.replace("B03,1,treatment,s100001,1\n", "B03,1,treatment,s100001\n"),
                        "metadata.csv:4: row has 10 fields and the header 11"),
}


@pytest.mark.parametrize("case", list(FIELD_COUNTS))
def test_row_with_a_wrong_number_of_fields_is_refused(src: Path, case: str) -> None:
    change, message = FIELD_COUNTS[case]
    assert_failed(edit_metadata(src, change), message)


def test_trailing_comma_in_the_header(src: Path) -> None:
    """An unnamed last column empty in every row is dropped with one warning; with a value in it, it is refused."""
    original = (src / "metadata.csv").read_text()
    result = edit_metadata(src, lambda t: t.replace("\n", ",\n"))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and result.stderr.count("without a name") == 1, result.stderr
    assert "metadata.csv:1: the header ends with 1 column(s) without a name" in result.stderr
    plate = pz.open_plate(src / "o.zarr", "HUVEC-01", 1)
    assert not [name for name in plate.variables if "Unnamed" in str(name)]
    shutil.rmtree(src / "o.zarr")
    (src / "metadata.csv").write_text(original)
    result = edit_metadata(src, lambda t: t.replace("\n", ",\n").replace("B03,2,treatment,s100001,1,\n",
                                                                         "B03,2,treatment,s100001,1,7\n"))
    assert_failed(result, "metadata.csv:5: value '7' in column 12, which has no name in the header")


def test_grayscale_png_with_trns_decodes_to_its_gray_values(rxrx1_dir: Path) -> None:
    """libpng turns tRNS into an alpha plane; the gray values must still come back exactly, 8- and 16-bit."""
    from converters.decode import decode_image

    real = (rxrx1_dir / "images" / "train" / "HUVEC-01" / "Plate1" / "B02_s1_w1.png").read_bytes()
    gray8 = imagecodecs.png_decode(real)
    gray16 = gray8.astype(np.uint16) * 257 + (np.arange(gray8.size).reshape(gray8.shape) % 257).astype(np.uint16)
    for data, pixels in ((real, gray8), (imagecodecs.png_encode(gray16), gray16)):
        transparent = int(np.bincount(pixels.ravel()).argmax())  # the commonest gray, so many pixels are "transparent"
        trns = png_chunk(b"tRNS", struct.pack(">H", transparent))
        decoded = decode_image(after_ihdr(data, trns), "B02_s1_w1.png", pixels.shape, pixels.dtype)
        assert decoded.dtype == pixels.dtype and np.array_equal(decoded, pixels)


@pytest.mark.parametrize(("name", "message"), [("B03_s3_w4.png", "site 3 is not one of"),
                                               ("B03_s2_w7.png", "channel 'w7' is not one of")])
def test_unknown_site_or_channel_shows_plain_values(src: Path, name: str, message: str) -> None:
    folder = src / "images" / "HUVEC-01" / "Plate1"
    (folder / "B03_s2_w4.png").rename(folder / name)
    result = convert(src)
    assert_failed(result, f"{folder / name}: {message}", "sites [1, 2]" if "site" in message else "channels ['w1'")
    assert "np." not in result.stderr


def test_libpng_warning_names_the_file(src: Path) -> None:
    """A tEXt chunk with a bad CRC: libpng warns, the pixels are intact and stored; the warning names the file."""
    path = src / "images" / BAD
    pixels = imagecodecs.png_decode(path.read_bytes())
    path.write_bytes(after_ihdr(path.read_bytes(), png_chunk(b"tEXt", b"Comment\x00hello", crc=0)))
    result = convert(src)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "CRC error" in line]
    assert warnings and all(str(path) in line for line in warnings), result.stderr
    stored = pz.open_plate(src / "o.zarr", "HUVEC-01", 1)["images"].sel(well="B03", site=2, channel="w4").values
    assert np.array_equal(stored, pixels)


# Issue 11: overlapping paths, two conversions at once, interrupted overwrite

OVERLAPS: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "source inside the output": (lambda out: shutil.copytree(out.parent / "images", out / "raw" / "images"),
                                 "o.zarr/raw/../raw/images/", "contains the source"),
    "symlink in the output to the source": (lambda out: (out / "raw").symlink_to(out.parent / "images"),
                                            "images", "o.zarr/raw (a symlink to"),
    "symlink in the source to the output": (lambda out: (out.parent / "images" / "more").symlink_to(out),
                                            "images", "images/more (a symlink to"),
}


def files(folder: Path) -> list[tuple[str, int]]:
    """Every file below `folder` (symlinks not followed) with its size."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def reference(src: Path) -> np.ndarray:
    """The pixels of a clean conversion of the source (kept as src/reference.zarr)."""
    pz.convert(src / "images", src / "reference.zarr", "rxrx1_demo", workers=1)
    return pz.open_sites(src / "reference.zarr")["images"].values


def assert_reads_back(out: Path, expected: np.ndarray) -> None:
    """The store is complete, its lock and records gone, and it holds exactly `expected`."""
    assert Output.open(out).state() == "complete" and not (out / "_platezarr").exists()
    assert np.array_equal(pz.open_sites(out)["images"].values, expected) and expected.any()


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_overwrite_of_an_output_overlapping_the_source_is_refused(src: Path, case: str) -> None:
    """Refused before anything is deleted, naming both paths (and the symlink that leads from one to the other)."""
    assert convert(src).returncode == 0
    setup, source, message = OVERLAPS[case]
    setup(src / "o.zarr")
    before = files(src)
    result = cli(src, "convert", source, "o.zarr", "--dataset", "rxrx1_demo", "--overwrite", "--no-progress")
    assert_failed(result, message, str(src / "o.zarr"), "write the store somewhere else")
    assert files(src) == before


def test_overlapping_bucket_prefixes_are_refused() -> None:
    """Bucket URLs overlap when one prefix of a bucket holds the other (s3a:// is s3://); a sibling prefix does not."""
    with pytest.raises(pz.StoreError, match="output s3://data/run1 contains the source s3a://data/run1/images"):
        check_output(Output.open("s3://data/run1/"), "s3a://data/run1/images")
    check_output(Output.open("s3://data/run1.zarr"), "s3://data/run1/images")


def test_overwrite_deletes_only_the_store(src: Path) -> None:
    """Foreign files, a symlink and what it leads to survive --overwrite, which names what it kept."""
    out = src / "o.zarr"
    assert convert(src).returncode == 0
    expected = pz.open_sites(out)["images"].values
    foreign = [out / "notes.txt", out / "raw" / "table.csv", out / "HUVEC-01" / "README"]
    for path in [*foreign, src / "elsewhere" / "data.txt"]:
        path.parent.mkdir(exist_ok=True)
        path.write_text("keep")
    (out / "linked").symlink_to(src / "elsewhere")
    result = convert(src, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "kept 4 files or folders" in result.stderr and "HUVEC-01/README" in result.stderr, result.stderr
    assert all(p.read_text() == "keep" for p in foreign) and (out / "linked" / "data.txt").read_text() == "keep"
    assert_reads_back(out, expected)


def test_a_held_lock_refuses_a_second_conversion_at_once(src: Path) -> None:
    """The owner is named (host, pid) and nothing is written; once the lock is released the conversion runs."""
    out = src / "o.zarr"
    lock = Lock.acquire(Output.open(out))
    try:
        started = time.monotonic()
        result = convert(src)
        assert time.monotonic() - started < 30
        assert_failed(result, "being written by another conversion", f"host {socket.gethostname()}",
                      f"pid {os.getpid()}", str(out / LOCK_KEY))
        assert [name for name, _ in files(out)] == [LOCK_KEY]
    finally:
        assert lock.release()
    assert convert(src).returncode == 0
    assert_reads_back(out, reference(src))


def start_and_wait_for_lock(src: Path) -> subprocess.Popen:
    """Start a conversion of `src` and return as soon as it holds the lock on o.zarr."""
    cmd = [sys.executable, "-m", "converters.cli", "convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress"]
    process = subprocess.Popen(cmd, cwd=src, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (src / "o.zarr" / LOCK_KEY).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return process


def test_two_conversions_at_once(src: Path) -> None:
    """A real conversion, frozen while it writes: a second one is refused naming it; the first then finishes."""
    first = start_and_wait_for_lock(src)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        assert (src / "o.zarr" / LOCK_KEY).exists()
        second = convert(src)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    assert_failed(second, "being written by another conversion", f"host {socket.gethostname()}", f"pid {first.pid}")
    assert_reads_back(src / "o.zarr", reference(src))


def test_lock_of_a_killed_conversion_is_taken_over(src: Path) -> None:
    """kill -9 leaves the lock behind: the next run on this host finds its pid gone, takes over and finishes."""
    first = start_and_wait_for_lock(src)
    first.kill()
    first.wait()
    assert (src / "o.zarr" / LOCK_KEY).exists()
    result = convert(src)
    assert result.returncode == 0, result.stderr
    assert "taking over the lock" in result.stderr and f"pid {first.pid}" in result.stderr, result.stderr
    assert_reads_back(src / "o.zarr", reference(src))


def test_a_conversion_killed_while_taking_the_lock_is_taken_over(src: Path) -> None:
    """The lock is written beside itself, linked into place, then its partial file deleted: a kill -9 between the
    link and the delete (seen once in CI) left an output holding only those two files, refused as foreign."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = json.dumps(new_record() | {"pid": int(dead.stdout)}).encode()  # a process of this host that is gone
    lock = src / "o.zarr" / LOCK_KEY
    lock.parent.mkdir(parents=True)
    lock.write_bytes(record)
    lock.with_name(f"{lock.name}.{int(dead.stdout)}.partial").write_bytes(record)
    result = convert(src)
    assert result.returncode == 0, result.stderr
    assert "taking over the lock" in result.stderr and f"pid {int(dead.stdout)}" in result.stderr, result.stderr
    assert_reads_back(src / "o.zarr", reference(src))


def test_bucket_lock_refuses_a_second_conversion_and_a_dead_ones_is_taken_over(s3, src: Path) -> None:
    """On s3:// the lock is a conditional write: held, it refuses; left by a process that died, it is taken over."""
    pytest.importorskip("boto3").client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="platezarr-locks")
    url = "s3://platezarr-locks/o.zarr"
    lock = Lock.acquire(Output.open(url))
    with pytest.raises(pz.StoreError, match=f"host {socket.gethostname()}, pid {os.getpid()}"):
        pz.convert(src / "images", url, "rxrx1_demo", workers=1)
    assert lock.release()
    hold_and_die = "import os, sys; from converters.lock import Lock; from converters.output import Output; " \
                   "Lock.acquire(Output.open(sys.argv[1])); os._exit(0)"
    subprocess.run([sys.executable, "-c", hold_and_die, url], check=True)
    assert Output.open(url).keys("") == [LOCK_KEY]
    pz.convert(src / "images", url, "rxrx1_demo", workers=1)
    assert Output.open(url).state() == "complete" and not Output.open(url).keys("_platezarr/")
    assert np.array_equal(pz.open_sites(url)["images"].values, reference(src))


@pytest.mark.parametrize("minutes, taken_over", [(1, False), (60, True)])
def test_lock_of_another_host_is_taken_over_once_its_heartbeat_is_old(src: Path, minutes: int, taken_over: bool) -> None:
    """Another host's pid cannot be checked: its lock holds until its heartbeat is older than lock.STALE_SECONDS."""
    heartbeat = (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()
    lock = src / "o.zarr" / LOCK_KEY
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps(new_record() | {"host": "another-host", "pid": 1, "heartbeat": heartbeat}))
    result = convert(src)
    if taken_over:
        assert result.returncode == 0, result.stderr
        assert_reads_back(src / "o.zarr", reference(src))
    else:
        assert_failed(result, "host another-host, pid 1", heartbeat)


class FailingDeletes(WrapperStore[LocalStore]):
    """A store whose deletes (but the lock's) fail with EIO once `room` more have been made, like a disk giving out."""

    room = 10**9

    async def delete(self, key: str) -> None:
        if key != LOCK_KEY:
            if type(self).room <= 0:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            type(self).room -= 1
        await self._store.delete(key)


@pytest.mark.parametrize("again", [(), ("--overwrite",)])
def test_interrupted_overwrite_is_finished_by_a_rerun(src: Path, again: tuple[str, ...]) -> None:
    """--overwrite failing at its first, a middle and its last deletion leaves a store that reads as ours and
    unfinished; a re-run, with or without --overwrite, finishes the replacement and converts."""
    expected, out = reference(src), src / "o.zarr"
    FailingDeletes.room = 10**9
    shutil.copytree(src / "reference.zarr", src / "probe.zarr")
    Output(FailingDeletes(LocalStore(src / "probe.zarr")), "probe").clear()
    deletions = 10**9 - FailingDeletes.room
    for room in (0, deletions // 2, deletions - 1):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(src / "reference.zarr", out)
        (out / "notes.txt").write_text("keep")
        FailingDeletes.room = room
        with pytest.raises(pz.StoreError, match="Input/output error"):
            pz.convert(src / "images", FailingDeletes(LocalStore(out)), "rxrx1_demo", workers=1, overwrite=True)
        assert Output.open(out).state() == "incomplete"
        with pytest.raises(pz.StoreError, match="did not finish"):
            pz.open_sites(out)
        result = convert(src, *again)
        assert result.returncode == 0, (room, result.stderr)
        assert_reads_back(out, expected)
        assert (out / "notes.txt").read_text() == "keep"


# Issue 11: unreadable source folders

def test_symlink_loops_and_dangling_links_in_the_source_are_skipped_with_a_warning(src: Path) -> None:
    """A link to itself, two links to each other, a dangling link and a link to the source's parent hold no images:
    each is skipped with a warning naming it. A link to a folder already walked is skipped silently."""
    images = src / "images"
    links = {"self": "self", "a": "b", "b": "a", "dangling": "nowhere", "up": ".."}
    for name, target in links.items():
        (images / name).symlink_to(target)
    (images / "HUVEC-01" / "Plate1" / "back").symlink_to("..")
    out = Path(tempfile.mkdtemp(prefix="platezarr-out-")) / "o.zarr"  # not below `up`
    try:
        result = cli(src, "convert", "images", str(out), "--dataset", "rxrx1_demo", "--no-progress", "--json")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        for name in links:
            assert f"{images / name}: skipped" in result.stderr, (name, result.stderr)
        assert "back" not in result.stderr and json.loads(result.stdout)["images"] == 36
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def copy_with_an_unreadable_plate(src: Path) -> tuple[Path, Path, str | None]:
    """`readable_copy` of the source whose HUVEC-01/Plate2 folder is unreadable; (copy, that folder, the user to run
    as)."""
    work, user = readable_copy(src)
    locked = work / "images" / "HUVEC-01" / "Plate2"
    os.chmod(locked, 0o000)
    return work, locked, user


def test_unreadable_source_folder_fails_naming_it(src: Path) -> None:
    work, locked, user = copy_with_an_unreadable_plate(src)
    try:
        result = cli(work, "convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress", user=user)
        assert_failed(result, f"{locked}: cannot read: Permission denied", "--on-error skip", out=work / "o.zarr")
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(work, ignore_errors=True)


def test_unreadable_source_folder_is_skipped_with_a_warning_on_request(src: Path) -> None:
    """--on-error skip: a warning names the folder and the rest is converted (the folder's wells are absent)."""
    work, locked, user = copy_with_an_unreadable_plate(src)
    try:
        result = cli(work, "convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress", "--json",
                     "--on-error", "skip", user=user)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert f"WARNING {locked}: skipped, cannot read: Permission denied" in result.stderr, result.stderr
        assert json.loads(result.stdout)["plates"] == 1 and json.loads(result.stdout)["images"] == 24
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(work, ignore_errors=True)


# Issue 11: nothing converted, one odd bit depth, a shard deleted after the conversion

FIRST = "HUVEC-01/Plate1/B02_s1_w1.png"  # the first file in path order: the one the bit depth was taken from


@pytest.mark.parametrize("source, args, hint", [
    ("images", ("--dataset", "cpjump1"), "names: pass --dataset rxrx1"),
    ("images/HUVEC-01", ("--dataset", "rxrx1_demo"), "they match one folder up: pass"),
    (".", ("--dataset", "rxrx1_demo"), "they match one folder down: pass"),
])
def test_a_source_without_one_image_of_the_dataset_fails_with_a_hint(src: Path, source: str, args: tuple[str, ...],
                                                                     hint: str) -> None:
    for extra in ((), ("--dry-run",)):
        result = cli(src, "convert", source, "o.zarr", "--no-progress", *args, *extra)
        assert_failed(result, "image found: looked for paths matching", "none matching", hint, out=src / "o.zarr")


def test_a_plan_whose_images_never_arrive_is_not_finished(src: Path) -> None:
    """Metadata rows, but every image skipped as bad: the store stays unfinished, exit 1."""
    for path in (src / "images").rglob("*.png"):
        path.write_bytes(b"not a png")
    result = convert(src, "--metadata", "metadata.csv", "--on-error", "skip")
    assert_failed(result, "not one of the 36 planned images could be stored", out=src / "o.zarr")


def test_verify_that_compares_nothing_fails(src: Path) -> None:
    assert convert(src).returncode == 0
    (src / "elsewhere").mkdir()
    (src / "elsewhere" / "notes.txt").write_text("no images here")
    result = cli(src, "verify", "elsewhere", "o.zarr", "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not one" in result.stderr and "verified 0 images" not in result.stdout


def test_one_16_bit_image_among_8_bit_ones_is_named_and_counts_stay_true(src: Path) -> None:
    odd = src / "images" / FIRST
    odd.write_bytes(imagecodecs.png_encode(imagecodecs.png_decode(odd.read_bytes()).astype(np.uint16) * 257))
    assert_failed(convert(src), f"{odd}: 16-bit image in a 8-bit conversion", out=src / "o.zarr")
    result = convert(src, "--on-error", "skip", "--json", "--overwrite")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 35 and summary["skipped_images"]["count"] == 1
    assert summary["skipped_images"]["files"][0]["file"] == str(odd)
    attrs = pz.open_sites(src / "o.zarr").attrs
    assert attrs["dtype"] == "uint8" and attrs["counts"]["images"] == 35 and attrs["skipped_images"]["count"] == 1
    assert int(pz.open_index(src / "o.zarr")["channels_present"].sum()) == 35


def test_a_deleted_shard_is_named_by_info_and_the_readers(src: Path) -> None:
    assert convert(src).returncode == 0
    out = src / "o.zarr"
    shard = out / "HUVEC-01" / "Plate1" / "images" / "c.1.0.0.0.0"  # well B03
    shard.unlink()
    result = cli(src, "info", "o.zarr")
    assert_failed(result, "1 wells the store recorded as written have no shard", "HUVEC-01/Plate1/B03")
    sites = pz.SiteDataset(out, where={"well": "B03"})
    with pytest.raises(pz.StoreError, match="well HUVEC-01/Plate1/B03 has no shard"):
        sites[0]
    with pytest.raises(pz.StoreError, match="has no shard"):
        pz.open_sites(out)["images"].sel(sample=2).values


@pytest.mark.parametrize("folder, message", [("Plate01", "are one plate (1) spelled twice"),
                                             ("Plate12345678901234567890", "plate 12345678901234567890 is beyond")])
def test_numbers_in_paths_are_never_changed(src: Path, folder: str, message: str) -> None:
    """`Plate01` beside `Plate1` would share group Plate1; a plate number beyond int64 would wrap."""
    shutil.copytree(src / "images" / "HUVEC-01" / "Plate2", src / "images" / "HUVEC-01" / folder)
    assert_failed(convert(src), message, folder, out=src / "o.zarr")


def test_a_root_zarr_json_whose_write_was_killed_is_not_foreign(src: Path) -> None:
    """kill -9 while zarr writes the root zarr.json leaves only its `.partial` beside the lock: the next run starts over."""
    (src / "o.zarr").mkdir()
    (src / "o.zarr" / "zarr.0123456789abcdef0123456789abcdef.partial").write_text('{"zarr_format": 3, "node')
    result = convert(src)
    assert result.returncode == 0, result.stderr
    assert not list((src / "o.zarr").glob("*.partial"))
    assert_reads_back(src / "o.zarr", reference(src))
