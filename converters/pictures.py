"""Pictures of a store: a site as an RGB composite, each channel as a labelled tile, a plate montage, and a
heat map of a per-well statistic. Arrays come from numpy alone (PNGs through imagecodecs); only the heat
map is a matplotlib figure, so a notebook shows each inline.

The composite is rxrx1-utils' `convert_tensor_to_rgb`: each channel scaled by its display range, times
its colour (the schema's: RxRx1's RGB_MAP), truncated to integers, summed and clipped to 255. With
`ranges="fixed"` (rxrx1-utils' ranges, for 8-bit data: scaled to 16-bit ones) it gives the same pixels;
by default each channel's range is its plate's pooled 50th to 99.9th percentile (`WINDOW`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imagecodecs
import numpy as np
import zarr

from converters.decode import png_header
from converters.errors import OptionError, SchemaError, StoreError
from converters.readers import open_root, read_array
from converters.schema import Channel, load_schema
from converters.sitereader import SiteReader
from converters.sites import _channel_indices
from converters.stats import POOLS, STATS, bin_lows, bin_widths, image_histogram, percentiles
from converters.statstore import read_pooled
from converters.wells import row_index, split_well

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RANGES = ("plate", "site", "fixed")
QC_STATS = ("present", "mean", "std", "min", "max", "p1", "p50", "p99")
PLATE_FORMATS = ((8, 12), (16, 24), (32, 48))
ABSENT = (48, 48, 48)  # a plate position with no well in the store
MISSING = (230, 30, 30)  # marks a well whose shown site has missing images
LABEL = (200, 200, 200)
CELL = 64  # montage thumbnail size aimed at, in pixels
# Default display range of a channel: from the median (the background of most fields) to the 99.9th percentile.
# Summed in colour, six channels each stretched to its 1st..99th percentile turn most of a dense field white.
WINDOW = (50.0, 99.9)
# Montage cells are block means, which rarely reach a single pixel's 99.9th percentile.
THUMBNAIL_WINDOW = (50.0, 99.0)
MONTAGE_WINDOW = 512  # side of the centre of a large tiled site a montage shows
# A 5x7 bitmap font: per character seven rows of five pixels (bit 4 leftmost), two hex digits a row.
FONT = {glyph[0]: glyph[1:] for glyph in (
    "A0E11111F111111|B1E11111E11111E|C0E11101010110E|D1C12111111121C|E1F10101E10101F|F1F10101E101010|G0E11101711110F|"
    "H1111111F111111|I0E04040404040E|J0702020202120C|K11121418141211|L1010101010101F|M111B1515111111|N11191513111111|"
    "O0E11111111110E|P1E11111E101010|Q0E11111115120D|R1E11111E141211|S0F10100E01011E|T1F040404040404|U1111111111110E|"
    "V11111111110A04|W1111111515150A|X11110A040A1111|Y11110A04040404|Z1F01020408101F|00E11131519110E|1040C040404040E|"
    "20E11010204081F|31F02040201110E|402060A121F0202|51F101E0101110E|60608101E11110E|71F010204080808|80E11110E11110E|"
    "90E11110F01020C| 00000000000000|-0000001F000000|_0000000000001F|.00000000000C0C|:000C0C000C0C00|/01010204081010|"
    "(02040808080402|)08040202020408|%18190204081303|+0004041F040400|,000000000C0408|?0E110102040004"
).split("|")}


def glyph(char: str) -> np.ndarray:
    """(7, 5) bool pixels of one character (upper case; unknown characters as `?`)."""
    code = FONT.get(char.upper(), FONT["?"])
    rows = [int(code[i: i + 2], 16) for i in range(0, 14, 2)]
    return np.array([[(r >> (4 - b)) & 1 for b in range(5)] for r in rows], dtype=bool)


def text_size(text: str, scale: int = 2) -> tuple[int, int]:
    """(height, width) in pixels of `text` drawn by `draw_text`."""
    return 7 * scale, max(0, 6 * len(text) - 1) * scale


def draw_text(canvas: np.ndarray, text: str, y: int, x: int, color: Sequence[int] = LABEL, scale: int = 2) -> None:
    """Draw `text` into the (h, w, 3) `canvas` with its top left corner at (y, x), clipped to the canvas."""
    for i, char in enumerate(text):
        pixels = np.kron(glyph(char), np.ones((scale, scale), dtype=bool))
        y0, x0 = y, x + 6 * scale * i
        region = canvas[max(y0, 0): y0 + pixels.shape[0], max(x0, 0): x0 + pixels.shape[1]]
        mask = pixels[max(-y0, 0): max(-y0, 0) + region.shape[0], max(-x0, 0): max(-x0, 0) + region.shape[1]]
        region[mask] = color


def composite(pixels: np.ndarray, colors: np.ndarray, ranges: np.ndarray, vmax: int) -> np.ndarray:
    """(y, x, 3) uint8 of (channel, y, x) `pixels`: rxrx1-utils' convert_tensor_to_rgb, each channel's
    `ranges` (low, high) in pixel values and `colors` (channel, 3) in 0..255."""
    out = np.zeros((*pixels.shape[1:], 3), dtype=np.int64)
    for image, color, (low, high) in zip(pixels, colors, ranges):
        x = ((image - low) / vmax) / ((high - low) / vmax)
        out += (np.clip(x, 0.0, 1.0)[..., None] * color).astype(np.int64)
    return np.minimum(out, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    return bytes(imagecodecs.png_encode(np.ascontiguousarray(rgb)))


@dataclass
class PlateView:
    """One plate of a finished store, for pictures: its wells, sites, present mask, channels and how to draw them."""

    url: str
    group: str
    root: zarr.Group
    attrs: dict[str, Any]
    wells: list[str]
    sites: list[int]
    present: np.ndarray  # (well, site, channel)
    display: list[Channel]
    storage_options: dict[str, Any] | None

    @classmethod
    def open(cls, url: str | os.PathLike[str], group: str, storage_options: dict[str, Any] | None = None) -> PlateView:
        root, _, attrs = open_root(url, storage_options)
        if group.count("/") != 1 or group not in root:
            raise StoreError(f"{url}: no plate {group!r}; `platezarr info {url}` lists the plates (EXPERIMENT/PLATE)")
        return cls(os.fspath(url), group, root, attrs, [str(w) for w in read_array(root, f"{group}/well")],
                   [int(s) for s in read_array(root, f"{group}/site")], read_array(root, f"{group}/present"),
                   display_channels(attrs), storage_options)

    @property
    def vmax(self) -> int:
        return int(np.iinfo(np.dtype(self.attrs["dtype"])).max)

    def channels(self, wanted: Sequence[str] | None) -> list[int]:
        """Channel positions by id or name; by default the visible ones (brightfield planes are not)."""
        if wanted is None:
            return [i for i, c in enumerate(self.display) if c.visible] or list(range(len(self.display)))
        return _channel_indices(self.attrs["channels"], wanted)

    def colors(self, channels: list[int]) -> np.ndarray:
        return np.array([[int(self.display[c].color[i: i + 2], 16) for i in (0, 2, 4)] for c in channels])

    def ranges(self, kind: str, channels: list[int], pixels: np.ndarray | None = None,
               window: tuple[float, float] = WINDOW) -> np.ndarray:
        """(channel, 2) display ranges: `window` percentiles of the plate's pooled histogram or of the site's own
        pixels (`pixels`, all channels), or the dataset's fixed ranges (8-bit values, scaled to the bit depth)."""
        if kind not in RANGES:
            raise OptionError(f"range must be one of {', '.join(RANGES)}, not {kind!r}")
        if kind == "fixed":
            fixed = [self.display[c].fixed_range for c in channels]
            if any(r is None for r in fixed):
                raise OptionError(f"dataset {self.attrs['dataset']!r} has no fixed display range for every channel "
                                  "shown; use range 'plate' or 'site'")
            ranges = np.array(fixed, dtype=np.float64) * (self.vmax / 255)
        elif kind == "plate":
            if f"{self.group}/plate_histogram" not in self.root:
                raise OptionError(f"{self.url}: no pixel statistics in this store for plate display ranges; add them "
                                  f"with `platezarr stats {self.url}`, or use range 'site' or 'fixed'")
            hist = read_array(self.root, f"{self.group}/plate_histogram")[POOLS.index("all")][channels]
            lows = bin_lows(np.dtype(self.attrs["dtype"]))
            ranges = percentiles(hist, lows, bin_widths(lows, np.dtype(self.attrs["dtype"])), window)
        else:
            assert pixels is not None
            levels = self.vmax + 1
            hist = np.stack([image_histogram(pixels[c], levels) for c in channels])
            ranges = percentiles(hist, np.arange(levels), np.ones(levels, dtype=np.int64), window)
        ranges = np.nan_to_num(ranges, nan=0.0)
        ranges[:, 1] = np.maximum(ranges[:, 1], ranges[:, 0] + 1)  # a flat channel: any step shows
        return ranges

    def reader(self) -> SiteReader:
        return SiteReader(self.url, self.group, self.storage_options)

    def well_index(self, well: str) -> int:
        if well not in self.wells:
            raise StoreError(f"{self.url}: plate {self.group} has no well {well!r} (wells {', '.join(self.wells[:5])}, ...)")
        return self.wells.index(well)

    def site_index(self, site: int) -> int:
        if site not in self.sites:
            raise StoreError(f"{self.url}: sites are {', '.join(map(str, self.sites))}, not {site}")
        return self.sites.index(site)


def display_channels(attrs: dict[str, Any]) -> list[Channel]:
    """The store's channels with their display colours, fixed ranges and visibility, from its dataset's schema
    (white, no fixed range and shown, for a dataset without a schema here)."""
    stored = attrs["channels"]
    try:
        known = {c.id: c for c in load_schema(attrs["dataset"]).channels}
    except SchemaError:
        known = {}
    return [known.get(c["id"], Channel(c["id"], c["name"])) for c in stored]


def site_rgb(url: str | os.PathLike[str], plate: str, well: str, site: int = 1, *, channels: Sequence[str] | None = None,
             ranges: str = "plate", storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """(y, x, 3) uint8: the site as an RGB composite at its own size, nothing drawn over it.

    `plate` is the plate group (`HUVEC-01/Plate1`), `site` the site number; `channels` picks channels by id
    or name (default: the visible ones); `ranges` is "plate" (the plate's pooled 50th..99.9th percentiles),
    "site" (the site's own) or "fixed" (the dataset's, e.g. rxrx1-utils' for RxRx)."""
    view = PlateView.open(url, plate, storage_options)
    picked = view.channels(channels)
    pixels = read_site(view, well, site)
    return composite(pixels[picked], view.colors(picked), view.ranges(ranges, picked, pixels), view.vmax)


def site_grid(url: str | os.PathLike[str], plate: str, well: str, site: int = 1, *,
              channels: Sequence[str] | None = None, ranges: str = "plate",
              storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """(h, w, 3) uint8: each channel of the site on its own, in grey over its display range, under its label
    (`W1 HOECHST`), three tiles a row."""
    view = PlateView.open(url, plate, storage_options)
    picked = view.channels(channels)
    pixels = read_site(view, well, site)
    windows = view.ranges(ranges, picked, pixels)
    height, width = pixels.shape[1:]
    label, gap, per_row = text_size("X")[0] + 6, 4, min(3, len(picked))
    rows = -(-len(picked) // per_row)
    canvas = np.zeros((rows * (label + height + gap), per_row * (width + gap) - gap, 3), dtype=np.uint8)
    for k, (c, (low, high)) in enumerate(zip(picked, windows)):
        y, x = (k // per_row) * (label + height + gap), (k % per_row) * (width + gap)
        channel = view.attrs["channels"][c]
        draw_text(canvas, f"{channel['id']} {channel['name']}", y + 3, x + 2)
        grey = composite(pixels[c: c + 1], np.array([[255, 255, 255]]), np.array([[low, high]]), view.vmax)
        canvas[y + label: y + label + height, x: x + width] = grey
    return canvas


def read_site(view: PlateView, well: str, site: int) -> np.ndarray:
    """All channels of one site, (channel, y, x), through the store's site reader."""
    w, s = view.well_index(well), view.site_index(site)
    if not view.present[w, s].any():
        raise StoreError(f"{view.url}: {view.group}/{well} site {site} has no image (all its channels are missing)")
    return view.reader().read_site(view.group, w, s, well)


@dataclass(frozen=True)
class PlateGrid:
    """Where each well sits in a montage: `rows` x `columns` cells of `cell` pixels, `gap` apart, below the column
    numbers and right of the row letters."""

    rows: int
    columns: int
    cell: int
    gap: int = 2
    scale: int = 2

    @classmethod
    def for_wells(cls, wells: Sequence[str], shape: tuple[int, int] | None, cell: int) -> PlateGrid:
        """The plate format `shape` (rows, columns), or the smallest standard one holding every well."""
        positions = [well_position(w) for w in wells]
        need = (max((r for r, _ in positions), default=0) + 1, max((c for _, c in positions), default=0) + 1)
        for candidate in ([shape] if shape else []) + list(PLATE_FORMATS):
            if candidate[0] >= need[0] and candidate[1] >= need[1]:
                return cls(candidate[0], candidate[1], cell)
        return cls(need[0], need[1], cell)

    @property
    def top(self) -> int:
        return text_size("0")[0] + 6

    @property
    def left(self) -> int:
        return text_size("AA")[1] + 6

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the montage."""
        step = self.cell + self.gap
        return self.top + self.rows * step, self.left + self.columns * step

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Top left pixel of the cell of 0-based `row`, `column`."""
        step = self.cell + self.gap
        return self.top + row * step, self.left + column * step

    def draw_labels(self, canvas: np.ndarray) -> None:
        step = self.cell + self.gap
        every = 1 if self.columns <= 24 else 2
        for c in range(0, self.columns, every):
            text = str(c + 1)
            _, width = text_size(text, self.scale)
            draw_text(canvas, text, 3, self.left + c * step + (self.cell - width) // 2, scale=self.scale)
        for r in range(self.rows):
            text = row_name(r)
            height, width = text_size(text, self.scale)
            draw_text(canvas, text, self.top + r * step + (self.cell - height) // 2, self.left - width - 4, scale=self.scale)


def well_position(well: str) -> tuple[int, int]:
    """0-based (row, column) of a well name."""
    row, column = split_well(well)
    return row_index(row), column - 1


def row_name(row: int) -> str:
    """The letters of 0-based plate row `row`: A..Z, then AA..AF."""
    return chr(ord("A") + row) if row < 26 else "A" + chr(ord("A") + row - 26)


def plate_montage(url: str | os.PathLike[str], plate: str, *, site: int | None = None,
                  channels: Sequence[str] | None = None, ranges: str = "plate", cell: int = CELL,
                  storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """(h, w, 3) uint8: the plate as people know it, a thumbnail of one site in each well position, rows and
    columns labelled. Reads one chunk per well (the site `site`, by default each well's first with an image); of
    large sites stored in tiles (RxRx3's 2048² in 256² tiles), only the tiles of the central `MONTAGE_WINDOW`².

    Positions with no well in the store are dark grey; a well whose site has no image is crossed in red, one
    with some of its channels missing is framed in red."""
    view = PlateView.open(url, plate, storage_options)
    picked = view.channels(channels)
    shape = _plate_shape(view.attrs)
    reader = view.reader()
    window = centre_window(reader)
    height, width = view.attrs["image_shape"] if window is None else (MONTAGE_WINDOW, MONTAGE_WINDOW)
    factor = max(1, min(height, width) // cell)
    grid = PlateGrid.for_wells(view.wells, shape, min(height, width) // factor)
    canvas = np.zeros((*grid.size, 3), dtype=np.uint8)
    grid.draw_labels(canvas)
    for r in range(grid.rows):
        for c in range(grid.columns):
            y, x = grid.origin(r, c)
            canvas[y: y + grid.cell, x: x + grid.cell] = ABSENT
    fixed = None if ranges == "site" else view.ranges(ranges, picked, window=THUMBNAIL_WINDOW)
    colors = view.colors(picked)
    chosen = None if site is None else view.site_index(site)
    shown = [_first_site(view.present[w]) if chosen is None else chosen for w in range(len(view.wells))]

    def thumbnail(w: int) -> np.ndarray | None:
        s = shown[w]
        if s is None or not view.present[w, s].any():
            return None
        pixels = reader.read_site(view.group, w, s, view.wells[w]) if window is None else \
            reader.read_window(view.group, w, s, window, view.wells[w])
        small = shrink(pixels[picked], factor, grid.cell)
        ranges = fixed if fixed is not None else view.ranges("site", picked, pixels, THUMBNAIL_WINDOW)
        return composite(small, colors, ranges, view.vmax)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(view.wells))), thread_name_prefix="platezarr-montage") as pool:
        thumbnails = list(pool.map(thumbnail, range(len(view.wells))))
    for w, (well, picture) in enumerate(zip(view.wells, thumbnails)):
        y, x = grid.origin(*well_position(well))
        box = canvas[y: y + grid.cell, x: x + grid.cell]
        if picture is None:
            box[...] = 0
            mark_cross(box)
            continue
        box[...] = picture
        s = shown[w]
        if s is not None and not view.present[w, s].all():
            mark_frame(box)
    return canvas


def centre_window(reader: SiteReader) -> tuple[slice, slice] | None:
    """The central MONTAGE_WINDOW² of a site, if the site is at least twice that on each side and stored in tiles
    (then the montage reads a sixteenth of a 2048² site), else None: the montage shrinks the whole site."""
    tile = reader.layout.chunk_shape[-2:]
    if any(n < 2 * MONTAGE_WINDOW or t >= n for n, t in zip(reader.image_shape, tile)):
        return None
    y, x = ((n - MONTAGE_WINDOW) // 2 for n in reader.image_shape)
    return slice(y, y + MONTAGE_WINDOW), slice(x, x + MONTAGE_WINDOW)


def _first_site(present: np.ndarray) -> int | None:
    """The first site of a well's (site, channel) mask with any image, or None."""
    found = np.flatnonzero(present.any(axis=1))
    return int(found[0]) if len(found) else None


def _plate_shape(attrs: dict[str, Any]) -> tuple[int, int] | None:
    try:
        return load_schema(attrs["dataset"]).plate_shape
    except SchemaError:
        return None


def shrink(pixels: np.ndarray, factor: int, cell: int) -> np.ndarray:
    """(channel, cell, cell) block means of `factor` x `factor` pixels of the top left of a (channel, y, x) site.

    Rows are summed first (whole rows at a time, five times faster than reducing both block axes at once)."""
    size, n = cell * factor, len(pixels)
    rows = pixels[:, :size, :size].reshape(n, cell, factor, size).sum(axis=2, dtype=np.uint32)
    return rows.reshape(n, cell, cell, factor).sum(axis=3) / (factor * factor)


def mark_cross(cell: np.ndarray) -> None:
    """A red cross, two pixels thick, over the middle three fifths of a (n, n, 3) cell (so that crosses of
    neighbouring wells stay apart)."""
    n = cell.shape[0]
    i = np.arange(n // 5, n - n // 5)
    for offset in (0, 1):
        j = np.clip(i + offset, 0, n - 1)
        cell[i, j] = MISSING
        cell[i, n - 1 - j] = MISSING


def mark_frame(cell: np.ndarray) -> None:
    """A red frame, two pixels wide, around a (n, n, 3) cell."""
    cell[:2], cell[-2:], cell[:, :2], cell[:, -2:] = MISSING, MISSING, MISSING, MISSING


def qc_values(view: PlateView, stat: str) -> tuple[np.ndarray, str]:
    """Each well's value of a QC statistic, in well order, and what it is: `present` (fraction of the well's images
    present) or `STAT:CHANNEL` (the mean over the well's sites of a per-image statistic, e.g. `mean:w1`)."""
    name, _, channel = stat.partition(":")
    if name == "present" and not channel:
        return view.present.mean(axis=(1, 2)), "fraction of images present"
    if name not in QC_STATS or not channel:
        raise OptionError(f"--qc {stat!r}: give `present`, or STAT:CHANNEL with STAT one of "
                          f"{', '.join(QC_STATS[1:])} (e.g. mean:{view.attrs['channels'][0]['id']})")
    c = _channel_indices(view.attrs["channels"], [channel])[0]
    if read_pooled(view.root) is None or f"{view.group}/pixel_stats" not in view.root:
        raise OptionError(f"{view.url}: no pixel statistics in this store; add them with `platezarr stats {view.url}`")
    values = read_array(view.root, f"{view.group}/pixel_stats")[:, :, c, STATS.index(name)]
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(values), axis=1)
        per_well = np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), np.nan)
    info = view.attrs["channels"][c]
    return per_well, f"{name} of {info['id']} ({info['name']}), mean over sites"


def plate_qc_figure(url: str | os.PathLike[str], plate: str, stat: str = "present",
                    storage_options: dict[str, Any] | None = None) -> Figure:
    """A heat map of a per-well statistic on the plate grid, with a colour bar and a title (a matplotlib Figure;
    wells not in the store are left grey). `stat` is as `qc_values` takes it."""
    from matplotlib.figure import Figure

    view = PlateView.open(url, plate, storage_options)
    values, what = qc_values(view, stat)
    grid = PlateGrid.for_wells(view.wells, _plate_shape(view.attrs), 1)
    table = np.full((grid.rows, grid.columns), np.nan)
    for well, value in zip(view.wells, values):
        table[well_position(well)] = value
    figure = Figure(figsize=(2.5 + 0.32 * grid.columns, 1.5 + 0.32 * grid.rows), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    cmap = _colormap()
    image = axes.imshow(np.ma.masked_invalid(table), cmap=cmap, aspect="equal")
    every = 1 if grid.columns <= 24 else 2
    axes.set_xticks(np.arange(0, grid.columns, every), [str(c + 1) for c in range(0, grid.columns, every)], fontsize=7)
    axes.set_yticks(np.arange(grid.rows), [row_name(r) for r in range(grid.rows)], fontsize=7)
    axes.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False, length=0)
    figure.colorbar(image, ax=axes, shrink=0.8, label=what)
    axes.set_title(f"{plate}: {what}", fontsize=10)
    return figure


def _colormap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="#d0d0d0")


def show(url: str | os.PathLike[str], target: str, out: str | os.PathLike[str], *, qc: str | None = None,
         channels: Sequence[str] | None = None, ranges: str = "plate", grid: bool = False,
         storage_options: dict[str, Any] | None = None) -> tuple[Path, tuple[int, int]]:
    """Write the picture `target` asks for to the PNG `out`: EXP/PLATE/WELL/SITE a site (composite, or with
    `grid` each channel), EXP/PLATE the plate montage, or with `qc` its heat map. Returns the file and its
    (width, height) in pixels."""
    parts = target.strip("/").split("/")
    if len(parts) not in (2, 4):
        raise OptionError(f"{target!r}: give EXPERIMENT/PLATE or EXPERIMENT/PLATE/WELL/SITE, e.g. HUVEC-01/Plate1/B02/1")
    plate = "/".join(parts[:2])
    path = Path(out)
    if len(parts) == 4:
        if qc is not None:
            raise OptionError("--qc draws a plate: give EXPERIMENT/PLATE")
        if not parts[3].isdigit():
            raise OptionError(f"{target!r}: the site is a number, e.g. {plate}/{parts[2]}/1")
        draw = site_grid if grid else site_rgb
        data = png_bytes(draw(url, plate, parts[2], int(parts[3]), channels=channels, ranges=ranges,
                              storage_options=storage_options))
    elif qc is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        figure = plate_qc_figure(url, plate, qc, storage_options)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        data = png_bytes(np.asarray(canvas.buffer_rgba())[..., :3])
    else:
        data = png_bytes(plate_montage(url, plate, channels=channels, ranges=ranges, storage_options=storage_options))
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write the picture: {exc.strerror or exc}") from exc
    header = png_header(data, str(path))
    return path, (header.width, header.height)
