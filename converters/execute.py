"""Run well tasks in parallel on a local pool. Each well is one task, so no shard is ever shared."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from converters.plan import WellTask
from converters.write import WellJob, WellResult, write_well


def run_wells(job: WellJob, tasks: list[WellTask], workers: int) -> Iterator[WellResult]:
    """Yield each well's result as it finishes, keeping at most `2 * workers` wells in memory.

    The first failure cancels the wells not yet started and is raised here.
    """
    queue = iter(tasks)
    pending: set[Future[WellResult]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="platezarr-well") as pool:

        def top_up() -> None:
            for task in queue:
                pending.add(pool.submit(write_well, job, task))
                if len(pending) >= 2 * workers:
                    return

        try:
            top_up()
            while pending:
                done, rest = wait(pending, return_when=FIRST_COMPLETED)
                pending.difference_update(done)
                for future in done:
                    yield future.result()
                top_up()
        finally:
            for future in pending:
                future.cancel()
