"""Resolution pyramids for viewers: each level the 2x2 mean of the one above, and the tiles its chunks are cut in.

Level 0 is the source image; each further level halves both sides (rounding up) until the longer
side is at most `SMALLEST` pixels, as OME-Zarr viewers expect a pyramid to end near a screen tile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SMALLEST = 256  # a pyramid stops at the first level whose longer side is at most this
TILE = 512  # chunk side for large images: benchmarks/ome_zarr.py --tiles measures the choice


def level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(y, x) of every level, from the image's own down to the first with its longer side <= SMALLEST."""
    shapes = [shape]
    while max(shapes[-1]) > SMALLEST:
        y, x = shapes[-1]
        shapes.append((-(-y // 2), -(-x // 2)))
    return shapes


def halve(image: np.ndarray) -> np.ndarray:
    """The 2x2 mean over the last two axes, rounded half up, in the image's integer dtype.

    An odd last row or column is averaged with itself, so its pixels are the mean of what the source has there.
    """
    y, x = image.shape[-2:]
    if y % 2 or x % 2:
        image = np.pad(image, [(0, 0)] * (image.ndim - 2) + [(0, y % 2), (0, x % 2)], mode="edge")
    # Summed in place into one array of a quarter of the pixels, wide enough for 4 x max (about half the time of
    # widening the whole image first: about 20 against 39 ms for a 1080² 8-channel uint16 field).
    total: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = image[..., 0::2, 0::2].astype(
        np.uint16 if image.dtype.itemsize == 1 else np.uint32)
    for dy, dx in ((1, 0), (0, 1), (1, 1)):
        np.add(total, image[..., dy::2, dx::2], out=total)
    np.add(total, 2, out=total)
    np.right_shift(total, 2, out=total)
    return total.astype(image.dtype)


def tile_side(side: int) -> int:
    """The chunk side for an image side: the whole side up to TILE, else its largest divisor in (TILE/2, TILE],
    else TILE (the last tile then reaches past the image and is padded, as Zarr pads edge chunks)."""
    if side <= TILE:
        return side
    return next((d for d in range(TILE, TILE // 2, -1) if side % d == 0), TILE)
