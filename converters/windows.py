"""Display windows: the low and high pixel value a viewer maps to black and full colour, per channel and plate.

Until the pixel statistics computed while converting exist (issue 13), these are robust percentiles
of level-0 pixels: each field's 1st and 99th percentile per channel (nearest rank), from a regular
sample of about `SAMPLE` pixels (every n-th row and column), pooled over a plate's present images by
their median. The one place to switch to exact pooled statistics.
"""

from __future__ import annotations

import numpy as np

SAMPLE = 4096  # pixels per image plane the percentiles are taken from
PERCENTILES = (1.0, 99.0)


def field_percentiles(field: np.ndarray) -> np.ndarray:
    """(channel, 2): the low and high percentile of each channel plane of a (channel, y, x) field."""
    y, x = field.shape[-2:]
    step = max(1, round((y * x / SAMPLE) ** 0.5))
    sample = field[:, ::step, ::step].reshape(field.shape[0], -1)
    ranks = [round(q / 100 * (sample.shape[1] - 1)) for q in PERCENTILES]
    return np.partition(sample, ranks, axis=1)[:, ranks].astype(float)


def plate_windows(percentiles: np.ndarray, present: np.ndarray, dtype: np.dtype) -> list[dict[str, float]]:
    """omero `window` of each channel: min and max of the dtype, start and end from the fields' percentiles.

    `percentiles` is (image, channel, 2) and `present` (image, channel) marks the images that exist;
    a channel with none shows the dtype's whole range."""
    top = float(np.iinfo(dtype).max)
    windows = []
    for channel in range(percentiles.shape[1]):
        found = percentiles[present[:, channel], channel]
        start, end = (float(v) for v in np.median(found, axis=0)) if len(found) else (0.0, top)
        windows.append({"min": 0.0, "max": top, "start": start, "end": max(end, start + 1)})
    return windows
