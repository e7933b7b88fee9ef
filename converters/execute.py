"""Run per-well tasks in parallel: on a local pool, or on a dask.distributed cluster.

Each well is one task, so no two tasks ever write one shard. Tasks are submitted a window at a time,
so memory stays bounded by the workers times one well, whatever the size of the dataset. On a cluster,
tasks go in batches sized to about `BATCH_SECONDS` of work each: the scheduler spends milliseconds of
CPU on every job it hands out (4-11 ms measured here, docs/scale.md), which would otherwise cap a
cluster at a few dozen small wells a second.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from converters.errors import SchedulerError

if TYPE_CHECKING:
    from distributed import Client

Job = TypeVar("Job")
Task = TypeVar("Task")
Result = TypeVar("Result")

TIMEOUT_VARIABLE = "PLATEZARR_SCHEDULER_TIMEOUT"
DEFAULT_TIMEOUT = 20.0  # seconds to connect to a scheduler and hear its handshake
HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")  # dask.distributed's comms addressed as scheme://host:port
EXAMPLE = "give the scheduler's address, e.g. tcp://scheduler-host:8786 (as `dask scheduler` prints it)"
BATCH_SECONDS = 2.0  # work aimed at per job handed to a cluster's scheduler
MAX_BATCH = 64  # tasks per job at most, so that a lost worker costs little work to redo


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
    from distributed import as_completed

    client = connect_scheduler(check_scheduler_address(scheduler), scheduler_timeout())
    with client:
        window = 2 * max(1, sum(client.nthreads().values()))
        queue = iter(tasks)

        def submit(batch: list) -> Any:
            return client.submit(run_batch, fn, job, batch, pure=False)

        running = as_completed([submit([t]) for t in islice(queue, window)], loop=client.loop)
        try:
            for future in running:
                results, seconds = _cluster_result(future, scheduler)
                future.release()
                yield from results
                batch = list(islice(queue, batch_size(seconds / len(results))))
                if batch:
                    running.add(submit(batch))
        finally:
            if client.status == "running":
                client.cancel(list(running.futures))


def run_batch(fn: Callable[[Job, Task], Result], job: Job, tasks: list[Task]) -> tuple[list[Result], float]:
    """`fn(job, task)` of each task in turn, in a cluster's worker, and the seconds they took."""
    started = time.perf_counter()
    return [fn(job, task) for task in tasks], time.perf_counter() - started


def batch_size(seconds_per_task: float) -> int:
    """How many tasks the next job for the cluster holds, from how long the last took each: about BATCH_SECONDS of
    work, at least one task and at most MAX_BATCH."""
    return max(1, min(MAX_BATCH, math.floor(BATCH_SECONDS / max(seconds_per_task, 1e-6))))


def _cluster_result(future: Any, scheduler: str) -> Any:
    """A finished task's result; the cluster's own failures (lost scheduler, workers that keep dying) become a
    SchedulerError that says the store resumes. A task's own error is raised as it is."""
    from concurrent.futures import CancelledError

    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except CancelledError as exc:
        raise SchedulerError(f"lost the Dask scheduler at {scheduler} mid-run ({exc}); the wells written so far are "
                             "kept: re-run the same command, with a running cluster, to resume") from exc
    except KilledWorker as exc:
        raise SchedulerError(f"Dask workers at {scheduler} kept dying while running one task ({exc}); check their "
                             "memory and logs, then re-run the same command to resume") from exc
    except (CommClosedError, TimeoutError) as exc:
        raise SchedulerError(f"lost the connection to the Dask cluster at {scheduler} ({exc}); re-run the same "
                             "command to resume") from exc


def check_scheduler_address(address: str) -> str:
    """`address` if it has the form of a dask.distributed scheduler address (tcp://host:port, tls://..., inproc://...,
    or host:port), else a SchedulerError saying what is wrong with it."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address  # distributed's default
    if scheme in ("http", "https"):
        problem = "it is a web address (http://host:8787 is the dashboard's), not the scheduler's"
    elif scheme == "inproc":
        problem = "" if rest else "inproc:// names no scheduler"
    elif scheme in HOST_PORT_SCHEMES:
        problem = _host_port_problem(scheme, rest)
    else:
        problem = f"unknown scheme {scheme!r} (expected {', '.join(HOST_PORT_SCHEMES)} or inproc)"
    if problem:
        raise SchedulerError(f"{address!r} is not a Dask scheduler address: {problem}; {EXAMPLE}")
    return address


def _host_port_problem(scheme: str, rest: str) -> str:
    """What is wrong with `host:port` of a scheme://host:port address, or ""."""
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError:
        return f"the port in {rest!r} is not a number from 1 to 65535"
    if not parts.hostname:
        return "it names no host"
    if not port:
        return "it names no port"
    if parts.path or parts.query or parts.fragment or parts.username:
        return f"{rest!r} holds more than host:port"
    return ""


def scheduler_timeout() -> float:
    """Seconds to wait for the scheduler: $PLATEZARR_SCHEDULER_TIMEOUT, else DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise SchedulerError(f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds > 0; set it to e.g. 60, or "
                             f"unset it for the default {DEFAULT_TIMEOUT:g}")
    return seconds


def connect_scheduler(address: str, seconds: float) -> Client:
    """A distributed.Client of the scheduler at `address`, or a SchedulerError after about `seconds`. The handshake
    is tried first with a deadline: distributed's timeout misses it, so a server that never answers would hang it."""
    from distributed import Client

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="platezarr-connect") as pool:
            pool.submit(asyncio.run, _handshake(address, seconds)).result()
        return Client(address, set_as_default=False, timeout=seconds)
    except Exception as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {address} within {seconds:g} s ({_reason(exc)}); check that "
            "the scheduler runs and listens there, and that this is its tcp:// or tls:// address (not the dashboard's "
            f"http:// one); set {TIMEOUT_VARIABLE} to wait longer than {seconds:g} s"
        ) from exc


async def _handshake(address: str, seconds: float) -> None:
    """Open a comm to `address`, which includes distributed's handshake, and close it. A bare TimeoutError (a second
    after distributed's own connect timeout, which it raises as OSError) means the handshake never came."""
    from distributed.comm import connect

    comm = await asyncio.wait_for(connect(address, timeout=seconds), seconds + 1)
    await comm.close()


def _reason(exc: Exception) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "something accepted the connection but sent no Dask handshake: is it a Dask scheduler?"
    if isinstance(exc, MemoryError):
        return f"something answered, but not in Dask's protocol (it read as a frame of absurd size: {exc})"
    return f"{type(exc).__name__}: {exc}"
