"""Where source files live: list and read them relative to a root folder or bucket prefix.

Both kinds of source pickle, so workers on other processes or machines read for themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def open_source(location: str | os.PathLike[str], storage_options: dict | None = None) -> Source:
    """The source at a path or URL."""
    parsed = parse_location(location, storage_options)
    return LocalSource.open(parsed.path) if parsed.path is not None else BucketSource(parsed)
