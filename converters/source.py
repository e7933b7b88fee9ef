"""Where source files live: list and read them relative to a root folder or bucket prefix.

Both kinds of source pickle, so workers on other processes or machines read for themselves.
"""

from __future__ import annotations

import errno
import io
import logging
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from converters.errors import SourceError
from converters.location import Location, bucket_error, parse_location

log = logging.getLogger("platezarr")
STREAM_CHUNK = 8 << 20  # bytes per read of a streamed bucket object


class Source(Protocol):
    """Where a dataset's files are: listed, read whole, read in part, or streamed, by path relative to its root."""

    @property
    def url(self) -> str:
        """The source's root, as the user named it (a path or a URL)."""

    @property
    def lists_cheaply(self) -> bool:
        """Whether reading a tar's member headers while planning is cheap (a local disk), or a whole download."""

    def walk(self, *, on_error: str = "fail") -> Iterator[tuple[str, int]]:
        """Every file below the root as (relative path, size in bytes); with on_error="skip", parts that cannot
        be listed are reported and left out."""

    def read(self, rel: str) -> bytes:
        """The bytes of one file; errors name it."""

    def read_head(self, rel: str, n: int) -> bytes:
        """The first `n` bytes of one file (fewer if it is shorter)."""

    def open_stream(self, rel: str) -> BinaryIO:
        """One file as a binary file object, read front to back (seekable only where that is cheap)."""

    def path(self, rel: str) -> str:
        """A human-readable location of `rel`, for messages."""


@dataclass(frozen=True)
class LocalSource:
    """A source folder on the local file system; paths are POSIX, relative to `root`."""

    root: Path

    @classmethod
    def open(cls, location: str | os.PathLike[str]) -> LocalSource:
        text = os.fspath(location)
        path = Path(text.removeprefix("file://")).expanduser().resolve()
        if not path.exists():
            raise SourceError(f"source {text!r} does not exist; pass the folder that holds the images")
        if not path.is_dir():
            raise SourceError(f"source {text!r} is a file; pass the folder that holds the images")
        return cls(path)

    @property
    def url(self) -> str:
        return str(self.root)

    @property
    def lists_cheaply(self) -> bool:
        return True

    def walk(self, *, on_error: str = "fail") -> Iterator[tuple[str, int]]:
        """Every file below the root as (relative path, size in bytes), in no particular order.

        Symlinked folders are followed (datasets are often linked in), each real folder once; a link that leads
        nowhere (dangling, or a loop) or to a folder holding the root is skipped with a warning. What cannot be read
        is a SourceError naming it, or with on_error="skip" a warning naming it, and the walk goes on.
        """
        def unreadable(path: str, exc: OSError) -> None:
            if on_error != "skip":
                raise SourceError(f"{path}: cannot read: {exc.strerror or exc}; make it readable (e.g. chmod -R u+rX), "
                                  "or pass --on-error skip to convert without it") from exc
            log.warning("%s: skipped, cannot read: %s", path, exc.strerror or exc)

        root = self.root.resolve()
        stack: list[tuple[Path, str]] = [(self.root, "")]  # each folder with its path below the root, `a/b/`
        seen = {root}
        while stack:
            folder, below = stack.pop()
            try:
                entries = os.scandir(folder)
            except OSError as exc:
                unreadable(str(folder), exc)
                continue
            with entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                        size = entry.stat().st_size if not is_dir and entry.is_file() else None
                    except OSError as exc:
                        if exc.errno == errno.ELOOP:
                            log.warning("%s: skipped: a symbolic link in a loop (%s)", entry.path, exc.strerror)
                        elif exc.errno == errno.ENOENT:
                            log.warning("%s: skipped: gone since its folder was listed", entry.path)
                        else:
                            unreadable(entry.path, exc)
                        continue
                    if is_dir:
                        real = Path(entry.path).resolve()
                        if real in seen:
                            continue
                        if root.is_relative_to(real):
                            log.warning("%s: skipped: a link to %s, which holds the source itself", entry.path, real)
                            continue
                        seen.add(real)
                        stack.append((Path(entry.path), f"{below}{entry.name}/"))
                    elif size is not None:
                        yield below + entry.name, size
                    elif entry.is_symlink():
                        log.warning("%s: skipped: a link to %s, which does not exist", entry.path,
                                    os.readlink(entry.path))

    def read(self, rel: str) -> bytes:
        """The bytes of one file; errors name the file."""
        path = self.root / rel
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    def read_head(self, rel: str, n: int) -> bytes:
        with self.open_stream(rel) as f:
            return f.read(n)

    def open_stream(self, rel: str) -> BinaryIO:
        try:
            return open(self.root / rel, "rb")
        except OSError as exc:
            raise SourceError(f"{self.root / rel}: cannot read: {exc.strerror or exc}") from exc

    def path(self, rel: str) -> str:
        """A human-readable location of `rel`, for messages."""
        return str(self.root / rel)


@dataclass
class BucketSource:
    """A source under a bucket URL (s3://, gs://, https://), read with obstore: one GET per file."""

    location: Location

    def __post_init__(self) -> None:
        self.store = self.location.object_store()

    @property
    def url(self) -> str:
        return self.location.url.rstrip("/")

    @property
    def lists_cheaply(self) -> bool:
        return False

    def walk(self, *, on_error: str = "fail") -> Iterator[tuple[str, int]]:
        """Every object under the prefix as (relative path, size in bytes); a listing is whole or fails."""
        import obstore

        try:
            for batch in obstore.list(self.store, chunk_size=1000):
                for meta in batch:
                    yield meta["path"], int(meta["size"])
        except Exception as exc:  # obstore raises per-cloud errors; all mean the listing failed
            raise bucket_error(self.url, "list the source", exc, self.store) from exc

    def read(self, rel: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self.store, rel).bytes())
        except FileNotFoundError as exc:
            raise SourceError(f"{self.path(rel)}: not found; was it deleted since the listing?") from exc
        except Exception as exc:  # obstore raises per-cloud errors; all mean the read failed
            raise bucket_error(self.path(rel), "read", exc, self.store) from exc

    def read_head(self, rel: str, n: int) -> bytes:
        """The first `n` bytes, in one ranged GET."""
        import obstore

        try:
            return bytes(obstore.get_range(self.store, rel, start=0, end=n))
        except Exception as exc:  # obstore raises per-cloud errors; all mean the read failed
            raise bucket_error(self.path(rel), "read", exc, self.store) from exc

    def open_stream(self, rel: str) -> BinaryIO:
        """The object as one streamed GET, buffered."""
        return io.BufferedReader(_ObjectStream(self.store, rel), STREAM_CHUNK)

    def path(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def __getstate__(self) -> dict:
        return {"location": self.location}

    def __setstate__(self, state: dict) -> None:
        self.location = state["location"]
        self.__post_init__()


class _ObjectStream(io.RawIOBase):
    """A bucket object as a read-once file: the chunks of one streamed GET, handed on in order."""

    def __init__(self, store: Any, rel: str) -> None:
        import obstore

        try:
            self._chunks = iter(obstore.get(store, rel).stream(min_chunk_size=STREAM_CHUNK))
        except Exception as exc:  # obstore raises per-cloud errors; all mean the object cannot be read
            raise OSError(f"cannot read: {exc}") from exc
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:  # obstore raises per-cloud errors; all mean the stream broke
                raise OSError(f"the download broke off: {exc}") from exc
            if chunk is None:
                return 0
            self._buffer = memoryview(bytes(chunk))
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class Listing:
    """Every file of a source as (relative path, size), sorted by path, kept as one Arrow string column and int64
    sizes.

    About 50 bytes a file where a list of (str, int) tuples takes 180, and, unlike those, freed for
    good once the plan is made: a list of Python objects per file stays resident after it is freed
    (CPython's allocator cannot hand back its arenas while anything allocated meanwhile sits in them).
    Sorted once, here, so that every layout meets the files in one order, whatever order the source
    listed them in, and a column of their paths in that order is this one, not a copy. Iterating yields
    the tuples, a chunk at a time, as often as needed.
    """

    CHUNK = 8192

    def __init__(self, names: pa.Array, sizes: np.ndarray) -> None:
        self.names, self.sizes = names, sizes  # every file's path, sorted, and its size

    @classmethod
    def of(cls, files: Iterable[tuple[str, int]]) -> Listing:
        """The listing of `files`: (relative path, size) pairs, e.g. from `Source.walk()`."""
        chunks: list[pa.Array] = []
        names: list[str] = []
        sizes = array("q")
        pool = pa.system_memory_pool()  # Arrow's default allocator keeps a third more than many small arrays take
        for rel, size in files:
            names.append(rel)
            sizes.append(size)
            if len(names) == cls.CHUNK:
                chunks.append(pa.array(names, pa.large_string(), memory_pool=pool))
                names.clear()
        if names or not chunks:
            chunks.append(pa.array(names, pa.large_string(), memory_pool=pool))
        listed = pa.chunked_array(chunks, pa.large_string())
        del chunks
        order = pc.sort_indices(listed, memory_pool=pool)
        in_order = pc.take(listed, order, memory_pool=pool)
        del listed
        one = in_order.chunk(0) if in_order.num_chunks == 1 else in_order.combine_chunks(memory_pool=pool)
        return cls(one, np.frombuffer(sizes, dtype=np.int64)[order.to_numpy()] if sizes else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.sizes)

    def all_names(self) -> pa.ChunkedArray:
        """Every file's relative path, in order, as chunks of `CHUNK` names (slices of `names`, not copies), for
        work done a chunk at a time. Large strings, as pandas' `str` columns hold them, so a pandas column of
        these names is not a copy either."""
        return pa.chunked_array([names for names, _ in self.chunks()], pa.large_string())

    def chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """(names, sizes) a chunk at a time."""
        for start in range(0, len(self.names), self.CHUNK):
            yield self.names.slice(start, self.CHUNK), self.sizes[start:start + self.CHUNK]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for names, sizes in self.chunks():
            yield from zip(names.to_pylist(), sizes.tolist())


def open_source(location: str | os.PathLike[str], storage_options: dict | None = None) -> Source:
    """The source at a path or URL."""
    parsed = parse_location(location, storage_options)
    return LocalSource.open(parsed.path) if parsed.path is not None else BucketSource(parsed)
