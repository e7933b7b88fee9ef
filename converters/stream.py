"""`SiteStream`: a store's sites for training, walked in a fresh random permutation each epoch with many ranged
reads in flight, split across ranks and DataLoader workers, resumable mid-epoch.

A read from a bucket waits tens of milliseconds, so a worker that reads one site at a time is latency-bound; the
stream keeps up to `concurrency` reads going on threads and yields sites in permutation order. Every site is
read as `SiteDataset[i]` reads it (converters/sites.py over the one site reader, converters/sitereader.py): the
stream only decides the order. torch is optional: where it is installed, a DataLoader takes the stream as an
`IterableDataset`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from converters.errors import OptionError, StoreError
from converters.sites import SiteDataset

log = logging.getLogger("platezarr")
T = TypeVar("T")
R = TypeVar("R")


class SiteStream:
    """An iterable of (C x Y x X array, metadata dict), exactly as `SiteDataset[i]` gives them, over the sites of a
    store (`where`, `channels`, `normalize`, `crop`, `crop_mode` as in `SiteDataset`; `seed` places its crops).

    Each epoch walks a permutation of all selected sites drawn from (`seed`, epoch) (`shuffle=False`: store
    order); rank r of `world_size` takes every world_size-th site of it from the r-th, and DataLoader workers
    split the rank's sites between them, so ranks and workers see disjoint sets that together are every site
    once. Up to `concurrency` reads are in flight on the rank, shared by its DataLoader workers (each keeps its
    share, rounded up, going on as many threads). `set_epoch(e)` picks the epoch, as for torch's
    DistributedSampler. `rank` and `world_size` default to torch.distributed's when it is initialised, else
    0 and 1. Give `batch_size` (the DataLoader's) so that a loader with workers yields the rank's sites in
    permutation order, which `state_dict(consumed)` relies on.

    `on_error="skip"` skips (logs and counts in `skipped`) a site whose shard is missing or whose chunk is
    corrupt instead of raising; a bucket that stops answering raises a BucketError after the retries of the
    storage options (`client_options.timeout`, `retry_config.max_retries`) either way.
    """

    def __init__(self, url: str | os.PathLike[str], where: Mapping[str, Any] | str | None = None,
                 channels: Sequence[str] | None = None, shuffle: bool = True, seed: int = 0, concurrency: int = 32,
                 rank: int | None = None, world_size: int | None = None,
                 storage_options: dict[str, Any] | None = None, *, normalize: str | None = None,
                 crop: int | None = None, crop_mode: str = "random", on_error: str = "raise",
                 batch_size: int | None = None) -> None:
        if concurrency < 1 or (batch_size is not None and batch_size < 1):
            raise OptionError(f"concurrency and batch_size must be at least 1, not {concurrency} and {batch_size}")
        if on_error not in ("raise", "skip"):
            raise OptionError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.dataset = SiteDataset(url, where, channels, storage_options, normalize=normalize, crop=crop,
                                   crop_mode=crop_mode, seed=seed)
        self.shuffle, self.seed, self.concurrency, self.on_error = shuffle, seed, concurrency, on_error
        self.batch_size = batch_size or 1
        self.rank, self.world_size = _distributed(rank, world_size)
        self.epoch = 0
        self.skipped = 0  # sites skipped with on_error="skip", in this process
        self._start = 0  # sites of this epoch's rank order consumed before this iteration (load_state_dict)
        self._passed = 0  # sites of this process's iteration yielded or skipped so far
        self._walked: tuple[int, int] | None = None  # (process, epoch) of the last iteration
        if self.dataset.reader is not None:
            wells = self.dataset.table[["group", "well_index", "well"]].drop_duplicates().itertuples(index=False)
            self.dataset.reader.warm(((str(g), int(i), str(w)) for g, i, w in wells), concurrency)
        _register_with_torch(type(self))

    def __len__(self) -> int:
        """The number of sites this rank sees in an epoch."""
        return len(range(self.rank, len(self.dataset), self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Walk the permutation of `epoch` from the next iteration on (a resumed epoch keeps its position)."""
        if epoch != self.epoch:
            self.epoch, self._start = epoch, 0

    def order(self) -> np.ndarray:
        """This rank's sites of the current epoch, as row numbers of `dataset.table`, in the order they come."""
        n = len(self.dataset)
        everything = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        return everything[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        order = self.order()[self._start:]
        worker, workers = _worker()
        if workers > 1 and self._walked == (os.getpid(), self.epoch):
            log.warning("a DataLoader worker walks epoch %d of the stream again: with persistent_workers=True, "
                        "set_epoch does not reach the workers, so every epoch repeats the same order", self.epoch)
        self._walked = (os.getpid(), self.epoch)
        mine = order[(np.arange(len(order)) // self.batch_size) % workers == worker]
        self._passed = 0
        reads = -(-self.concurrency // workers)  # this worker's share of the reads in flight
        for i, future in _in_order(self.dataset.__getitem__, mine.tolist(), reads):
            self._passed += 1
            try:
                sample = future.result()
            except StoreError as exc:
                site = self._site(i)
                if self.on_error == "raise":
                    raise StoreError(f"site {site}: {exc}") from exc
                self.skipped += 1
                log.warning("skipped site %s (%d skipped so far): %s", site, self.skipped, exc)
                continue
            yield sample

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank is in the epoch. `consumed`: the sites your loop has taken from the loader in this
        iteration (batches x batch size); without it, those this stream yielded in this process, which is right
        only when the stream is iterated here (no DataLoader workers)."""
        done = self._start + (self._passed if consumed is None else consumed)
        return {"seed": self.seed, "shuffle": self.shuffle, "epoch": self.epoch, "rank": self.rank,
                "world_size": self.world_size, "sites": len(self.dataset), "consumed": done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the epoch of `state` after the sites it consumed: the next iteration yields the rest of it."""
        mine = {"seed": self.seed, "shuffle": self.shuffle, "world_size": self.world_size, "sites": len(self.dataset)}
        differ = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if differ:
            raise OptionError("the state was saved by another stream: " + ", ".join(
                f"{k} {saved!r} there, {now!r} here" for k, (saved, now) in differ.items()))
        if not 0 <= int(state["consumed"]) <= len(self):
            raise OptionError(f"the state consumed {state['consumed']} sites of an epoch of {len(self)} on this rank")
        self.epoch, self._start = int(state["epoch"]), int(state["consumed"])

    def _site(self, i: int) -> str:
        row = self.dataset.table.iloc[i]
        return f"{row['group']}/{row['well']}/{row['site']}"


def _in_order(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> Iterator[tuple[T, Future[R]]]:
    """Each item with the future of fn(item), in order, keeping up to `concurrency` calls ahead on as many threads.

    Leaving early cancels the calls not yet started; the ones running finish within their reads' timeouts.
    """
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="platezarr-stream")
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) == concurrency:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The rank and world size given, else torch.distributed's if it is initialised, else 0 and 1."""
    dist = sys.modules.get("torch.distributed")  # imported by whoever initialised it; never imported here
    if dist is not None and dist.is_available() and dist.is_initialized():
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = (0 if rank is None else rank), (1 if world_size is None else world_size)
    if not 0 <= rank < world_size:
        raise OptionError(f"rank must be in 0..{world_size - 1} for world_size {world_size}, not {rank}")
    return rank, world_size


def _worker() -> tuple[int, int]:
    """This DataLoader worker's id and the number of workers; (0, 1) outside a worker."""
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _register_with_torch(cls: type) -> None:
    """Where torch is installed, make DataLoader take `cls` as an IterableDataset (it checks isinstance)."""
    if importlib.util.find_spec("torch") is None:
        return
    from torch.utils.data import IterableDataset

    if not issubclass(cls, IterableDataset):
        IterableDataset.register(cls)
