"""Errors raised by platezarr: each says what was expected, what was found, where, and what to do."""

from __future__ import annotations


class PlatezarrError(Exception):
    """Base class of every error platezarr raises on purpose; the CLI turns it into exit status 1."""


class SchemaError(PlatezarrError, ValueError):
    """A dataset schema file in `schemas/` is malformed or names something unknown."""


class SourceError(PlatezarrError, ValueError):
    """A source image or folder is not what the dataset schema declares."""


class MetadataError(PlatezarrError, ValueError):
    """A metadata table is missing a column, has a bad value, or disagrees with itself."""


class StoreError(PlatezarrError, OSError):
    """The output store cannot be written, or is not a complete platezarr store."""


class OptionError(PlatezarrError, ValueError):
    """An option of a conversion or a reader has a value it cannot take."""


class SchedulerError(PlatezarrError):
    """The dask.distributed scheduler address is malformed, or no scheduler answers there in time."""


class BucketError(PlatezarrError):
    """A bucket cannot be reached or refuses access, or the storage options to reach it are wrong."""
