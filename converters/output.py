"""The output location: refuse to clobber what is not ours, and open it as a Zarr store."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import zarr
from zarr.storage import LocalStore

from converters.errors import StoreError

ROOT_ATTR = "platezarr"
MARKER_ATTR = "platezarr_conversion"


def output_path(out: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(out).removeprefix("file://")).expanduser().resolve()


def root_attributes(path: Path) -> dict | None:
    """The root group's attributes, or None when `path` holds no Zarr v3 group."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("attributes", {}) if meta.get("node_type") == "group" else None


def is_platezarr_store(path: Path) -> bool:
    """True for a finished store and for one a conversion started (it carries the in-progress marker)."""
    attrs = root_attributes(path)
    return attrs is not None and (ROOT_ATTR in attrs or MARKER_ATTR in attrs)


def prepare_output(out: str | os.PathLike[str], source: Path, overwrite: bool) -> LocalStore:
    """A fresh, writable store at `out`; an existing store is replaced only with `overwrite`."""
    path = output_path(out)
    if path == source or source in path.parents:
        raise StoreError(f"output {path} is inside the source folder {source}; write the store somewhere else")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not is_platezarr_store(path):
            raise StoreError(f"{path} exists and is not a platezarr store; it is left untouched: choose another output")
        if not overwrite:
            raise StoreError(f"{path} already holds a platezarr store; pass --overwrite to replace it")
        shutil.rmtree(path)
    parent = path.parent
    if not parent.is_dir():
        raise StoreError(f"cannot create {path}: its parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise StoreError(f"cannot create {path}: no write permission in {parent}")
    return LocalStore(path)


def open_output_array(out: str, path: str) -> zarr.Array:
    """An existing array of the store, opened for writing whole shards without scanning for empty chunks."""
    return zarr.open_array(LocalStore(output_path(out)), path=path, mode="r+", config={"write_empty_chunks": True})


def store_bytes(path: os.PathLike[str] | str) -> int:
    """Total bytes of every file below `path`."""
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total
