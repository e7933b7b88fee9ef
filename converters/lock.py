"""One conversion per output store: a lock record, `_platezarr/lock.json`, created before anything else is written.

The record names its owner (host, pid, start time) and carries a heartbeat, rewritten every
`HEARTBEAT_SECONDS` while the conversion runs. A second conversion finds the record and refuses at
once, naming the owner. The owner is gone, and its lock is taken over, when it ran on this host and
its pid is no longer alive (a `kill -9`), or when its heartbeat is older than `STALE_SECONDS`: the
only test for an owner on another host. A conversion frozen that long (a suspended machine) may so
lose its lock; its next heartbeat notices, and it fails at the end instead of reporting success.
The lock is deleted at the end of a conversion, success or failure; it never changes how a store
classifies (`Output.classify` ignores it) and `Output.delete` of the records keeps it.

What is guaranteed where:
- A local folder: the lock is written whole, then linked into place (`os.link` fails if one exists), so of two conversions exactly one
  gets it. A dead owner's lock is taken over by renaming it aside and checking that the record moved
  is the one judged dead, so of two conversions taking over at once exactly one wins. On a network
  file system this holds where the server honours exclusive creation and rename (NFSv3 and later).
- s3:// and gs:// (obstore through zarr's ObjectStore): the lock is created with a conditional write
  (`put(mode="create")`: If-None-Match on S3, a generation precondition on GCS), and taken over and
  heartbeated with writes conditional on the ETag read, so the same holds as locally. An
  S3-compatible server that ignores these preconditions gives no guarantee; one that rejects them
  (or a client with `conditional_put` disabled) makes the conversion fail with that error.
- Any other zarr Store (a test's wrapper, fsspec): creation is `set_if_not_exists` then a read-back,
  as atomic as that store's `set_if_not_exists`; taking over is check-then-delete, so two conversions
  that find the same dead lock within the same instant could both go ahead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import ObjectStore as Bucket
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import ObjectStore

from converters.errors import StoreError
from converters.location import bucket_error
from converters.output import LOCK_KEY, Output, storage_errors, write_atomic

if TYPE_CHECKING:
    from obstore import UpdateVersion

log = logging.getLogger("platezarr")

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0
ATTEMPTS = 3
FAILURES = (OSError, BaseError, NotImplementedError)  # a store's errors; the last: conditional writes disabled

Version: TypeAlias = "bytes | UpdateVersion"  # what the store holds for a record: its bytes, or its ETag in a bucket


@contextmanager
def owning(output: Output) -> Iterator[None]:
    """Hold the output's lock while a conversion writes it, first finishing a replacement an earlier owner left
    half done; released at the end, success or failure. A lock lost meanwhile fails the conversion."""
    lock = Lock.acquire(output)
    try:
        with storage_errors(output):
            output.finish_replace()
        yield
    finally:
        held = lock.release()
    if not held:
        raise StoreError(f"{output.location}: another conversion took the lock {LOCK_KEY} while this one ran (its "
                         f"heartbeat was more than {STALE_SECONDS:.0f} s old); run `platezarr verify` before using "
                         "the store, or convert again with --overwrite")


@dataclass
class Lock:
    """A lock this process holds on an output, kept alive by a heartbeat thread until released."""

    output: Output
    record: dict
    version: Version
    lost: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, output: Output) -> Lock:
        """Take the output's lock, or take it over from an owner that is gone; refuse, naming the owner, if it lives."""
        try:
            record = new_record()
            for _ in range(ATTEMPTS):
                version = _create(output, record)
                held = None if version is not None else _read(output)
                if held is not None:
                    owner, held_version = held
                    if not is_gone(owner):
                        raise StoreError(busy_message(output, owner))
                    log.warning("%s: taking over the lock of a conversion that is gone (%s)", output.location,
                                describe(owner))
                    version = _take_over(output, held_version, record)
                if version is not None:
                    return cls(output, record, version).start()
        except FAILURES as exc:
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, BaseError):
                raise bucket_error(output.location, f"write the conversion lock {LOCK_KEY}", exc, _bucket(output)) from exc
            raise StoreError(f"{output.location}: cannot take the lock {LOCK_KEY}: {exc}; fix access to the output "
                             "and re-run") from exc
        raise StoreError(f"{output.location}: other conversions keep taking the lock {LOCK_KEY}; run one at a time")

    def start(self) -> Lock:
        self.thread = threading.Thread(target=self._beat, name="platezarr-lock", daemon=True)
        self.thread.start()
        return self

    def _beat(self) -> None:
        """Rewrite the heartbeat every HEARTBEAT_SECONDS; stop, marking the lock lost, once someone else holds it."""
        while not self.stop.wait(HEARTBEAT_SECONDS):
            record = self.record | {"heartbeat": _now()}
            try:
                version = _renew(self.output, self.version, record)
            except FAILURES as exc:
                log.warning("%s: cannot renew the lock's heartbeat: %s; retrying", self.output.location, exc)
                continue
            if version is None:
                self.lost = True
                return
            self.record, self.version = record, version

    def release(self) -> bool:
        """Stop the heartbeat and delete the lock if it is still ours; False if it was lost. A failure is logged."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.lost:
            return False
        try:
            return _delete(self.output, self.version)
        except FAILURES as exc:
            log.warning("%s: cannot delete the lock %s: %s; the next conversion takes it over", self.output.location,
                        LOCK_KEY, exc)
            return True


def new_record() -> dict:
    """A lock record for this process: who holds the lock, since when, and a heartbeat."""
    now = _now()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now,
            "token": uuid.uuid4().hex}


def is_gone(owner: dict) -> bool:
    """True if the lock's owner is dead: its pid is not alive on this host, or its heartbeat is too old."""
    if owner.get("host") == socket.gethostname() and not _alive(owner.get("pid")):
        return True
    return _age(owner.get("heartbeat")) > STALE_SECONDS


def busy_message(output: Output, owner: dict) -> str:
    return (f"{output.location} is being written by another conversion ({describe(owner)}; lock "
            f"{output.location}/{LOCK_KEY}); wait for it to finish, or stop it and re-run: the lock of a process "
            f"that is gone (same host) or whose heartbeat is over {STALE_SECONDS:.0f} s old is taken over")


def describe(owner: dict) -> str:
    return (f"host {owner.get('host', 'unknown')}, pid {owner.get('pid', 'unknown')}, started "
            f"{owner.get('started', 'unknown')}, last heartbeat {owner.get('heartbeat', 'unknown')}")


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(stamp: object) -> float:
    """Seconds since an ISO 8601 time; infinite if it is not one."""
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(str(stamp))).total_seconds()
    except ValueError:
        return float("inf")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _encode(record: dict) -> bytes:
    return json.dumps(record).encode()


def _decode(data: bytes) -> dict:
    """The record, or {} if it is not a JSON object (a lock being written, or garbage)."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _path(output: Output) -> Path | None:
    return None if output.local_path is None else output.local_path / LOCK_KEY


def _bucket(output: Output) -> Bucket | None:
    """The obstore store under zarr's ObjectStore, or None for other stores."""
    return output.store.store if isinstance(output.store, ObjectStore) else None


def _version(meta: Mapping[str, Any]) -> UpdateVersion:
    """An object's version as a conditional write wants it (put results and object metadata both carry one)."""
    version: UpdateVersion = {}
    if meta.get("e_tag") is not None:
        version["e_tag"] = meta["e_tag"]
    if meta.get("version") is not None:
        version["version"] = meta["version"]
    return version


def _create(output: Output, record: dict) -> Version | None:
    """Create the lock record if there is none, atomically where the store allows; its version, or None."""
    data = _encode(record)
    if (path := _path(output)) is not None:
        # written whole beside it, then linked into place, which fails if a lock exists: a kill -9 can never leave
        # an empty lock behind (which would read as still being written, and hold the output for STALE_SECONDS)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        try:
            os.link(partial, path)
        except FileExistsError:
            return None
        finally:
            partial.unlink(missing_ok=True)
        return data
    if (bucket := _bucket(output)) is not None:
        try:
            return _version(obstore.put(bucket, LOCK_KEY, data, mode="create"))
        except AlreadyExistsError:
            return None
    sync(output.store.set_if_not_exists(LOCK_KEY, default_buffer_prototype().buffer.from_bytes(data)))
    return data if _raw(output) == data else None


def _read(output: Output) -> tuple[dict, Version] | None:
    """The lock's record and version, or None if there is none. A local record still being written reads as
    owned by nobody with its file's time as heartbeat, so it is taken over only once that is old."""
    if (bucket := _bucket(output)) is not None:
        try:
            result = obstore.get(bucket, LOCK_KEY)
        except FileNotFoundError:
            return None
        return _decode(bytes(result.bytes())), _version(result.meta)
    data = _raw(output)
    if data is None:
        return None
    record = _decode(data)
    if not record and (path := _path(output)) is not None:
        with suppress(OSError):
            record = {"heartbeat": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()}
    return record, data


def _raw(output: Output) -> bytes | None:
    if (path := _path(output)) is not None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
    buffer = sync(output.store.get(LOCK_KEY, prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.to_bytes()


def _renew(output: Output, version: Version, record: dict) -> Version | None:
    """Rewrite our record (a new heartbeat) if the lock is still ours; its new version, or None if it is not."""
    data = _encode(record)
    if (bucket := _bucket(output)) is not None:
        try:
            return _version(obstore.put(bucket, LOCK_KEY, data, mode=cast("UpdateVersion", version)))
        except (PreconditionError, FileNotFoundError):
            return None
    if _raw(output) != version:
        return None
    if (path := _path(output)) is not None:
        write_atomic(path, [data])
    else:
        sync(output.store.set(LOCK_KEY, default_buffer_prototype().buffer.from_bytes(data)))
    return data


def _take_over(output: Output, version: Version, record: dict) -> Version | None:
    """Replace the dead owner's lock, read as `version`, by ours; None if it changed meanwhile (someone else won)."""
    if _bucket(output) is not None:
        return _renew(output, version, record)  # a write conditional on the dead owner's ETag
    if (path := _path(output)) is not None:
        aside = path.with_name(f"lock.{uuid.uuid4().hex[:12]}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        moved = aside.read_bytes()
        if moved != version:  # a lock created after the dead one was read: put it back
            with suppress(FileExistsError):
                os.link(aside, path)
        aside.unlink()
        return _create(output, record) if moved == version else None
    if _raw(output) != version:
        return None
    sync(output.store.delete(LOCK_KEY))
    return _create(output, record)


def _delete(output: Output, version: Version) -> bool:
    """Delete the lock if it is still ours (and its folder, locally, if that leaves it empty); False if it is not."""
    if (bucket := _bucket(output)) is not None:
        try:
            if _version(obstore.head(bucket, LOCK_KEY)) != version:
                return False
        except FileNotFoundError:
            return False
        obstore.delete(bucket, LOCK_KEY)
        return True
    if _raw(output) != version:
        return False
    if (path := _path(output)) is not None:
        path.unlink(missing_ok=True)
        with suppress(OSError):
            path.parent.rmdir()
    else:
        sync(output.store.delete(LOCK_KEY))
    return True
