"""platezarr itself: `converters.convert` with default settings, with the compact profile, and (optionally) with
its shard writer switched off so that zarr-python writes every shard, as before converters/shard.py."""

from __future__ import annotations

import time

import numpy as np

from convert_bench.contenders import Contender, Job
from convert_bench.process import StageRSS


def run_platezarr(job: Job, zarr_path: bool = False, compression: str = "default") -> dict:
    """`converters.convert` with `compression`, timed around the whole call; also its write stage and RSS per stage.

    `zarr_path`: every shard written by zarr-python's `array[well] = block` instead of encoded by
    converters/shard.py (what platezarr did before it).
    """
    import converters as pz
    from converters.convert import Progress

    if zarr_path:
        import zarr

        from converters.formats.native import NativeFormat
        from converters.output import Output

        def write_with_zarr(self: NativeFormat, output: Output, group: str, well_index: int, block: np.ndarray) -> None:
            array = zarr.open_array(output.store, path=f"{group}/images", mode="r+", config={"write_empty_chunks": True})
            array[well_index] = block

        NativeFormat.write_well = write_with_zarr  # type: ignore[method-assign]

    marks: dict[str, float] = {}
    rss = StageRSS()

    def progress(event: Progress) -> None:
        marks.setdefault(event.stage, time.perf_counter())
        rss.stage = event.stage

    start = time.perf_counter()
    summary = pz.convert(job.src, job.out, workers=job.workers, progress=progress, compression=compression)
    seconds = time.perf_counter() - start
    write = marks.get("finalize", start + seconds) - marks.get("write", start)
    return {"seconds": seconds, "write_seconds": write, "sites": summary.as_dict()["sites"],
            "stage_rss_bytes": rss.peaks}


# The platezarr children never load the manifest, so their memory is the converter's alone.
CONTENDERS = [
    Contender("platezarr", run_platezarr, rank=20, preload=("converters",), manifest=""),
    Contender("compact", lambda job: run_platezarr(job, compression="compact"), rank=30, preload=("converters",),
              manifest=""),
    Contender("zarr_path", lambda job: run_platezarr(job, zarr_path=True), rank=50, flag="with_zarr_path",
              preload=("converters",), manifest=""),
]
