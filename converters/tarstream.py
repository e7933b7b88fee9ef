"""A plate tar as a source of wells: stream the tar once, front to back, never extracting it to disk.

Image members are gathered into their well as they arrive; a well whose planned images have all
arrived is handed on at once (to be written, or compared by `verify`) and dropped from memory. Memory
stays bounded on the assumption that a tar holds its images well by well, as Recursion's do: then one
or two wells are open at a time. At most `OPEN_WELLS` wells are held; when one more opens, the oldest
is handed on as it stands but not yet settled. If a member of such a well turns up later, the tar is
not ordered by well: the well is read again, whole, in another pass over the tar (a warning says so),
so memory stays bounded and no image is lost, at the cost of re-reading the tar. Images still absent
when the tar ends are reported missing. Wells of which not one image is in the tar are handed on
empty. Images of wells the task does not have are left out and returned, for the caller to report.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from converters.errors import SourceError
from converters.plan import TarTask, WellTask
from converters.source import STREAM_CHUNK, Source
from converters.write import Image, WellImages

log = logging.getLogger("platezarr")

OPEN_WELLS = 4  # wells held in memory at once per tar (each sites x channels images, compressed)
Result = TypeVar("Result")


@dataclass
class _OpenWell:
    """A well being filled from the stream: the images that arrived, by (site, channel)."""

    task: WellTask
    images: dict[tuple[int, int], Image] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all((s, c) in self.images for s, c, _ in self.task.files)

    def handed(self, tar_task: TarTask) -> WellImages:
        """The well as it stands, with its planned images that have not arrived named as missing."""
        missing = tuple(f"{tar_task.group}/{tar_task.names.label(self.task.well, s, c)}"
                        for s, c, _ in self.task.files if (s, c) not in self.images)
        return WellImages(self.task, list(self.images.values()), missing)


def stream_wells(source: Source, task: TarTask, finish: Callable[[WellImages, bool], Result],
                 settle: Callable[[Result], None]) -> tuple[list[Result], list[str]]:
    """`finish(well, settled)` every well of `task` from its tar, in as few passes as its order allows.

    A well handed on before the end of a pass comes with settled=False; if no more of its images turn
    up, `settle` is called on its result at the end of the pass. Returns the last result of every well
    and the names of members of wells the task does not have.
    """
    todo = {t.well: t for t in task.wells}
    results: dict[str, Result] = {}
    unplanned: dict[str, None] = {}  # member names, in order, once each
    while todo:
        late = _pass(source, task, todo, unplanned, finish, settle, results)
        if late:
            log.warning("%s is not ordered by well: %d wells came in pieces and are read again in another pass",
                        source.path(task.tar), len(late))
        todo = {well: todo[well] for well in late}
    return list(results.values()), list(unplanned)


def _pass(source: Source, task: TarTask, todo: dict[str, WellTask], unplanned: dict[str, None],
          finish: Callable[[WellImages, bool], Result], settle: Callable[[Result], None],
          results: dict[str, Result]) -> set[str]:
    """One pass over the tar; returns the wells to read again (`late`)."""
    where = source.path(task.tar)
    held: dict[str, _OpenWell] = {}  # in order of their first image
    unsettled: dict[str, Result] = {}  # handed on when pushed out of `held`, settled at the end unless late
    closed: set[str] = set()
    late: set[str] = set()
    opened: set[str] = set()
    with open_tar(source, task.tar) as tar:
        for member in members(tar, where):
            if len(closed) == len(todo):
                break
            key = task.names.key(member.name) if member.isfile() else None
            if key is not None and key[0] not in task.plate_wells:
                unplanned[member.name] = None
            if key is None or key[0] not in todo or key[0] in late:
                continue
            well, site, channel = key
            if well in unsettled:
                del unsettled[well]
                late.add(well)
                continue
            if well in closed or (well in held and (site, channel) in held[well].images):
                raise SourceError(f"{where}: {member.name} is a second image for {task.names.label(well, site, channel)}; "
                                  "a tar holds one image per site and channel: re-download it")
            state = held.setdefault(well, _OpenWell(todo[well]))
            opened.add(well)
            state.images[(site, channel)] = (site, channel, f"{where}:{member.name}", read_member(tar, member, where))
            if state.complete:
                results[well] = finish(held.pop(well).handed(task), True)
                closed.add(well)
            elif len(held) > OPEN_WELLS:
                oldest = next(iter(held))
                unsettled[oldest] = results[oldest] = finish(held.pop(oldest).handed(task), False)
    for well, state in held.items():
        results[well] = finish(state.handed(task), True)
    for result in unsettled.values():
        settle(result)
    for well in todo.keys() - opened:  # not one image of the well in the tar
        results[well] = finish(_OpenWell(todo[well]).handed(task), True)
    return late


@contextmanager
def open_tar(source: Source, rel: str) -> Iterator[tarfile.TarFile]:
    """A tar of the source, read front to back: seeking past unneeded members where the source can seek,
    else as one stream (one GET from a bucket)."""
    where = source.path(rel)
    try:
        stream = source.open_stream(rel)
    except OSError as exc:
        raise SourceError(f"{where}: cannot read: {exc}; check the path and re-run") from exc
    with stream:
        try:
            tar = tarfile.open(fileobj=stream, mode="r:" if stream.seekable() else "r|", bufsize=STREAM_CHUNK)
        except (tarfile.TarError, OSError) as exc:
            raise SourceError(f"{where}: not a readable uncompressed tar ({exc}); re-download it") from exc
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
            raise SourceError(f"{where}: damaged tar ({exc}); re-download it, then re-run to resume") from exc
        yield member


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes | SourceError:
    """The bytes of one member, or the error of a tar cut short inside it (naming the member)."""
    try:
        data = tar.extractfile(member)
        return data.read() if data is not None else b""
    except (tarfile.TarError, OSError) as exc:
        return SourceError(f"{where}:{member.name}: cannot read ({exc}); re-download the tar, then re-run to resume")
