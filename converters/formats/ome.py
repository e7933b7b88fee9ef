"""OME-NGFF 0.5 HCS output (Zarr v3, `attributes["ome"]`): one plate group per `{experiment}/{plate}`, with
`{row}/{column}` well groups and one multiscale image group per field (site), arrays (c, y, x) per level.

The worker that decoded a well writes all of it but the OME group metadata: for each field and
level an array's zarr.json and its one shard, encoded here (converters/shard.py, inner chunks of one
channel, tiled for large images) and written as one object each. `finalize` then writes what depends
on every well: image groups (multiscales and omero, whose display windows are the plate's pooled
pixel statistics), well and plate groups, the root `index` and the root attributes last, so the
output reads as complete only when all of it is there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from itertools import product
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from converters.errors import SchemaError, StoreError
from converters.finalize import index_table, reported, root_attrs, write_index
from converters.output import MARKER_ATTR, RECORDS, ROOT_ATTR, Output
from converters.plan import Plan, PlatePlan
from converters.profiles import chains_of
from converters.pyramid import halve, level_shapes, tile_side
from converters.schema import DatasetSchema, _load_raw
from converters.shard import ShardLayout
from converters.template import plate_dataset
from converters.wells import row_index, split_well, well_name
from converters.statstore import plate_display_range
from converters.windows import plate_windows

if TYPE_CHECKING:
    import xarray as xr

    from converters.write import WrittenWells

VERSION = "0.5"
AXES = ("c", "y", "x")
SEPARATOR = "."  # chunk keys `c.0.0.0`: one file per shard, no folders of chunks
STANDARD_PLATES = ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48))  # rows, columns
WRITERS = 8  # concurrent metadata writes in `finalize` (one small object per field and well)


@dataclass
class OmeFormat:
    """OME-Zarr HCS plates; `layout` (JSON, kept in each plate's attributes) says how every field is stored.

    Which well a well index is, is read from the plate group once per plate and process (`wells`), so
    the value sent with each task stays small whatever the size of the plate."""

    layout: dict[str, Any]
    wells: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)
    name: ClassVar[str] = "ome-zarr"

    @classmethod
    def for_plan(cls, plan: Plan) -> OmeFormat:
        """Each level's shape, chunks (one channel, tiles of `tile_side`) and shards (the whole level, padded to
        whole tiles) for the plan's images."""
        s = plan.schema
        levels = []
        for y, x in level_shapes(s.image_shape):
            chunks = (1, tile_side(y), tile_side(x))
            shards = (len(s.channels), -(-y // chunks[1]) * chunks[1], -(-x // chunks[2]) * chunks[2])
            levels.append({"shape": [len(s.channels), y, x], "chunks": list(chunks), "shards": list(shards)})
        return cls({"dtype": str(plan.dtype), "compression": plan.settings.compression,
                    "codec": plan.settings.profile.codec, "sites": list(s.sites), "levels": levels})

    @classmethod
    def of_plate(cls, attrs: dict[str, Any], where: str) -> OmeFormat:
        """The format described by a plate group's `platezarr` attribute; a StoreError if it has none."""
        if "layout" not in attrs or "wells" not in attrs:
            raise StoreError(f"{where}: not a plate group platezarr wrote as OME-Zarr (no platezarr layout)")
        return cls(attrs["layout"])

    @cached_property
    def levels(self) -> list[ShardLayout]:
        """The shard layout of each level's arrays, encoded with the chain the native store uses for these images."""
        dtype = np.dtype(self.layout["dtype"]).newbyteorder("<")
        profile = chains_of(self.layout["compression"])[self.layout["codec"]]
        return [ShardLayout(tuple(v["shards"]), tuple(v["chunks"]), dtype, profile, SEPARATOR) for v in self.layout["levels"]]

    @property
    def sites(self) -> int:
        """Fields per well."""
        return len(self.layout["sites"])

    @property
    def image_shape(self) -> tuple[int, int]:
        """(y, x) of level 0, the source images."""
        y, x = self.layout["levels"][0]["shape"][1:]
        return y, x

    def create(self, output: Output, plan: Plan, marker: dict) -> None:
        """The root (marked in progress) first, so that what follows is ours; then experiment groups, plate groups
        naming their wells, and their row groups. Every node gets its zarr.json before anything goes in it, so an
        interrupted output can be walked (and replaced by --overwrite) from its root."""
        output.write_json("zarr.json", group_json({MARKER_ATTR: marker}))
        groups: list[tuple[str, dict]] = [(e, {}) for e in sorted({p.experiment for p in plan.plates})]
        groups += [(p.group, {ROOT_ATTR: self._plate_attrs(p)}) for p in plan.plates]
        groups += [(f"{p.group}/{row}", {}) for p in plan.plates for row in sorted({split_well(w)[0] for w in p.wells})]
        write_all(output, ((f"{g}/zarr.json", group_json(attrs)) for g, attrs in groups))

    def write_well(self, output: Output, group: str, well_index: int, block: np.ndarray) -> None:
        """Every field's levels: array metadata and one shard each. The well and field groups get their OME
        metadata in `finalize`, once the plate's display windows are known."""
        well = self._path(output, group, well_index)
        output.write_json(f"{group}/{well}/zarr.json", group_json({}))
        for site, image in enumerate(block):
            output.write_json(f"{group}/{well}/{site}/zarr.json", group_json({}))
            for level, layout in enumerate(self.levels):
                image = halve(image) if level else image
                path = f"{group}/{well}/{site}/{level}"
                output.write_json(f"{path}/zarr.json", self.arrays[level])
                output.write_bytes(f"{path}/{layout.key((0, 0, 0))}", layout.encode(_padded(image, layout.shard_shape)))

    def finalize(self, output: Output, plan: Plan, written: WrittenWells, identity: dict) -> None:
        """Image, well and plate groups, the index, then the root attributes; the records go last."""
        for plate in plan.plates:
            windows = plate_windows(plate_display_range(written, plate.group), plan.dtype)
            write_all(output, self._plate_groups(output, plan, plate, plate_dataset(plan, plate),
                                                 written.present[plate.group], windows))
        table = index_table(plan, written.present)
        if len(table):
            table["ome_path"] = [f"{g}/{self._path_of(g, w)}/{s}" for g, w, s in
                                 zip(table["group"], table["well_index"], table["site_index"])]
        write_index(output.store, table)
        attrs = root_attrs(plan, reported(plan, written), len(table), written.skipped())
        level0 = self.layout["levels"][0]
        attrs |= {"plan": identity, "format": self.name, "chunks": level0["chunks"],
                  "shards": level0["shards"], "levels": [v["shape"][1:] for v in self.layout["levels"]]}
        # Not consolidated: a root listing every field's arrays would grow with the dataset, and viewers open plates
        # directly. The explicit null says so to zarr (which then lists groups as usual) and, written last, marks
        # the store complete as consolidation does for the native store (Output.classify).
        output.write_json("zarr.json", group_json({ROOT_ATTR: attrs}) | {"consolidated_metadata": None})
        output.delete(RECORDS)

    def locate(self, group: str, well_index: int, site_index: int) -> tuple[str, list[tuple[int, ...]]]:
        """The field's level-0 shard, e.g. `HUVEC-01/Plate1/B/02/0/0/c.0.0.0`, and every chunk in it (the plate's
        wells must be known: `learn_wells`)."""
        layout = self.levels[0]
        key = f"{group}/{self._path_of(group, well_index)}/{site_index}/0/{layout.key((0, 0, 0))}"
        return key, list(product(*(range(n) for n in layout.chunks_per_shard)))

    def learn_wells(self, group: str, plate_attrs: Callable[[str], dict[str, Any]]) -> None:
        """Learn which well each index of plate `group` is from the plate's `platezarr` attribute, read once a plate."""
        if group not in self.wells:
            attrs = plate_attrs(group)
            if "wells" not in attrs:
                raise StoreError(f"{group}: the plate group does not name its wells; the OME-Zarr output is damaged")
            self.wells[group] = list(attrs["wells"])

    def stored_wells(self, output: Output, group: str) -> list[tuple[str, np.ndarray]]:
        """Every well of plate `group` with the (site, channel) mask of images it holds, from the well groups
        (all False for a well that was not written)."""
        self._path(output, group, 0)
        wells = self.wells[group]
        metas = read_all(output, [f"{group}/{self._path_of(group, w)}/zarr.json" for w in range(len(wells))])
        empty = np.zeros((self.sites, self.levels[0].shard_shape[0]), dtype=bool)
        return [(well, np.array(_platezarr_attrs(meta).get("present", empty), dtype=bool)) for well, meta in zip(wells, metas)]

    def _path(self, output: Output, group: str, well_index: int) -> str:
        self.learn_wells(group, lambda g: _platezarr_attrs(output.read_json(f"{g}/zarr.json")))
        return self._path_of(group, well_index)

    def _path_of(self, group: str, well_index: int) -> str:
        """`B/02`: the well group of a plate's well index."""
        row, column = split_well(self.wells[group][well_index])
        return f"{row}/{column:02d}"

    def _plate_attrs(self, plate: PlatePlan) -> dict[str, Any]:
        return {"wells": list(plate.wells), "layout": self.layout}

    @cached_property
    def arrays(self) -> list[dict[str, Any]]:
        """The zarr.json of each level's arrays, as zarr-python writes it for the shards and codecs of `levels`
        (made once, in memory)."""
        found = []
        for described, layout in zip(self.layout["levels"], self.levels):
            store = MemoryStore()
            zarr.create_array(store, shape=tuple(described["shape"]), dtype=layout.dtype, chunks=layout.chunk_shape,
                              shards=layout.shard_shape, serializer=layout.profile.serializer(),
                              compressors=layout.profile.compressors(), fill_value=0, dimension_names=AXES,
                              chunk_key_encoding={"name": "default", "separator": SEPARATOR}, zarr_format=3)
            written = sync(store.get("zarr.json", default_buffer_prototype()))
            assert written is not None  # create_array wrote it
            found.append(json.loads(written.to_bytes()))
        return found

    def _plate_groups(self, output: Output, plan: Plan, plate: PlatePlan, ds: xr.Dataset, present: np.ndarray,
                      windows: list[dict[str, float]]) -> Iterator[tuple[str, dict]]:
        """The group metadata of one plate: fields and wells of the wells written (those holding an image), and the
        plate itself."""
        self._path(output, plate.group, 0)
        done = np.flatnonzero(present.any(axis=(1, 2))).tolist()
        image = self._image_attrs(plan, windows)
        columns = _well_columns(ds)
        n_rows, n_columns = plate_grid(plan.schema, plate.wells)
        for w in done:
            path = self._path_of(plate.group, w)
            for s, site in enumerate(plan.schema.sites):
                yield f"{plate.group}/{path}/{s}/zarr.json", group_json(
                    {"ome": image | {"multiscales": [self._multiscale(plan, f"{plate.wells[w]} site {site}")]},
                     ROOT_ATTR: {"well": plate.wells[w], "site": site}})
            yield f"{plate.group}/{path}/zarr.json", group_json(
                {"ome": {"version": VERSION, "well": {"images": [{"path": str(s), "acquisition": 0}
                                                                  for s in range(self.sites)]}},
                 ROOT_ATTR: {"well": plate.wells[w], "sites": list(plan.schema.sites),
                             "present": present[w].tolist()} | columns(w)})
        wells = [{"path": self._path_of(plate.group, w), "rowIndex": row_index(split_well(plate.wells[w])[0]),
                  "columnIndex": split_well(plate.wells[w])[1] - 1} for w in done]
        yield f"{plate.group}/zarr.json", group_json({"ome": {"version": VERSION, "plate": {
            "version": VERSION, "name": plate.group, "field_count": self.sites,
            "rows": [{"name": split_well(well_name(r + 1, 1))[0]} for r in range(n_rows)],
            "columns": [{"name": f"{c + 1:02d}"} for c in range(n_columns)],
            "wells": wells,
            "acquisitions": [{"id": 0, "name": plate.group, "maximumfieldcount": self.sites}],
        }}, ROOT_ATTR: self._plate_attrs(plate)})

    def _image_attrs(self, plan: Plan, windows: list[dict[str, float]]) -> dict[str, Any]:
        """`ome` of a field but its multiscales: the version and the channels as viewers draw them (omero)."""
        channels = [{"label": c.name, "color": c.color, "active": c.visible, "window": window, "coefficient": 1.0,
                     "family": "linear", "inverted": False} for c, window in zip(plan.schema.channels, windows)]
        return {"version": VERSION, "omero": {"channels": channels, "rdefs": {"model": "color"}}}

    def _multiscale(self, plan: Plan, name: str) -> dict[str, Any]:
        """The field's one multiscale: axes c, y, x and a scale per level (the pixel size, doubling each level)."""
        size = plan.pixel_size_um
        unit = {"unit": "micrometer"} if size is not None else {}
        axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"} | unit, {"name": "x", "type": "space"} | unit]
        datasets = [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, (size or 1.0) * 2**k, (size or 1.0) * 2**k]}]}
            for k in range(len(self.layout["levels"]))]
        return {"name": name, "axes": axes, "datasets": datasets, "type": "mean",
                "metadata": {"description": "each level the 2x2 mean of the one above, rounded half up"}}


def _padded(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`image` with zeros (the fill value) past its end up to `shape`: the edge of a shard that reaches past it."""
    if image.shape == shape:
        return image
    return np.pad(image, [(0, n - m) for m, n in zip(image.shape, shape)])


def _well_columns(ds: xr.Dataset) -> Callable[[int], dict[str, Any]]:
    """Each well's metadata columns (per well) and lists of per-site values, as JSON values (NaN → null)."""
    skip = {"well", "row", "column"}
    per_well = {n: c.values for n, c in ds.coords.items() if c.dims == ("well",) and n not in skip}
    per_site = {n: c.values for n, c in ds.coords.items() if c.dims == ("well", "site")}

    def columns(w: int) -> dict[str, Any]:
        return {"metadata": {n: _json(v[w]) for n, v in per_well.items()},
                "site_metadata": {n: [_json(x) for x in v[w]] for n, v in per_site.items()}}

    return columns


def _platezarr_attrs(meta: dict | None) -> dict[str, Any]:
    """The `platezarr` attribute of a node's zarr.json (empty if none)."""
    return (meta or {}).get("attributes", {}).get(ROOT_ATTR, {})


def _json(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and np.isnan(value) else value


def plate_grid(schema: DatasetSchema, wells: Iterable[str]) -> tuple[int, int]:
    """Rows and columns of the physical plate: the schema's `[plate_format]` if it declares one that holds every
    well, else the smallest standard plate (6 to 1536 wells) that does."""
    positions = [split_well(w) for w in wells]
    need = (max((row_index(r) + 1 for r, _ in positions), default=1), max((c for _, c in positions), default=1))
    try:
        declared = _load_raw(schema.name).get("plate_format", {})
    except SchemaError:  # a schema made in code, with no file
        declared = {}
    candidates = [(declared["rows"], declared["columns"])] if "rows" in declared and "columns" in declared else []
    candidates += list(STANDARD_PLATES)
    return next((c for c in candidates if c[0] >= need[0] and c[1] >= need[1]), need)


def group_json(attrs: dict[str, Any]) -> dict[str, Any]:
    """A Zarr v3 group's zarr.json."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attrs}


def write_all(output: Output, items: Iterable[tuple[str, dict]]) -> None:
    """Write many small JSON objects, several at once (a bucket answers each PUT in milliseconds)."""
    with ThreadPoolExecutor(WRITERS, thread_name_prefix="platezarr-meta") as pool:
        for _ in pool.map(lambda item: output.write_json(*item), items):
            pass


def read_all(output: Output, keys: list[str]) -> list[dict | None]:
    """Read many small JSON objects, several at once; None where there is none."""
    with ThreadPoolExecutor(WRITERS, thread_name_prefix="platezarr-meta") as pool:
        return list(pool.map(output.read_json, keys))

