"""Run one task of a plan, whichever its kind: a well of files, or a plate's tar. Runs on workers."""

from __future__ import annotations

from converters.plan import TarTask, WellTask
from converters.tarwrite import write_tar
from converters.write import WellJob, WellResult, write_and_record


def run_task(job: WellJob, task: WellTask | TarTask) -> list[WellResult]:
    """Write the task's wells, each shard and then its completion record; returns every well written."""
    if isinstance(task, TarTask):
        return write_tar(job, task)
    return [write_and_record(job, task)]
