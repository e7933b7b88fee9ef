"""Write the wells of one plate tar: stream the tar once, front to back, never extracting it to disk.

Each image member is decoded as it arrives into its well's (site, channel, y, x) block; a well whose
planned images have all arrived is written (its shard, then its completion record) at once and
dropped from memory. Memory stays bounded on the assumption that a tar holds its images well by
well, as Recursion's do: then one or two wells are open at a time. At most `OPEN_WELLS` wells are
held; when one more opens, the oldest is written as it stands but not yet recorded. If a member of
such a well turns up later, the tar is not ordered by well: the well is read again, whole, in another
pass over the tar (a warning says so), so memory stays bounded and no image is lost, at the cost of
re-reading the tar. Images still absent when the tar ends are written as present=False and reported.
A tar is read once per task, so no two tasks write one shard; wells recorded by an earlier run are
not in the task, and the stream stops as soon as every well of the task is written. Images of wells
the plan does not have (a bucket tar's wells come from the metadata) are left out, with a warning.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from converters.decode import decode_image
from converters.errors import SourceError, StoreError
from converters.plan import TarTask, WellTask
from converters.source import Source
from converters.write import WellJob, WellResult, well_record_key, write_block

log = logging.getLogger("platezarr")

OPEN_WELLS = 4  # wells held in memory at once per tar (each sites x channels x 2048² x 2 bytes for RxRx3: 48 MB)
STREAM_CHUNK = 8 << 20  # bytes per read from a bucket stream


@dataclass
class _OpenWell:
    """A well being filled from the stream: its pixels, the images that arrived, what was read and skipped."""

    task: WellTask
    block: np.ndarray
    present: np.ndarray
    seen: set[tuple[int, int]] = field(default_factory=set)
    bytes_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all((s, c) in self.seen for s, c, _ in self.task.files)


def write_tar(job: WellJob, task: TarTask) -> list[WellResult]:
    """Write every well of `task` from its tar, in as few passes over the tar as its order allows (one if by well)."""
    todo = {t.well: t for t in task.wells}
    results: list[WellResult] = []
    unplanned: dict[str, None] = {}  # member names, in order, once each
    while todo:
        written, late = _pass(job, task, todo, unplanned)
        results += written
        if late:
            log.warning("%s is not ordered by well: %d wells came in pieces and are read again in another pass",
                        job.source.path(task.tar), len(late))
        todo = {well: todo[well] for well in late}
    if unplanned:
        log.warning("%s: %d images of wells the metadata table does not list are not in the store, e.g. %s",
                    job.source.path(task.tar), len(unplanned), ", ".join(list(unplanned)[:3]))
    return results


def _pass(job: WellJob, task: TarTask, todo: dict[str, WellTask],
          unplanned: dict[str, None]) -> tuple[list[WellResult], set[str]]:
    """One pass over the tar: the wells written and recorded, and those to read again (`late`);
    members of wells the plate does not have are added to `unplanned`."""
    where = job.source.path(task.tar)
    results: list[WellResult] = []
    held: dict[str, _OpenWell] = {}  # in order of their first image
    unrecorded: dict[str, WellResult] = {}  # written when pushed out of `held`, recorded at the end unless late
    closed: set[str] = set()
    late: set[str] = set()
    opened: set[str] = set()
    with open_tar(job.source, task.tar) as tar:
        for member in members(tar, where):
            if len(closed) == len(todo):
                break
            key = task.names.key(member.name) if member.isfile() else None
            if key is not None and key[0] not in task.plate_wells:
                unplanned[member.name] = None
            if key is None or key[0] not in todo or key[0] in late:
                continue
            well, site, channel = key
            if well in unrecorded:
                del unrecorded[well]
                late.add(well)
                continue
            if well in closed or (well in held and (site, channel) in held[well].seen):
                raise SourceError(f"{where}: {member.name} is a second image for {task.names.label(well, site, channel)}; "
                                  "a tar holds one image per site and channel: re-download it")
            if well not in held:
                held[well] = _open(job, todo[well])
                opened.add(well)
            state = held[well]
            _add(job, state, site, channel, read_member(tar, member, where), f"{where}:{member.name}")
            if state.complete:
                results.append(_write(job, task, held.pop(well), record=True))
                closed.add(well)
            elif len(held) > OPEN_WELLS:
                oldest = next(iter(held))
                unrecorded[oldest] = _write(job, task, held.pop(oldest), record=False)
    results += [_write(job, task, state, record=True) for state in held.values()]
    for result in unrecorded.values():
        _record(job, result)
        results.append(result)
    for well in todo.keys() - opened:  # not one image of the well in the tar: its shard stays empty
        results.append(_result(task, todo[well], np.zeros(job.shape[:2], dtype=bool)))
        _record(job, results[-1])
    return results, late


def _open(job: WellJob, task: WellTask) -> _OpenWell:
    return _OpenWell(task, np.zeros(job.shape, dtype=np.dtype(job.dtype)), np.zeros(job.shape[:2], dtype=bool))


def _add(job: WellJob, state: _OpenWell, site: int, channel: int, data: bytes, where: str) -> None:
    """Decode one image into its well; a bad image raises, or with on_error="skip" is recorded and left out."""
    state.seen.add((site, channel))
    state.bytes_read += len(data)
    try:
        state.block[site, channel] = decode_image(data, where, job.shape[2:], np.dtype(job.dtype))
    except SourceError as error:
        if job.on_error != "skip":
            raise
        state.skipped.append((where, str(error)))
        return
    state.present[site, channel] = True


def _result(task: TarTask, well: WellTask, present: np.ndarray, seen: Container[tuple[int, int]] = (),
            bytes_read: int = 0, skipped: tuple[tuple[str, str], ...] = ()) -> WellResult:
    """What a well reports: its planned images that never came (not `seen`) are missing."""
    missing = tuple(f"{task.group}/{task.names.label(well.well, s, c)}" for s, c, _ in well.files if (s, c) not in seen)
    return WellResult(task.group, well.well_index, present, bytes_read, skipped, missing)


def _write(job: WellJob, task: TarTask, state: _OpenWell, record: bool) -> WellResult:
    """Write the well's shard (and its completion record, if `record`)."""
    well = state.task
    result = _result(task, well, state.present, state.seen, state.bytes_read, tuple(state.skipped))
    try:
        write_block(job.output, task.group, well.well_index, state.block)
    except OSError as exc:
        raise StoreError(f"{job.output.location}: cannot write well {task.group}/{well.well}: {exc.strerror or exc}; "
                         "free space or fix permissions, then re-run the same command to resume") from None
    if record:
        _record(job, result)
    return result


def _record(job: WellJob, result: WellResult) -> None:
    job.output.write_json(well_record_key(result.group, result.well_index), result.record())


@contextmanager
def open_tar(source: Source, rel: str) -> Iterator[tarfile.TarFile]:
    """A tar of the source, read front to back: from a local file with seeks past the members not needed,
    or as one streamed GET from a bucket."""
    where = source.path(rel)
    try:
        if source.root is None:
            stream = io.BufferedReader(_ObjectStream(source, rel), STREAM_CHUNK)
            tar = tarfile.open(fileobj=stream, mode="r|", bufsize=STREAM_CHUNK)
        else:
            tar = tarfile.open(where, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{where}: not a readable uncompressed tar ({exc}); re-download it") from None
    with tar:
        yield tar


def members(tar: tarfile.TarFile, where: str) -> Iterator[tarfile.TarInfo]:
    """The tar's members in order; a damaged tar raises naming it."""
    entries = iter(tar)
    while True:
        try:
            member = next(entries)
        except StopIteration:
            return
        except (tarfile.TarError, OSError) as exc:
            raise SourceError(f"{where}: damaged tar ({exc}); re-download it, then re-run to resume") from None
        yield member


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    """The bytes of one member; a tar cut short raises naming the member."""
    try:
        data = tar.extractfile(member)
        return data.read() if data is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{where}:{member.name}: cannot read ({exc}); re-download the tar, then re-run to resume") from None


class _ObjectStream(io.RawIOBase):
    """A bucket object as a read-once file: the chunks of one streamed GET, handed to tarfile in order."""

    def __init__(self, source: Source, rel: str) -> None:
        import obstore

        try:
            self._chunks = iter(obstore.get(source.store, rel).stream(min_chunk_size=STREAM_CHUNK))
        except Exception as exc:  # obstore raises per-cloud errors; all mean the object cannot be read
            raise OSError(f"cannot read: {exc}") from None
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:  # obstore raises per-cloud errors; all mean the stream broke
                raise OSError(f"the download broke off: {exc}") from None
            if chunk is None:
                return 0
            self._buffer = memoryview(bytes(chunk))
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n
