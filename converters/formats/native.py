"""The native platezarr store (SPEC.md, layout v1): per plate an `images` array (well, site, channel, y, x)
whose every well is one shard, with coordinates, `present`, the root `index` and attributes."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from converters.finalize import finish_store
from converters.shard import ShardLayout
from converters.template import write_template

if TYPE_CHECKING:
    from converters.output import Output
    from converters.plan import Plan
    from converters.write import WrittenWells


@dataclass(frozen=True)
class NativeFormat:
    """A shard per well, encoded in the worker that decoded the well and written as one object."""

    layout: ShardLayout
    name: ClassVar[str] = "native"

    @classmethod
    def for_plan(cls, plan: Plan) -> NativeFormat:
        s = plan.settings
        return cls(ShardLayout(s.shards, s.chunks, plan.dtype.newbyteorder("<"), s.profile))

    def create(self, output: Output, plan: Plan, marker: dict) -> None:
        write_template(plan, output.store, marker, self.layout)

    def write_well(self, output: Output, group: str, well_index: int, block: np.ndarray) -> None:
        key, _ = self.locate(group, well_index, 0)
        output.write_bytes(key, self.layout.encode(block[np.newaxis]))

    def finalize(self, output: Output, plan: Plan, written: WrittenWells, identity: dict) -> None:
        finish_store(output, plan, written, identity)

    def locate(self, group: str, well_index: int, site_index: int) -> tuple[str, list[tuple[int, ...]]]:
        """The well's shard key, e.g. `HUVEC-01/Plate1/images/c.3.0.0.0.0`, and the site's chunks in it."""
        grid = self.layout.chunks_per_shard
        key = f"{group}/images/{self.layout.key((well_index, 0, 0, 0, 0))}"
        return key, [(0, site_index, *rest) for rest in product(*(range(n) for n in grid[2:]))]
