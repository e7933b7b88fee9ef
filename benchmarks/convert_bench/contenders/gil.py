"""The GIL probe, run once: decode (+ zstd-3 encode) a well per task on 1 thread, on threads and on processes."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from convert_bench.contenders import Contender, Job
from convert_bench.decoding import decoder, read_site
from convert_bench.inputs import by_well

GIL_SITES = 200


def decode_encode(sites: list[dict], decoder_name: str) -> int:
    """Bytes of the sites decoded and zstd-3 encoded, as the converter's write path does."""
    from numcodecs import Zstd

    decode, codec = decoder(decoder_name), Zstd(level=3)
    return sum(len(codec.encode(read_site(s["files"], decode))) for s in sites)


def decode_only(sites: list[dict], decoder_name: str) -> int:
    """Bytes of the sites decoded."""
    return sum(read_site(s["files"], decoder(decoder_name)).nbytes for s in sites)


def run_gil(job: Job) -> dict:
    """Wall time of decode (+ zstd-3 encode), a well per task: 1 thread, `workers` threads, `workers` processes."""
    wells = by_well(job.manifest)
    names = [job.decoder] * len(wells)
    out = {}
    with ProcessPoolExecutor(job.workers) as processes, ThreadPoolExecutor(job.workers) as threads:
        list(processes.map(decode_only, wells[: job.workers], names[: job.workers]))  # start the processes first
        for label, fn in (("decode", decode_only), ("decode+zstd3", decode_encode)):
            for kind, pool in (("serial", None), ("threads", threads), ("processes", processes)):
                start = time.perf_counter()
                list(map(fn, wells, names) if pool is None else pool.map(fn, wells, names))
                out[f"{label} {kind}"] = time.perf_counter() - start
    return out


CONTENDERS = [Contender("gil", run_gil, rank=70, once=True, manifest="manifest-gil.json")]
