"""platezarr: convert image-based screening datasets into one chunked Zarr v3 store read with xarray."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from converters.convert import Progress, Summary, build_plan, convert
from converters.errors import MetadataError, PlatezarrError, SchemaError, SourceError, StoreError
from converters.export import export
from converters.quiet import expect_zarr_warnings
from converters.version import __version__

if TYPE_CHECKING:
    from converters.measure import compute_stats
    from converters.pictures import plate_montage, plate_qc_figure, site_grid, site_rgb
    from converters.readers import open_index, open_plate, open_sites, open_store
    from converters.sites import SiteDataset
    from converters.statstore import pixel_stats_table, plate_display_range
    from converters.stream import SiteStream

expect_zarr_warnings()

# The readers' names, imported on first use: a command that reads no store (`convert --dry-run`) loads neither
# xarray nor dask. (`convert` and `export` are imported above: their modules' names would otherwise shadow them.)
LAZY = {
    "compute_stats": "converters.measure",
    "plate_montage": "converters.pictures",
    "plate_qc_figure": "converters.pictures",
    "site_grid": "converters.pictures",
    "site_rgb": "converters.pictures",
    "open_index": "converters.readers",
    "open_plate": "converters.readers",
    "open_sites": "converters.readers",
    "open_store": "converters.readers",
    "SiteDataset": "converters.sites",
    "pixel_stats_table": "converters.statstore",
    "plate_display_range": "converters.statstore",
    "SiteStream": "converters.stream",
}


def __getattr__(name: str) -> Any:
    """A name of `LAZY`, from its module."""
    if name in LAZY:
        return getattr(import_module(LAZY[name]), name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")

__all__ = [
    "MetadataError",
    "PlatezarrError",
    "Progress",
    "SchemaError",
    "SiteDataset",
    "SiteStream",
    "SourceError",
    "StoreError",
    "Summary",
    "__version__",
    "build_plan",
    "compute_stats",
    "convert",
    "export",
    "open_index",
    "open_plate",
    "open_sites",
    "open_store",
    "pixel_stats_table",
    "plate_display_range",
    "plate_montage",
    "plate_qc_figure",
    "site_grid",
    "site_rgb",
]
