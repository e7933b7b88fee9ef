"""platezarr: convert image-based screening datasets into one chunked Zarr v3 store read with xarray."""

from converters.convert import Progress, Summary, build_plan, convert
from converters.errors import MetadataError, PlatezarrError, SchemaError, SourceError, StoreError
from converters.readers import open_index, open_plate, open_sites, open_store
from converters.sites import SiteDataset
from converters.version import __version__

__all__ = [
    "MetadataError",
    "PlatezarrError",
    "Progress",
    "SchemaError",
    "SiteDataset",
    "SourceError",
    "StoreError",
    "Summary",
    "__version__",
    "build_plan",
    "convert",
    "open_index",
    "open_plate",
    "open_sites",
    "open_store",
]
