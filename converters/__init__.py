"""platezarr: convert image-based screening datasets into one chunked Zarr v3 store read with xarray."""

from converters.convert import Progress, Summary, build_plan, convert
from converters.errors import MetadataError, PlatezarrError, SchemaError, SourceError, StoreError
from converters.export import export
from converters.measure import compute_stats
from converters.pictures import plate_montage, plate_qc_figure, site_grid, site_rgb
from converters.readers import open_index, open_plate, open_sites, open_store
from converters.sites import SiteDataset
from converters.statstore import pixel_stats_table, plate_display_range
from converters.stream import SiteStream
from converters.quiet import expect_zarr_warnings
from converters.version import __version__

expect_zarr_warnings()

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
