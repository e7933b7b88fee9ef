"""Display windows: the low and high pixel value a viewer maps to black and full colour, per channel and plate.

They come from the pixel statistics computed while converting (converters/stats.py): the plate's
1st and 99th percentiles pooled over all its images (`statstore.plate_display_range`), so the first
view in napari or vizarr is neither black nor saturated.
"""

from __future__ import annotations

import numpy as np


def plate_windows(display_range: np.ndarray, dtype: np.dtype) -> list[dict[str, float]]:
    """omero `window` of each channel: min and max of the dtype, start and end from the plate's (channel, 2)
    display range; a channel without pixels (NaN) shows the dtype's whole range."""
    top = float(np.iinfo(dtype).max)
    windows = []
    for low, high in display_range.tolist():
        start, end = (0.0, top) if np.isnan(low) or np.isnan(high) else (float(low), float(high))
        windows.append({"min": 0.0, "max": top, "start": start, "end": max(end, start + 1)})
    return windows
