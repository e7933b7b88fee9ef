"""The output store: what is already there, refusing to clobber what is not ours, and small JSON records.

Everything goes through a zarr Store, so the same code serves a local folder, a bucket, or a test's
wrapper store that injects faults.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, ObjectStore

from converters.errors import StoreError
from converters.location import parse_location

ROOT_ATTR = "platezarr"
MARKER_ATTR = "platezarr_conversion"
RECORDS = "_platezarr"
State = Literal["absent", "foreign", "incomplete", "complete"]


@dataclass
class Output:
    """An output store and a name for it in messages; picklable, so workers can write to it."""

    store: Store
    location: str

    @classmethod
    def open(cls, out: str | os.PathLike[str] | Store, read_only: bool = False,
             storage_options: dict | None = None) -> Output:
        """The store at a path or URL (or a zarr Store as it is, e.g. a test's fault-injecting wrapper)."""
        if isinstance(out, Store):
            return cls(out, str(out))
        location = parse_location(out, storage_options)
        if location.path is not None:
            return cls(LocalStore(location.path, read_only=read_only), str(location.path))
        if location.read_only_scheme and not read_only:
            raise StoreError(f"{location.url}: http(s) URLs are read-only; write the store to a path, s3:// or gs://")
        return cls(ObjectStore(location.object_store(), read_only=read_only), location.url.rstrip("/"))

    def nbytes(self) -> int:
        """Total bytes of every object in the store."""
        if self.local_path is not None:
            return store_bytes(self.local_path)
        return int(sync(self.store.getsize_prefix("")))

    @property
    def local_path(self) -> Path | None:
        return Path(self.store.root) if isinstance(self.store, LocalStore) else None

    def read_json(self, key: str) -> dict | None:
        buffer = sync(self.store.get(key, prototype=default_buffer_prototype()))
        return None if buffer is None else json.loads(buffer.to_bytes())

    def write_json(self, key: str, value: dict) -> None:
        """Write a small JSON record; on a local store as one atomic file write, skipping zarr's event loop."""
        data = json.dumps(value).encode()
        try:
            if self.local_path is not None and not self.store.read_only:
                write_atomic(self.local_path / key, [data])
            else:
                sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
        except OSError as exc:
            raise StoreError(f"{self.location}: cannot write {key}: {exc.strerror or exc}; free space or fix "
                             "permissions, then re-run the same command to resume") from None

    def keys(self, prefix: str) -> list[str]:
        async def collect() -> list[str]:
            return [key async for key in self.store.list_prefix(prefix)]

        return sync(collect())

    def root_meta(self) -> dict | None:
        """The root zarr.json, or None if there is none (or it is not JSON)."""
        try:
            return self.read_json("zarr.json")
        except ValueError:
            return None

    def state(self) -> State:
        """absent (empty), foreign (not ours: never touched), incomplete (a conversion started), complete."""
        return self.classify(self.root_meta())

    def classify(self, meta: dict | None) -> State:
        """The state of this store given its root zarr.json as already read (None: there is none)."""
        if meta is None:
            return "absent" if not self.keys("") else "foreign"
        attrs = meta.get("attributes", {}) if meta.get("node_type") == "group" else {}
        if ROOT_ATTR in attrs and "consolidated_metadata" in meta:
            return "complete"
        if ROOT_ATTR in attrs or MARKER_ATTR in attrs:
            return "incomplete"
        return "foreign"

    def clear(self) -> None:
        """Delete the whole store (only ever called on a store platezarr wrote)."""
        self.delete("")

    def delete_partials(self) -> None:
        """Remove the `.partial` files a killed run left mid-write (local stores write shards that way)."""
        if self.local_path is not None:
            for partial in self.local_path.rglob("*.partial"):
                partial.unlink(missing_ok=True)

    def delete(self, prefix: str) -> None:
        """Delete every key under `prefix` ("" for all)."""
        if self.local_path is not None:
            shutil.rmtree(self.local_path / prefix, ignore_errors=True)
        else:
            sync(self.store.delete_dir(prefix))


@contextmanager
def storage_errors(output: Output) -> Iterator[None]:
    """Turn an OSError of the output store (disk full, permissions) into a StoreError that says how to go on."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"{output.location}: cannot write: {exc.strerror or exc}; free space or fix permissions, "
                         "then re-run the same command to resume") from None


def check_output(output: Output, source: str) -> None:
    """Refuse an output inside the source, or a local folder that cannot be created."""
    if output.location == source.rstrip("/") or output.location.startswith(source.rstrip("/") + "/"):
        raise StoreError(f"output {output.location} is inside the source folder {source}; write the store somewhere else")
    path = output.local_path
    if path is None:
        return
    parent = next((p for p in (path, *path.parents) if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise StoreError(f"cannot create {path}: {parent} is not a folder")
    if not path.exists() and parent != path.parent:
        raise StoreError(f"cannot create {path}: its parent folder {path.parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create {path}: no write permission in {parent}")


def is_platezarr_store(path: Path) -> bool:
    """True for a finished store and for one a conversion started."""
    return Output.open(path).state() in ("incomplete", "complete")


def open_output_array(store: Store, path: str) -> zarr.Array:
    """An existing array of the store, opened for writing whole shards without scanning for empty chunks."""
    return zarr.open_array(store, path=path, mode="r+", config={"write_empty_chunks": True})


def store_bytes(path: os.PathLike[str] | str) -> int:
    """Total bytes of every file below `path`."""
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def write_atomic(path: Path, pieces: Iterable[bytes]) -> None:
    """Write `pieces` as the file `path`, replacing it atomically: a reader, or a killed run, sees all or nothing.

    The bytes go to a unique `.partial` file beside `path` first, which is then renamed over it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with open(partial, "wb") as f:
            f.writelines(pieces)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
