"""Read sites and wells of a native store straight from their shards: the one path by which `SiteDataset`,
`verify` and the streams read pixels. An OME-Zarr output (converters/formats/ome.py) is read the same
way, a field's shard standing for a well's.

The layout comes from one images array's zarr.json (every plate shares it), or an OME-Zarr plate's
attributes, and is decoded by the same code that wrote it (converters/shard.py). A shard's index is read once per process and cached
on this object, so after warm-up a site costs one ranged read: one `pread` locally, one ranged GET
from a bucket. Connections open lazily in each process (re-opened after a fork), so a reader is safe
in PyTorch DataLoader workers with fork or spawn.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from converters.errors import BucketError, OptionError, StoreError
from converters.formats.native import NativeFormat
from converters.formats.ome import OmeFormat
from converters.output import ROOT_ATTR
from converters.s3reads import S3Reads, S3Refused
from converters.location import BACKOFF_DEFAULTS, CLIENT_DEFAULTS, RETRY_DEFAULTS, first_line, parse_location
from converters.shard import EMPTY, ShardLayout


CONNECTIONS = 64  # connections a reader may open to a bucket; SiteStream asks for more with a higher concurrency


class _RangedReads:
    """Whole and ranged reads of one store's objects: files locally, converters/s3reads.py on S3, fsspec on
    other buckets.

    Not obstore here: its tokio runtime hangs in a process forked after it started (obstore's own
    maintainers call it not fork-safe), and DataLoader workers fork. A bucket read
    that fails or gets no answer within the `client_options` timeout is tried again up to
    `retry_config.max_retries` times (the storage options obstore takes, same defaults), then a
    BucketError says so: a bucket that stops answering stops a training job instead of hanging it.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None, connections: int = CONNECTIONS) -> None:
        location = parse_location(url, storage_options)
        self.url, self.path = location.url.rstrip("/"), location.path
        self.fs: Any = None
        self.s3: S3Reads | None = None
        self.root = ""
        self.connections = connections
        self._pool: ThreadPoolExecutor | None = None  # for read_many; this object is made afresh in each process
        client = CLIENT_DEFAULTS | location.options.get("client_options", {})
        retry = RETRY_DEFAULTS | location.options.get("retry_config", {})
        backoff = BACKOFF_DEFAULTS | retry.get("backoff", {})
        self.timeout, self.retries = _seconds(client["timeout"]), int(retry["max_retries"])
        self.backoff = (_seconds(backoff["init_backoff"]), _seconds(backoff["max_backoff"]), float(backoff.get("base", 2)))
        if self.path is None and location.url.startswith(("s3://", "s3a://")):
            bucket, _, self.root = location.url.split("://", 1)[1].rstrip("/").partition("/")
            self.s3 = S3Reads(bucket, location.options, _seconds(client["connect_timeout"]), self.timeout, connections)
        elif self.path is None:
            self.fs, self.root = location.fsspec()

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """`length` bytes from `start` (negative: from the end), or the whole object."""
        if self.path is not None:
            with open(self.path / key, "rb") as f:
                if length is None:
                    return f.read()
                size = os.fstat(f.fileno()).st_size
                return os.pread(f.fileno(), length, start if start >= 0 else size + start)
        end = None if length is None else (start + length if start >= 0 else None)
        for attempt in range(self.retries + 1):
            try:
                if self.s3 is not None:
                    return self.s3.get(f"{self.root}/{key}" if self.root else key, start, length)
                return bytes(self.fs.cat_file(f"{self.root}/{key}", start=start, end=end))
            except (FileNotFoundError, PermissionError, S3Refused):
                raise
            except Exception as exc:  # each client raises its own transport errors (http.client, aiohttp, timeouts)
                failure = exc
            if attempt < self.retries:
                first, most, base = self.backoff
                time.sleep(min(first * base**attempt, most))
        raise BucketError(f"{self.url}/{key}: gave up after {self.retries + 1} attempts (timeout {self.timeout:g} s "
                          f"each): {first_line(failure) or type(failure).__name__}; check the endpoint and the "
                          "network, or give more time with storage options like '{\"client_options\": {\"timeout\": "
                          "\"60s\"}, \"retry_config\": {\"max_retries\": 10}}'") from failure

    def read_many(self, key: str, ranges: Sequence[tuple[int, int | None]]) -> list[bytes]:
        """`read` of each (start, length) of `key`, from a bucket all at once: a crop's runs of tiles cost one round
        trip, not one per run."""
        if self.path is not None or len(ranges) < 2:
            return [self.read(key, start, length) for start, length in ranges]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.connections, thread_name_prefix="platezarr-ranges")
        return list(self._pool.map(lambda r: self.read(key, *r), ranges))


def _bounds(window: slice, size: int, axis: str) -> tuple[int, int]:
    """(start, stop) of a window's slice along an axis of `size` pixels; an OptionError unless it is a non-empty
    range of consecutive pixels inside the site."""
    start, stop, step = window.indices(size)
    if step != 1 or start >= stop or (window.stop is not None and window.stop > size):
        raise OptionError(f"window {axis} {window.start}:{window.stop} is not a range of pixels inside a site of "
                          f"{size} on {axis}")
    return start, stop


def _seconds(value: Any) -> float:
    """A duration as obstore's options take it (seconds, a timedelta, or text like "30s", "500ms", "1m") in seconds."""
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h)?\s*", str(value))
    if match is None:
        raise BucketError(f"{value!r} is not a duration: give seconds or text like \"30s\", \"500ms\", \"1m\"")
    return float(match[1]) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match[2]]


class SiteReader:
    """Pixels of one store's sites and wells, checksums checked; picklable, re-opened in each process."""

    def __init__(self, url: str | os.PathLike[str], group: str, storage_options: dict[str, Any] | None = None) -> None:
        """`group` is any plate group of the store: its images array describes every plate's."""
        self.url, self.storage_options = os.fspath(url), storage_options
        self.connections = CONNECTIONS  # at most this many connections to a bucket at once
        self._pid: int | None = None
        self._io: _RangedReads | None = None
        self._retired: list[_RangedReads] = []  # see _retire
        self._lock = threading.Lock()
        self._indexes: dict[str, np.ndarray] = {}
        key = f"{group}/images/zarr.json"
        self.format: NativeFormat | OmeFormat
        try:
            meta = json.loads(self._reads().read(key))
            self.format = NativeFormat(ShardLayout.of(meta, f"{self.url}/{group}/images"))
            self.layout = self.format.layout
            self.sites, self.image_shape = self.layout.shard_shape[1], tuple(meta["shape"][-2:])  # shards may pad it
        except FileNotFoundError:  # an OME-Zarr output: each field is an array of its own (converters/formats/ome.py)
            self.format = OmeFormat.of_plate(self._plate_attrs(group), f"{self.url}/{group}")
            self.layout = self.format.levels[0]
            self.sites, self.image_shape = self.format.sites, self.format.image_shape
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.url}/{key}: cannot read the images array's metadata ({exc})") from exc

    def read_site(self, group: str, well_index: int, site_index: int, well: str = "") -> np.ndarray:
        """One site's (channel, y, x) pixels: once its shard's index is known, one ranged read when the site is one
        chunk or its tiles lie together in the shard (they do with one site per well), else one per run of them."""
        y, x = self.image_shape
        return self.read_window(group, well_index, site_index, (slice(0, y), slice(0, x)), well)

    def read_window(self, group: str, well_index: int, site_index: int, window: tuple[slice, slice],
                    well: str = "") -> np.ndarray:
        """The (channel, y, x) pixels of `window`, the (y0:y1, x0:x1) slices of a site, reading only the chunks it
        intersects: one ranged read per run of them lying next to each other in the shard, sent to a bucket at once
        (a crop of a tiled site reads its few tiles; of a site stored as one chunk, the whole site)."""
        (y0, y1), (x0, x1) = (_bounds(w, n, axis) for w, n, axis in zip(window, self.image_shape, "yx"))
        key, chunks = self._locate(group, well_index, site_index)
        index = self._index(key, well)
        tile = self.layout.chunk_shape[-3:]
        wanted = [c for c in chunks if c[-2] * tile[1] < y1 and (c[-2] + 1) * tile[1] > y0
                  and c[-1] * tile[2] < x1 and (c[-1] + 1) * tile[2] > x0]
        pieces = list(self._chunk_bytes(key, well, index, wanted))
        if len(wanted) == len(pieces) == 1 and tile == (self.layout.shard_shape[-3], y1 - y0, x1 - x0):  # one chunk
            return self.layout.decode_chunk(pieces[0][1], f"{self.url}/{key}").reshape(tile)
        out = np.zeros((self.layout.shard_shape[-3], y1 - y0, x1 - x0), dtype=self.layout.dtype)
        for coords, data in pieces:
            chunk = self.layout.decode_chunk(data, f"{self.url}/{key}").reshape(tile)
            c, ty, tx = (n * t for n, t in zip(coords[-3:], tile))
            ya, yb, xa, xb = max(y0, ty), min(y1, ty + tile[1]), max(x0, tx), min(x1, tx + tile[2])
            out[c:c + tile[0], ya - y0:yb - y0, xa - x0:xb - x0] = chunk[:, ya - ty:yb - ty, xa - tx:xb - tx]
        return out

    def _chunk_bytes(self, key: str, well: str, index: np.ndarray,
                     chunks: list[tuple[int, ...]]) -> Iterator[tuple[tuple[int, ...], bytes]]:
        """The stored bytes of each of `chunks` present in the shard `key`, read as one range per run of chunks that
        follow each other in the shard."""
        located = sorted((int(index[c][0]), int(index[c][1]), c) for c in chunks if int(index[c][0]) != EMPTY)
        runs: list[list[tuple[int, int, tuple[int, ...]]]] = []
        for piece in located:
            if runs and runs[-1][-1][0] + runs[-1][-1][1] == piece[0]:
                runs[-1].append(piece)
            else:
                runs.append([piece])
        ranges = [(run[0][0], run[-1][0] + run[-1][1] - run[0][0]) for run in runs]
        for run, (start, _), data in zip(runs, ranges, self._read_many(key, well, ranges)):
            for offset, nbytes, coords in run:
                yield coords, data if len(run) == 1 else data[offset - start:offset - start + nbytes]

    def read_well(self, group: str, well_index: int, well: str = "") -> np.ndarray:
        """One well's (site, channel, y, x) pixels, read as whole shards (one per well, or per field of OME-Zarr),
        every checksum checked."""
        keys = dict.fromkeys(self._locate(group, well_index, s)[0] for s in range(self.sites))
        shape = self.layout.shard_shape[-3:]
        pieces = [self.layout.decode_shard(self._read(key, well), f"{self.url}/{key}").reshape(-1, *shape) for key in keys]
        return self._cropped(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))

    def _locate(self, group: str, well_index: int, site_index: int) -> tuple[str, list[tuple[int, ...]]]:
        """The store key and chunk positions of a site (for OME-Zarr, after reading which well is which, once a plate)."""
        if isinstance(self.format, OmeFormat):
            self.format.learn_wells(group, self._plate_attrs)
        return self.format.locate(group, well_index, site_index)

    def _plate_attrs(self, group: str) -> dict[str, Any]:
        """The `platezarr` attribute of an OME-Zarr output's plate group (its layout and wells)."""
        try:
            return json.loads(self._reads().read(f"{group}/zarr.json")).get("attributes", {}).get(ROOT_ATTR, {})
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.url}/{group}: neither a native plate (images array) nor an OME-Zarr plate "
                             f"group ({exc})") from exc

    def _cropped(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` without the padding of shards that reach past the image (tiles that do not divide it)."""
        y, x = self.image_shape
        return pixels if pixels.shape[-2:] == (y, x) else np.ascontiguousarray(pixels[..., :y, :x])

    def warm(self, wells: Iterable[tuple[str, int, str]], concurrency: int) -> None:
        """Get ready for `concurrency` reads at a time: allow that many connections to a bucket, and read the shard
        index of each (group, well_index, well) not yet known, that many at a time, so each site then costs one read.

        The indexes stay with this reader when it is pickled or forked into DataLoader workers. A shard whose
        index cannot be read is left for its sites' reads to report; a bucket that does not answer raises here.
        """
        if concurrency > self.connections:
            self.connections = concurrency
            self._retire()
        missing = {self._locate(group, well_index, 0)[0]: well for group, well_index, well in wells}
        missing = {key: well for key, well in missing.items() if key not in self._indexes}

        def read_index(key: str) -> None:
            try:
                self._index(key, missing[key])
            except StoreError:
                pass  # reported, with the site, when a site of this well is read

        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="platezarr-index")
        try:
            for future in [pool.submit(read_index, key) for key in missing]:
                future.result()
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, the reads not yet started are not waited for

    def _index(self, key: str, well: str) -> np.ndarray:
        self._reads()
        if key not in self._indexes:
            n = self.layout.index_nbytes
            self._indexes[key] = self.layout.parse_index(self._read(key, well, -n, n), f"{self.url}/{key}")
        return self._indexes[key]

    def _read(self, key: str, well: str, start: int = 0, length: int | None = None) -> bytes:
        return self._read_many(key, well, [(start, length)])[0]

    def _read_many(self, key: str, well: str, ranges: Sequence[tuple[int, int | None]]) -> list[bytes]:
        """The bytes of each (start, length) of `key` (length None: to the end), read at once from a bucket."""
        try:
            return self._reads().read_many(key, ranges)
        except FileNotFoundError as exc:
            name = f"well {'/'.join(key.split('/')[:2])}/{well}" if well else key
            raise StoreError(f"{self.url}: {name} has no shard ({key}) though the store lists it: the store was "
                             "damaged after it was written; convert it again (or restore the shard)") from exc
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: cannot read: {exc}") from exc

    def _reads(self) -> _RangedReads:
        """The reads of this process (one for all its threads): re-created after a fork, never shared across one.
        Shard indexes are kept: they describe the store's bytes, not a connection."""
        if self._pid != os.getpid() or self._io is None:
            with self._lock:
                if self._pid != os.getpid() or self._io is None:
                    self._retire()
                    self._io, self._pid = _RangedReads(self.url, self.storage_options, self.connections), os.getpid()
        return self._io

    def _retire(self) -> None:
        """Stop using the current reads but keep them referenced: fsspec closes a dropped client on the event loop
        it was made on, which in a forked process is the parent's, and that fails noisily."""
        if self._io is not None:
            self._retired.append(self._io)
            self._io = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_io", "_pid", "_lock", "_retired")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _io=None, _pid=None, _lock=threading.Lock(), _retired=[])
