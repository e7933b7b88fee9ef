"""Run one task of a plan, whichever its kind: a well of files, or a plate's tar. Runs on workers."""

from __future__ import annotations

import logging

from converters.plan import TarTask, WellTask
from converters.tarstream import stream_wells
from converters.write import WellImages, WellJob, WellResult, file_images, finish_well, record_well

log = logging.getLogger("platezarr")


def run_task(job: WellJob, task: WellTask | TarTask) -> list[WellResult]:
    """Write the task's wells, each shard and then its completion record; returns every well written."""
    if isinstance(task, WellTask):
        return [finish_well(job, WellImages(task, file_images(job.source, task)))]
    results, unplanned = stream_wells(job.source, task, lambda well, settled: finish_well(job, well, settled),
                                      lambda result: record_well(job.output, result))
    if unplanned:
        log.warning("%s: %d images of wells the metadata table does not list are not in the store, e.g. %s",
                    job.source.path(task.tar), len(unplanned), ", ".join(unplanned[:3]))
    return results
