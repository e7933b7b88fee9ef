"""Where source files live: list and read them relative to a root folder or bucket prefix.

Both kinds of source pickle, so workers on other processes or machines read for themselves.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from converters.errors import SourceError
from converters.location import Location, parse_location


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

    def walk(self) -> Iterator[tuple[str, int]]:
        """Every file below the root as (relative path, size in bytes), in no particular order.

        Symlinked folders are followed (datasets are often linked in), each real folder once.
        """
        stack, seen = [self.root], {self.root.resolve()}
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir():
                        real = Path(entry.path).resolve()
                        if real not in seen:
                            seen.add(real)
                            stack.append(Path(entry.path))
                    elif entry.is_file():
                        rel = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                        yield rel, entry.stat().st_size

    def read(self, rel: str) -> bytes:
        """The bytes of one file; errors name the file."""
        path = self.root / rel
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None

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
    def root(self) -> None:
        return None

    def walk(self) -> Iterator[tuple[str, int]]:
        """Every object under the prefix as (relative path, size in bytes)."""
        import obstore

        try:
            for batch in obstore.list(self.store, chunk_size=1000):
                for meta in batch:
                    yield meta["path"], int(meta["size"])
        except Exception as exc:  # obstore raises per-cloud errors; all mean the listing failed
            raise SourceError(f"{self.url}: cannot list the source: {exc}") from None

    def read(self, rel: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self.store, rel).bytes())
        except FileNotFoundError:
            raise SourceError(f"{self.path(rel)}: not found; was it deleted since the listing?") from None
        except Exception as exc:
            raise SourceError(f"{self.path(rel)}: cannot read: {exc}") from None

    def path(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def __getstate__(self) -> dict:
        return {"location": self.location}

    def __setstate__(self, state: dict) -> None:
        self.location = state["location"]
        self.__post_init__()


Source = LocalSource | BucketSource


class Listing:
    """Every file of a source as (relative path, size), kept as Arrow strings and int64 sizes.

    About 40 bytes a file where a list of (str, int) tuples takes 180, and, unlike those, freed for
    good once the plan is made: a list of Python objects per file stays resident after it is freed
    (CPython's allocator cannot hand back its arenas while anything allocated meanwhile sits in them).
    Iterating yields the tuples, a chunk at a time, as often as needed.
    """

    CHUNK = 8192

    def __init__(self, names: list[pa.Array], sizes: np.ndarray) -> None:
        self.names, self.sizes = names, sizes  # names in chunks; sizes of all files, in order

    @classmethod
    def of(cls, files: Iterable[tuple[str, int]]) -> Listing:
        """The listing of `files`: (relative path, size) pairs, e.g. from `Source.walk()`."""
        chunks: list[pa.Array] = []
        names: list[str] = []
        sizes = array("q")
        for rel, size in files:
            names.append(rel)
            sizes.append(size)
            if len(names) == cls.CHUNK:
                chunks.append(pa.array(names, pa.string()))
                names.clear()
        if names or not chunks:
            chunks.append(pa.array(names, pa.string()))
        return cls(chunks, np.frombuffer(sizes, dtype=np.int64) if sizes else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.sizes)

    def chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """(names, sizes) a chunk at a time."""
        start = 0
        for names in self.names:
            yield names, self.sizes[start:start + len(names)]
            start += len(names)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for names, sizes in self.chunks():
            yield from zip(names.to_pylist(), sizes.tolist())


def open_source(location: str | os.PathLike[str], storage_options: dict | None = None) -> Source:
    """The source at a path or URL."""
    parsed = parse_location(location, storage_options)
    return LocalSource.open(parsed.path) if parsed.path is not None else BucketSource(parsed)
