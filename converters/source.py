"""Where source files live: list and read them relative to a root folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from converters.errors import SourceError


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
