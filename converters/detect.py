"""Which dataset is this folder? Match every schema's path pattern, then the image header."""

from __future__ import annotations

from converters.decode import image_header
from converters.errors import SourceError
from converters.schema import DatasetSchema, dataset_names, load_schema
from converters.source import LocalSource


def detect_dataset(source: LocalSource, listing: list[tuple[str, int]]) -> DatasetSchema:
    """The one schema whose file names and image size fit the source; otherwise an error listing why."""
    matches = {}
    for name in dataset_names():
        schema = load_schema(name)
        hit = next((rel for rel, _ in listing if schema.path_pattern.match(rel)), None)
        if hit is not None:
            matches[name] = (schema, hit)
    if not matches:
        examples = ", ".join(rel for rel, _ in listing[:3]) or "no files at all"
        raise SourceError(
            f"{source.url}: no known dataset layout matches its files ({examples}); "
            f"pass --dataset ({', '.join(dataset_names())})"
        )
    fitting = [s for s, rel in matches.values() if _shape_fits(source, s, rel)]
    if len(fitting) == 1:
        return fitting[0]
    candidates = ", ".join(sorted(s.name for s, _ in matches.values()))
    raise SourceError(f"{source.url}: the files fit several datasets ({candidates}); pass --dataset to choose one")


def _shape_fits(source: LocalSource, schema: DatasetSchema, rel: str) -> bool:
    header = image_header(source.read(rel), source.path(rel))
    return (header.height, header.width) == schema.image_shape
