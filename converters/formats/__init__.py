"""Output formats: what a conversion writes, behind the few questions every format answers.

`convert` picks one from `FORMATS` and knows none of their details: it creates the skeleton, has
workers write each well's block, and finalizes. Readers locate a site's chunk through the same object.
A new output format is one module here and one entry in `FORMATS`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from converters.output import Output
    from converters.plan import Plan
    from converters.write import WrittenWells


class StoreFormat(Protocol):
    """An output layout; a plain, picklable value made per conversion, so workers get it with each task."""

    @property
    def name(self) -> str:
        """How users call the format (`--format`)."""

    def create(self, output: Output, plan: Plan, marker: dict) -> None:
        """Write the skeleton before any pixel: groups, coordinates, empty arrays; the root marks a conversion begun."""

    def write_well(self, output: Output, group: str, well_index: int, block: np.ndarray) -> None:
        """Write one well's (site, channel, y, x) block, whole, replacing what was there."""

    def finalize(self, output: Output, plan: Plan, written: WrittenWells, identity: dict) -> None:
        """Everything after the wells (`identity` is the plan's `plan_identity`, recorded in the root attributes);
        the store reads as complete only once this returns."""

    def locate(self, group: str, well_index: int, site_index: int) -> tuple[str, list[tuple[int, ...]]]:
        """The store key of the object holding a site, and the positions of its chunks in that object."""


# Each format's class as `module:class`, imported when a conversion writes it (a dry run loads no zarr writer).
FORMATS: dict[str, str] = {"native": "converters.formats.native:NativeFormat",
                           "ome-zarr": "converters.formats.ome:OmeFormat"}


def format_for(name: str, plan: Plan) -> StoreFormat:
    """The output format called `name` (one of `FORMATS`, checked by the options), set up for `plan`."""
    module, cls = FORMATS[name].split(":")
    return getattr(import_module(module), cls).for_plan(plan)
