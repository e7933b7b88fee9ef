"""The output store: what is already there, refusing to clobber what is not ours, and small JSON records.

Everything goes through a zarr Store, so the same code serves a local folder, a bucket, or a test's
wrapper store that injects faults.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import obstore
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.common import concurrent_map
from zarr.core.sync import sync
from zarr.storage import LocalStore, ObjectStore

from converters.errors import StoreError
from converters.location import parse_location

ROOT_ATTR = "platezarr"
MARKER_ATTR = "platezarr_conversion"
RECORDS = "_platezarr"
LOCK_KEY = f"{RECORDS}/lock.json"  # the lock of the conversion writing the store (converters/lock.py)
REPLACING_KEY = f"{RECORDS}/replacing.json"  # an --overwrite under way (Output.clear)
RECORDS_AT_ONCE = 100  # records read at once (`Output.well_records`); a 16-bit well's, parsed, takes about 250 KB
REPLACING = {"zarr_format": 3, "node_type": "group", "attributes": {MARKER_ATTR: {"replacing": True}}}
# What an array's folder holds besides its zarr.json: chunk or shard keys (`c.0.1`, `c/0/1`, `c` if 0-d) and
# the `.partial` files killed writes leave beside them; any node's folder may hold a `.partial` of its zarr.json.
CHUNK_KEY = re.compile(r"c(?:[./]\d+)*(?:\.[0-9a-f]+\.partial)?")
META_PARTIAL = re.compile(r"zarr(?:\.json)?\.[0-9a-f]+\.partial")
LOCK_PARTIAL = re.compile(re.escape(LOCK_KEY) + r"\.[0-9a-f]+\.partial")  # a lock write killed before its cleanup
State = Literal["absent", "foreign", "incomplete", "complete"]

log = logging.getLogger("platezarr")


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
        """A small JSON record, or None if there is none; a BucketError if a bucket cannot be read."""
        return self._read_jsons([key], key)[0]

    def well_records(self, prefix: str) -> Iterator[tuple[str, int, dict]]:
        """Every well's record `{prefix}{group}/{well_index}.json` as (group, well index, record), `RECORDS_AT_ONCE`
        read at once with zarr's async concurrency: resuming a conversion from a bucket reads one record per
        finished well (a million for half of RxRx3), which one after another would take a round trip each."""
        keys = [key for key in self.keys(prefix) if key.endswith(".json")]
        for start in range(0, len(keys), RECORDS_AT_ONCE):
            batch = keys[start:start + RECORDS_AT_ONCE]
            for key, record in zip(batch, self._read_jsons(batch, f"the records under {prefix}")):
                if record is not None:
                    group, _, name = key.removeprefix(prefix).rpartition("/")
                    yield group, int(name.removesuffix(".json")), record

    def _read_jsons(self, keys: list[str], what: str) -> list[dict | None]:
        from converters.location import bucket_errors

        async def read(key: str) -> Buffer | None:
            return await self.store.get(key, prototype=default_buffer_prototype())

        with bucket_errors(self.location, f"read {what}", self.store):
            buffers = sync(concurrent_map([(key,) for key in keys], read, zarr.config.get("async.concurrency")))
        return [None if buffer is None else json.loads(buffer.to_bytes()) for buffer in buffers]

    def write_json(self, key: str, value: dict) -> None:
        """Write a small JSON record, atomically."""
        self.write_bytes(key, [json.dumps(value).encode()])

    def write_bytes(self, key: str, pieces: list[bytes]) -> None:
        """Write one object whole: on a local store as one atomic file write (skipping zarr's event loop),
        elsewhere as one PUT (`put_whole`). A reader, or a killed run, sees all of it or none."""
        try:
            if self.local_path is not None and not self.store.read_only:
                write_atomic(self.local_path / key, pieces)
            else:
                sync(put_whole(self.store, key, b"".join(pieces)))
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.location}: cannot write {key}: {exc.strerror or exc}; free space or fix "
                             "permissions, then re-run the same command to resume") from exc

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`; a BucketError if a bucket cannot be listed."""
        from converters.location import bucket_errors

        async def collect() -> list[str]:
            return [key async for key in self.store.list_prefix(prefix)]

        with bucket_errors(self.location, "list the store", self.store):
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
        """The state of this store given its root zarr.json as already read (None: there is none).

        The lock of a running conversion counts for nothing, nor does the `.partial` file of a root zarr.json or of
        the lock whose write was killed, and a store an `--overwrite` emptied (`clear` deletes the root last) is
        absent, whatever foreign files it kept.
        """
        if meta is None:
            keys = [key for key in self.keys("") if key != LOCK_KEY and not META_PARTIAL.fullmatch(key)
                    and not LOCK_PARTIAL.fullmatch(key)]
            return "absent" if not keys or REPLACING_KEY in keys else "foreign"
        attrs = meta.get("attributes", {}) if meta.get("node_type") == "group" else {}
        if ROOT_ATTR in attrs and "consolidated_metadata" in meta:
            return "complete"
        if ROOT_ATTR in attrs or MARKER_ATTR in attrs:
            return "incomplete"
        return "foreign"

    def clear(self) -> None:
        """Delete the platezarr store here, and only it: the nodes its zarr.json files list, and its records.

        Resumable: a marker and a root that reads as unfinished go first, so a store half deleted is ours
        and incomplete (`finish_replace` ends the job); each node goes children first, its zarr.json last,
        and the root zarr.json last of all, so all that is left stays reachable from it. The lock, foreign
        files and folders, and whatever a symlink leads to are kept, and named in a warning.
        """
        self.write_json(REPLACING_KEY, {"started": datetime.now(UTC).isoformat(timespec="seconds")})
        kept: list[str] = []
        if self.root_meta() is not None:
            self.write_json("zarr.json", REPLACING)
            sync(self._delete_below("", "group", kept))
        self.delete(RECORDS, keep=(LOCK_KEY, REPLACING_KEY))
        sync(self.store.delete("zarr.json"))
        if kept:
            log.warning("%s: --overwrite kept %d files or folders that are not part of the platezarr store: %s",
                        self.location, len(kept), ", ".join(kept[:10]) + (", ..." if len(kept) > 10 else ""))

    def finish_replace(self) -> None:
        """Finish deleting a store an interrupted `--overwrite` left half done (see `clear`); else do nothing."""
        if self.root_meta() == REPLACING:
            self.clear()

    async def _delete_below(self, path: str, node_type: str, kept: list[str]) -> None:
        """Delete what the node at `path` holds: its child nodes if a group, its chunks if an array; note every
        other entry, left alone, in `kept`."""
        prefix = f"{path}/" if path else ""
        ours: list[str] = []
        for name in [name async for name in self.store.list_dir(path)]:
            key = prefix + name
            if name == "zarr.json" or key == RECORDS:
                continue
            if self._is_link(key):
                kept.append(key)
            elif META_PARTIAL.fullmatch(name):
                ours.append(key)
            elif node_type == "array" and name == "c":  # the folder of chunks with separator "/", or a 0-d chunk
                for found in [k async for k in self.store.list_prefix(f"{key}/")] or [key]:
                    (ours if CHUNK_KEY.fullmatch(found.removeprefix(prefix)) else kept).append(found)
            elif node_type == "array" and CHUNK_KEY.fullmatch(name):
                ours.append(key)
            elif node_type == "group" and (child := await self._node_type(key)) is not None:
                await self._delete_below(key, child, kept)
                await self.store.delete(f"{key}/zarr.json")
                self._prune(key)
            else:
                kept.append(key)
        await delete_keys(self.store, ours)

    async def _node_type(self, key: str) -> str | None:
        """"group" or "array" if `key` is a Zarr node (it has a zarr.json saying so), else None."""
        buffer = await self.store.get(f"{key}/zarr.json", prototype=default_buffer_prototype())
        try:
            node_type = None if buffer is None else json.loads(buffer.to_bytes()).get("node_type")
        except (ValueError, AttributeError):
            return None
        return node_type if node_type in ("group", "array") else None

    def _is_link(self, key: str) -> bool:
        return self.local_path is not None and (self.local_path / key).is_symlink()

    def _prune(self, key: str) -> None:
        """Remove the node folder `key` and the chunk folders in it if deleting left them empty (local stores)."""
        if self.local_path is None:
            return
        folder = self.local_path / key
        if not (folder / "c").is_symlink():
            for sub, _, _ in os.walk(folder / "c", topdown=False):
                with suppress(OSError):
                    os.rmdir(sub)
        with suppress(OSError):
            folder.rmdir()

    def delete_partials(self) -> None:
        """Remove the `.partial` files a killed run left mid-write (local stores write shards that way)."""
        if self.local_path is not None:
            for partial in self.local_path.rglob("*.partial"):
                partial.unlink(missing_ok=True)

    def delete(self, prefix: str, keep: tuple[str, ...] = (LOCK_KEY,)) -> None:
        """Delete every key under the folder `prefix` but those in `keep`, directly in it: by default the lock."""
        if self.local_path is None:
            sync(delete_keys(self.store, [key for key in self.keys(f"{prefix}/") if key not in keep]))
            return
        folder = self.local_path / prefix
        for entry in [] if folder.is_symlink() or not folder.is_dir() else list(folder.iterdir()):
            if f"{prefix}/{entry.name}" in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


async def delete_keys(store: Store, keys: list[str]) -> None:
    """Delete `keys`: from a bucket in batches (one request per 1,000 keys), elsewhere as many at once as
    zarr's async concurrency allows."""
    if isinstance(store, ObjectStore):
        import obstore

        for start in range(0, len(keys), 1000):
            await obstore.delete_async(store.store, keys[start:start + 1000])
        return
    await concurrent_map([(key,) for key in keys], store.delete, zarr.config.get("async.concurrency"))


@contextmanager
def storage_errors(output: Output) -> Iterator[None]:
    """Turn an OSError of the output store (disk full, permissions) into a StoreError that says how to go on."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"{output.location}: cannot write: {exc.strerror or exc}; free space or fix permissions, "
                         "then re-run the same command to resume") from exc


def check_output(output: Output, source: str) -> None:
    """Refuse an output that overlaps the source (`check_apart`), or a local folder that cannot be created."""
    check_apart(source, output)
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


def check_apart(source: str, output: Output) -> None:
    """Refuse a source and an output that overlap: the same folder, one inside the other, or a symlink in one
    leading into the other. Local paths are compared resolved; bucket URLs by bucket and prefix."""
    sources: Iterable[tuple[str, tuple[str, ...]]] = _bucket_reach(source)
    outputs = _bucket_reach(output.location)
    if output.local_path is not None and "://" not in source:
        sources, outputs = _reach(Path(source), follow=True), list(_reach(output.local_path, follow=False))
    for shown_source, src in sources:
        for shown_output, out in outputs:
            if out[:len(src)] == src or src[:len(out)] == out:
                relation = ("is the same folder as the source" if out == src else
                            "is inside the source folder" if len(out) > len(src) else "contains the source")
                raise StoreError(f"output {shown_output} {relation} {shown_source}; write the store somewhere else")


def _reach(root: Path, follow: bool) -> Iterator[tuple[str, tuple[str, ...]]]:
    """`root` and every symlink below it as (name for messages, parts of the real path it leads to); with
    `follow`, symlinked folders are searched too, each once, as the source is read."""
    real = os.path.realpath(root)
    yield str(root), Path(real).parts
    stack, seen = [root], {real}
    while stack:
        try:
            with os.scandir(stack.pop()) as scan:
                entries = list(scan)
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                yield f"{entry.path} (a symlink to {target})", Path(target).parts
                if follow and target not in seen and os.path.isdir(target):
                    seen.add(target)
                    stack.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))


def _bucket_reach(url: str) -> list[tuple[str, tuple[str, ...]]]:
    """A bucket URL as (url, (scheme, bucket, *prefix)), s3a:// read as s3:// and gcs:// as gs://; [] if not one."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("s3", "s3a", "gs", "gcs"):
        return []
    return [(url, ({"s3a": "s3", "gcs": "gs"}.get(scheme, scheme), *(p for p in rest.split("/") if p)))]


def is_platezarr_store(path: Path) -> bool:
    """True for a finished store and for one a conversion started."""
    return Output.open(path).state() in ("incomplete", "complete")


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


async def put_whole(store: Store, key: str, data: bytes) -> None:
    """Store one object in one request: in a bucket never as a multipart upload, which obstore would make of an
    object of over 5 MiB (a 16-bit well's shard) in several requests."""
    if isinstance(store, ObjectStore):
        await obstore.put_async(store.store, key, data, use_multipart=False)
    else:
        await store.set(key, default_buffer_prototype().buffer.from_bytes(data))


def put_objects(store: Store, objects: list[tuple[str, bytes]]) -> None:
    """Store many whole objects, each written once: as files on a local disk (zarr's hop to a thread per object
    costs 5x more), else all at once (`put_whole`), up to zarr's `async.concurrency` in flight."""
    if isinstance(store, LocalStore):
        for key, data in objects:
            write_atomic(Path(store.root) / key, [data])
        return
    sync(concurrent_map(objects, lambda key, data: put_whole(store, key, data), zarr.config.get("async.concurrency")))
