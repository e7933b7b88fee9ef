"""The zarr.json documents of a store's nodes, kept as they are written: the root's consolidated metadata is made
from them in memory, by zarr, instead of by reading every node back (a GET per node in a bucket).

The template's documents are kept in a record (`NODES_KEY`) until the store is finished, so that the finalize of
a resumed run knows them too; a store begun without one (by an earlier platezarr) has its nodes read back.
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.group import ConsolidatedMetadata, GroupMetadata
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from converters.output import RECORDS, put_objects

if TYPE_CHECKING:
    from converters.output import Output

NODES_KEY = f"{RECORDS}/nodes.json"  # the template's documents, by key
META = "zarr.json"


def meta_key(path: str) -> str:
    """The key of the zarr.json of the node at `path` ("" for the root)."""
    return f"{path}/{META}" if path else META


def group_document(attributes: dict[str, Any]) -> bytes:
    """A group's zarr.json as zarr writes it."""
    return _group_bytes(GroupMetadata(attributes=attributes))


def _group_bytes(metadata: GroupMetadata) -> bytes:
    return metadata.to_buffer_dict(default_buffer_prototype())[META].to_bytes()


def _member(document: bytes) -> dict[str, Any]:
    """A node's document as a member of consolidated metadata: a group's with empty consolidated metadata of its own
    (placed as zarr places it)."""
    doc = json.loads(document)
    if doc.get("node_type") != "group":
        return doc
    empty = {"kind": "inline", "must_understand": False, "metadata": {}}
    return {"attributes": doc.get("attributes", {}), "zarr_format": doc["zarr_format"], "consolidated_metadata": empty,
            "node_type": "group"}


def _buffers(objects: dict[str, bytes]) -> dict[str, Buffer]:
    return {key: default_buffer_prototype().buffer.from_bytes(data) for key, data in objects.items()}


class Nodes:
    """The documents of the nodes written through `put`, by key. `complete`: they are those of every node of the
    store (a template written, or recorded, by this platezarr); else the consolidation reads the nodes back."""

    def __init__(self, store: Store, documents: dict[str, bytes] | None = None, complete: bool = False) -> None:
        self.store, self.complete = store, complete
        self.documents: dict[str, bytes] = dict(documents or {})

    @classmethod
    def load(cls, output: Output) -> Nodes:
        """The documents of the store's template from its record, or none (then read back) if it has none."""
        record = output.read_json(NODES_KEY)
        if record is None:
            return cls(output.store)
        return cls(output.store, {key: json.dumps(doc).encode() for key, doc in record.items()}, complete=True)

    def save(self) -> None:
        """Record the documents held, for the finalize of this store (in this run or a resumed one)."""
        record = {key: json.loads(data) for key, data in self.documents.items()}
        put_objects(self.store, [(NODES_KEY, json.dumps(record, separators=(",", ":")).encode())])

    def put(self, objects: list[tuple[str, bytes]]) -> None:
        """Store the objects (`put_objects`), keeping the documents among them."""
        put_objects(self.store, objects)
        self.documents.update((key, data) for key, data in objects if key.rpartition("/")[2] == META)

    def document(self, path: str) -> dict[str, Any]:
        """The zarr.json of the node at `path` as written, read from the store if it was not written through here."""
        return json.loads(self._held(path))

    def _held(self, path: str) -> bytes:
        key = meta_key(path)
        if key not in self.documents:
            buffer = sync(self.store.get(key, prototype=default_buffer_prototype()))
            if buffer is None:
                raise KeyError(f"no node at {path!r}")
            self.documents[key] = buffer.to_bytes()
        return self.documents[key]

    def group(self, path: str, attributes: dict[str, Any]) -> tuple[str, bytes]:
        """The object to store for the group at `path` with `attributes` added to its own, as zarr writes it for a
        group opened without consolidated metadata (a finished store's root lists the group's children itself)."""
        metadata = GroupMetadata.from_dict(self.document(path))
        merged = {**metadata.attributes, **attributes}
        updated = dataclasses.replace(metadata, attributes=merged, consolidated_metadata=None)
        return meta_key(path), _group_bytes(updated)

    def chunks(self, path: str, values: np.ndarray) -> list[tuple[str, bytes]]:
        """The chunk objects of the array at `path` holding `values`, encoded by zarr in memory (chunks all of the
        fill value left out, as zarr leaves them out)."""
        key = meta_key(path)
        written = _buffers({key: self._held(path)})
        zarr.open_array(MemoryStore(written), path=path, mode="r+", zarr_format=3)[...] = values
        return [(name, data.to_bytes()) for name, data in written.items() if name != key]

    def consolidated(self, attributes: dict[str, Any]) -> tuple[str, bytes]:
        """The root zarr.json with `attributes` and the consolidated metadata of every node (the documents, read back
        first unless `complete`), as `zarr.consolidate_metadata` makes it from the nodes it reads: each child group
        taken without consolidated metadata of its own, then given its children's."""
        if not self.complete:
            self._read_all()
        root = GroupMetadata.from_dict(self.document(""))
        return META, self._consolidated("", dataclasses.replace(root, attributes=attributes))

    def consolidated_group(self, path: str, attributes: dict[str, Any]) -> tuple[str, bytes]:
        """The zarr.json of a group at `path` with `attributes` and the consolidated metadata of the nodes below it
        written through here, as `zarr.consolidate_metadata` makes it for a store whose root is that group."""
        return meta_key(path), self._consolidated(path, GroupMetadata(attributes=attributes))

    def _consolidated(self, path: str, group: GroupMetadata) -> bytes:
        """`group`'s zarr.json with the consolidated metadata of the documents below `path`, as zarr writes it (members
        ordered by depth, then name; child groups with empty consolidated metadata of their own), made one member at
        a time: zarr's own objects for the metadata of a thousand plates would take hundreds of MB."""
        prefix = f"{path}/" if path else ""
        members = sorted(((key.removeprefix(prefix).removesuffix(f"/{META}"), key) for key in self.documents
                          if key.startswith(prefix) and key != meta_key(path)),
                         key=lambda item: (item[0].count("/"), unicodedata.normalize("NFKC", item[0]).casefold()))
        indent = zarr.config.get("json_indent")
        placeholder = f"platezarr-members-{uuid.uuid4()}"
        head = dataclasses.replace(group, consolidated_metadata=ConsolidatedMetadata(metadata={})).to_dict()
        head["consolidated_metadata"]["metadata"] = placeholder
        before, after = json.dumps(head, indent=indent, allow_nan=True).split(json.dumps(placeholder))
        pad = "" if indent is None else " " * (3 * indent)  # a member's depth: root, consolidated_metadata, metadata
        newline, comma = ("", ", ") if indent is None else ("\n", ",\n")
        parts = [before.encode(), b"{"]
        for i, (name, key) in enumerate(members):
            member = json.dumps(_member(self.documents[key]), indent=indent, allow_nan=True).replace("\n", "\n" + pad)
            parts.append(f"{comma if i else newline}{pad}{json.dumps(name)}: {member}".encode())
        parts += [f"{newline}{pad[indent or 0:]}}}".encode() if members else b"}", after.encode()]
        return b"".join(parts)

    def _read_all(self) -> None:
        """Read every node's document from the store, as `zarr.consolidate_metadata` walks it."""
        root = zarr.open_group(self.store, mode="r", zarr_format=3, use_consolidated=False)
        self.documents = {META: _group_bytes(root.metadata)}
        for path, node in root.members(max_depth=None, use_consolidated_for_children=False):
            self.documents[meta_key(path)] = json.dumps(node.metadata.to_dict()).encode()
        self.complete = True
