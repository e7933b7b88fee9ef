"""The floor: read and decode every PNG into a block per well, a well per task on one thread per core; nothing written."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from convert_bench.contenders import Contender, Job
from convert_bench.decoding import decoder, read_site
from convert_bench.inputs import by_well


def run_floor(job: Job) -> dict:
    """Decode every site with the fastest decoder, a well per task on `job.workers` threads."""
    decode = decoder(job.decoder)

    def well(sites: list[dict]) -> int:
        return sum(read_site(s["files"], decode).nbytes for s in sites)

    start = time.perf_counter()
    with ThreadPoolExecutor(job.workers) as pool:
        decoded = sum(pool.map(well, by_well(job.manifest)))
    return {"seconds": time.perf_counter() - start, "decoded_bytes": decoded}


CONTENDERS = [Contender("floor", run_floor, rank=10)]
