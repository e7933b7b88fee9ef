"""Decode one source image (PNG or TIFF), checking its header against the schema before any pixel is allocated."""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
from dataclasses import dataclass

import imagecodecs
import numpy as np
import tifffile

from converters.errors import SourceError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}

log = logging.getLogger("platezarr")
_decoding = threading.local()  # `where`: the file this thread is decoding, named in the codec's warnings


class _NameTheFile(logging.Filter):
    """Re-logs imagecodecs' warnings (libpng's, e.g. a bad ancillary chunk CRC) raised while `decode_image` decodes
    a file on the platezarr logger, naming that file, and drops the anonymous original; other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        where = getattr(_decoding, "where", None)
        if where is None:
            return True
        # libpng fails on any damage to the pixels (critical chunk CRC, zlib checksum, missing data), so a warning
        # concerns an ancillary chunk or trailing bytes: the pixels are kept, and the user told which file it was
        log.warning("%s: %s (the pixels are intact; re-save the file to silence this)", where, record.getMessage())
        return False


logging.getLogger("imagecodecs").addFilter(_NameTheFile())


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares: size, pixel type, and why it is not one grayscale image ("" if it is)."""

    height: int
    width: int
    dtype: np.dtype
    format: str
    problem: str = ""


def image_header(data: bytes, where: str) -> ImageHeader:
    """The header of a PNG or TIFF file, read without decoding pixels; anything else raises naming the file."""
    if len(data) == 0:
        raise SourceError(f"{where}: empty file (0 bytes); re-download it")
    if data.startswith(PNG_SIGNATURE):
        return png_header(data, where)
    if data.startswith(TIFF_SIGNATURES):
        return tiff_header(data, where)
    expected = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}.get(os.path.splitext(where)[1].lower(), "PNG or TIFF")
    raise SourceError(f"{where}: not a {expected} file (starts with {data[:8]!r}); re-download it")


def png_header(data: bytes, where: str) -> ImageHeader:
    """Size, bit depth and colour type from a PNG's IHDR chunk."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise SourceError(f"{where}: not a PNG file (starts with {data[:8]!r}); re-download it")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if depth not in (8, 16):
        raise SourceError(f"{where}: PNG bit depth {depth}; only 8- and 16-bit images are supported")
    problem = "" if colour == 0 else f"PNG is {PNG_COLOUR_TYPES.get(colour, colour)}, expected grayscale"
    return ImageHeader(height, width, np.dtype("u2" if depth == 16 else "u1"), "PNG", problem)


def tiff_header(data: bytes, where: str) -> ImageHeader:
    """Size, sample type and layout from a TIFF's first image directory (tags only, no pixel data)."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            pages = len(tif.pages)
            height, width, dtype = page.imagelength, page.imagewidth, page.dtype
            samples, photometric = page.samplesperpixel, page.photometric
    except Exception as exc:  # tifffile raises many error types for malformed headers
        raise SourceError(f"{where}: not a readable TIFF header ({exc}); re-download it") from exc
    if dtype is None or dtype.kind != "u" or dtype.itemsize not in (1, 2):
        raise SourceError(f"{where}: TIFF samples are {dtype}; only 8- and 16-bit unsigned images are supported")
    problem = ""
    if pages != 1:
        problem = f"TIFF holds {pages} images, expected one image per file"
    elif samples != 1 or photometric != tifffile.PHOTOMETRIC.MINISBLACK:
        problem = f"TIFF is {tifffile.PHOTOMETRIC(photometric).name} with {samples} samples per pixel, expected grayscale"
    return ImageHeader(int(height), int(width), np.dtype(dtype.char), "TIFF", problem)


def _check(header: ImageHeader, where: str, shape: tuple[int, int], dtype: np.dtype) -> None:
    """Refuse an image whose declared size, layout or bit depth is not the dataset's, before decoding it."""
    if (header.height, header.width) != tuple(shape):
        raise SourceError(
            f"{where}: image is {header.height}x{header.width}, the dataset's images are {shape[0]}x{shape[1]}"
        )
    if header.problem:
        raise SourceError(f"{where}: {header.problem}")
    if header.dtype != dtype:
        raise SourceError(
            f"{where}: {header.dtype.itemsize * 8}-bit image in a {dtype.itemsize * 8}-bit conversion; "
            "all images of a dataset must share one bit depth"
        )


def decode_image(data: bytes, where: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """The pixels of a grayscale PNG or TIFF of exactly `shape` and `dtype`; anything else raises naming the file."""
    header = image_header(data, where)
    _check(header, where, shape, dtype)
    _decoding.where = where
    try:
        if header.format == "PNG":
            pixels = _gray(imagecodecs.png_decode(data))
        else:
            pixels = tifffile.imread(io.BytesIO(data), key=0)
    except Exception as exc:  # the codecs raise their own error types
        raise SourceError(f"{where}: corrupt {header.format} ({exc}); re-download it") from exc
    finally:
        _decoding.where = None
    if pixels.shape != tuple(shape) or pixels.dtype.newbyteorder("=") != dtype:
        raise SourceError(f"{where}: decoded to {pixels.shape} {pixels.dtype}, expected {shape} {dtype}")
    return pixels.astype(dtype, copy=False)


def _gray(pixels: np.ndarray) -> np.ndarray:
    """The gray values of a decoded grayscale PNG: libpng expands a `tRNS` chunk (a transparent gray value) into an
    alpha plane, which means nothing here; the gray plane beside it holds the file's exact pixels."""
    return np.ascontiguousarray(pixels[..., 0]) if pixels.ndim == 3 and pixels.shape[2] == 2 else pixels


def probe_dtype(data: bytes, where: str) -> np.dtype:
    """The pixel type of one image, used to pick the store's dtype (a 16-bit release stays 16-bit)."""
    return image_header(data, where).dtype
