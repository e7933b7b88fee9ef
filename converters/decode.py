"""Decode one source image, checking its header against the schema before any pixel is allocated."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np

from converters.errors import SourceError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY = 0
PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


def png_header(data: bytes, where: str) -> tuple[int, int, np.dtype, int]:
    """(height, width, dtype, colour type) from a PNG's IHDR chunk, without decoding it."""
    if len(data) == 0:
        raise SourceError(f"{where}: empty file (0 bytes); re-download it")
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise SourceError(f"{where}: not a PNG file (starts with {data[:8]!r}); re-download it")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if depth not in (8, 16):
        raise SourceError(f"{where}: PNG bit depth {depth}; only 8- and 16-bit images are supported")
    return height, width, np.dtype(">u2" if depth == 16 else "u1").newbyteorder("="), colour


def decode_png(data: bytes, where: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """The pixels of a grayscale PNG of exactly `shape` and `dtype`; anything else raises naming the file."""
    height, width, found_dtype, colour = png_header(data, where)
    if (height, width) != tuple(shape):
        raise SourceError(f"{where}: image is {height}x{width}, the dataset's images are {shape[0]}x{shape[1]}")
    if colour != PNG_GRAY:
        raise SourceError(f"{where}: PNG is {PNG_COLOUR_TYPES.get(colour, colour)}, expected grayscale")
    if found_dtype != dtype:
        raise SourceError(
            f"{where}: {found_dtype.itemsize * 8}-bit image in a {dtype.itemsize * 8}-bit conversion; "
            "all images of a dataset must share one bit depth"
        )
    try:
        pixels = imagecodecs.png_decode(data)
    except Exception as exc:  # imagecodecs raises its own error types per codec
        raise SourceError(f"{where}: corrupt PNG ({exc}); re-download it") from None
    if pixels.shape != tuple(shape) or pixels.dtype != dtype:
        raise SourceError(f"{where}: decoded to {pixels.shape} {pixels.dtype}, expected {shape} {dtype}")
    return pixels


def probe_dtype(data: bytes, where: str) -> np.dtype:
    """The pixel type of one image, used to pick the store's dtype (a 16-bit release stays 16-bit)."""
    return png_header(data, where)[2]
