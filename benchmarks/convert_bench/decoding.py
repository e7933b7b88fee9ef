"""PNG decoders by name (imagecodecs' and rxrx1-utils' imageio), their CPU cost, and reading a whole site."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np


def imageio_decode(data: bytes) -> np.ndarray:
    """What rxrx1-utils' `skimage.io.imread(f, format="png")` does: imageio with Pillow."""
    import imageio.v2 as imageio

    return imageio.imread(io.BytesIO(data), format="png")


def decoder(name: str) -> Callable[[bytes], np.ndarray]:
    """The decoder called `name`: "imageio", or an imagecodecs function such as "png_decode"."""
    return imageio_decode if name == "imageio" else getattr(imagecodecs, name)


def cpu_per_call(fn: Callable, items: list, repeats: int = 3) -> float:
    """Median CPU seconds of this thread per item of `items` (steady on a busy machine)."""
    runs = []
    for _ in range(repeats):
        start = time.thread_time()
        for item in items:
            fn(item)
        runs.append((time.thread_time() - start) / len(items))
    return statistics.median(runs)


def probe_decoders(sample: list[Path]) -> dict[str, float]:
    """CPU seconds per PNG of each decoder on `sample`: imagecodecs' libpng and libspng, and imageio."""
    data = [p.read_bytes() for p in sample]
    names = [n for n in ("png_decode", "spng_decode") if hasattr(imagecodecs, n)] + ["imageio"]
    return {name: cpu_per_call(decoder(name), data) for name in names}


def read_site(files: list[str], decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    """(channel, y, x): one site's PNGs read and decoded."""
    return np.stack([decode(Path(f).read_bytes()) for f in files])
