"""The baseline: Recursion's rxrx1-utils packer (rxrx/preprocess/images2zarr.py) reimplemented.

One zarr v2 store per site holding a (512, 512, 6) `<u2` array in one chunk, Blosc zstd-3 with
bitshuffle, mapped over the sites with a dask bag on its default process scheduler. `baseline` decodes
as rxrx1-utils does (imageio with Pillow, unless --baseline-decoder); `baseline_packing`, run once, with
the floor's decoder, to show the packing alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from convert_bench.contenders import Contender, Job
from convert_bench.decoding import decoder

BASELINE_KEY = "{dataset}/{experiment}/Plate{plate}/{well}_s{site}.zarr"  # rxrx1-utils' ZARR_DEST


def pack_site(site: dict, out: str, decoder_name: str) -> None:
    """rxrx1-utils' `convert_to_zarr` for one site: (512, 512, 6) `<u2`, one chunk, Blosc zstd-3 bitshuffle, zarr v2."""
    import zarr
    from numcodecs import Blosc

    decode = decoder(decoder_name)
    first = decode(Path(site["files"][0]).read_bytes())
    data = np.ndarray(shape=(*first.shape, len(site["files"])), dtype=first.dtype)  # load_images_as_tensor
    for ix, f in enumerate(site["files"]):
        data[:, :, ix] = first if ix == 0 else decode(Path(f).read_bytes())
    dest = os.path.join(out, BASELINE_KEY.format(**site))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    z = zarr.open_array(dest, mode="w", shape=data.shape, chunks=(512, 512, data.shape[2]), dtype="<u2",
                        compressor=Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE), zarr_format=2)
    z[:] = data


def run_baseline(job: Job, decoder_name: str) -> dict:
    """rxrx1-utils' `convert_all`: a dask bag over the sites on its default (process) scheduler."""
    import dask.bag
    from toolz import curry

    start = time.perf_counter()
    bag = dask.bag.from_sequence(job.manifest)
    bag.map(curry(pack_site, out=str(job.out), decoder_name=decoder_name)).compute(num_workers=job.workers)
    return {"seconds": time.perf_counter() - start}


def baseline_site(root: Path, site: dict) -> np.ndarray:
    """(y, x, channel): one site of a baseline store, read with plain zarr."""
    import zarr

    return np.asarray(zarr.open_array(root / BASELINE_KEY.format(**site), mode="r")[:])


PRELOAD = ("dask.bag", "zarr")
CONTENDERS = [
    Contender("baseline", lambda job: run_baseline(job, job.baseline_decoder), rank=40, preload=PRELOAD),
    Contender("baseline_packing", lambda job: run_baseline(job, job.decoder), rank=60, once=True, preload=PRELOAD),
]
