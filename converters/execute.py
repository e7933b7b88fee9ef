"""Run per-well tasks in parallel: on a local pool, or on a dask.distributed cluster.

Each well is one task, so no two tasks ever write one shard. Tasks are submitted a window at a time,
so memory stays bounded by the workers times one well, whatever the size of the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import TypeVar

from converters.errors import PlatezarrError

Job = TypeVar("Job")
Task = TypeVar("Task")
Result = TypeVar("Result")


def run_tasks(
    fn: Callable[[Job, Task], Result],
    job: Job,
    tasks: Iterable[Task],
    workers: int,
    scheduler: str | None = None,
) -> Iterator[Result]:
    """Yield `fn(job, task)` for every task as each finishes; the first failure stops the run and is raised."""
    if scheduler:
        yield from _run_distributed(fn, job, tasks, scheduler)
    else:
        yield from _run_local(fn, job, tasks, workers)


def _run_local(fn: Callable, job: object, tasks: Iterable, workers: int) -> Iterator:
    queue = iter(tasks)
    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="platezarr") as pool:
        try:
            pending.update(pool.submit(fn, job, t) for t in islice(queue, 2 * workers))
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                pending.difference_update(done)
                for future in done:
                    yield future.result()
                    pending.update(pool.submit(fn, job, t) for t in islice(queue, 1))
        finally:
            for future in pending:
                future.cancel()


def _run_distributed(fn: Callable, job: object, tasks: Iterable, scheduler: str) -> Iterator:
    from distributed import Client, as_completed

    try:
        client = Client(scheduler, set_as_default=False, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise PlatezarrError(f"cannot reach the Dask scheduler at {scheduler}: {exc}; is the cluster running?") from None
    with client:
        window = 2 * max(1, sum(client.nthreads().values()))
        queue = iter(tasks)
        running = as_completed([client.submit(fn, job, t, pure=False) for t in islice(queue, window)], loop=client.loop)
        try:
            for future in running:
                result = future.result()
                future.release()
                yield result
                for t in islice(queue, 1):
                    running.add(client.submit(fn, job, t, pure=False))
        finally:
            client.cancel(list(running.futures))
