"""zarr's warnings about what platezarr does on purpose, filtered in one place.

The filters are installed once, when `converters` is imported, and never swapped in and out around a
call (`warnings.catch_warnings` is not thread-safe, and wells are written from many threads). Each
names its category and the start of its message, so every other warning still reaches the user.
"""

from __future__ import annotations

import warnings

# zarr's ZarrUserWarning is a UserWarning: named by its base class, so that importing platezarr does not import zarr
EXPECTED = (
    # platezarr stores are consolidated on purpose: one read opens a whole store, from a bucket too
    (UserWarning, "Consolidated metadata is currently not part"),
    # the completion records under `_platezarr/` sit beside the hierarchy while a conversion runs
    (UserWarning, "Object at _platezarr is not recognized"),
)


def expect_zarr_warnings() -> None:
    """Ignore the warnings in `EXPECTED` from here on, in every thread."""
    for category, message in EXPECTED:
        warnings.filterwarnings("ignore", message=message, category=category)
