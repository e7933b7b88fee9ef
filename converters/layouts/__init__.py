"""Source layouts: how to find a dataset's image files and read their keys (one module per layout)."""

from __future__ import annotations

from converters.layouts.files import scan_files
from converters.layouts.phenix import scan_phenix
from converters.layouts.tars import scan_tars

SCANNERS = {"files": scan_files, "phenix": scan_phenix, "tars": scan_tars}
