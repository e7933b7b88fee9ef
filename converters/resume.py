"""Resume: a fingerprint of the plan, completion records of finished wells, and getting an output ready.

A well's record is written only after its shard, so on a re-run every recorded well is kept and
every other one is written again; an interrupted write leaves no record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from converters.errors import StoreError
from converters.output import MARKER_ATTR, RECORDS, ROOT_ATTR, Output
from converters.plan import Plan
from converters.profiles import chains_of
from converters.version import __version__
from converters.write import WellResult

if TYPE_CHECKING:
    from converters.formats import StoreFormat

log = logging.getLogger("platezarr")

TEMPLATE_KEY = f"{RECORDS}/template.json"
COMPARED = ("dataset", "source", "metadata", "embeddings", "dtype", "image_shape", "chunks", "shards", "codec")


def plan_identity(plan: Plan) -> dict:
    """What must match for a re-run to resume an existing output, with a fingerprint of everything else."""
    described = plan.describe()
    digest = hashlib.sha256()
    for plate in plan.plates:
        digest.update(json.dumps([plate.group, plate.wells, [t.files for t in plate.tasks]]).encode())
        digest.update(pd.util.hash_pandas_object(plate.metadata, index=False).to_numpy().tobytes())
    if plan.embeddings is not None:
        digest.update(plan.embeddings.table.digest().encode())
    return {key: described[key] for key in COMPARED} | {"fingerprint": digest.hexdigest()}


def differences(stored: dict, current: dict) -> list[str]:
    """Human-readable differences between the plan an output was started with and the current one."""
    changed = [f"{k}: {stored.get(k)!r} before, {current[k]!r} now" for k in COMPARED if stored.get(k) != current[k]]
    if not changed and stored.get("fingerprint") != current["fingerprint"]:
        changed.append("the source files, the metadata rows or the embeddings changed")
    return changed


def finished_wells(output: Output) -> Iterator[WellResult]:
    """Every well with a completion record, one at a time: a record's statistics hold the well's histogram (61 KB
    for 6 channels of 16-bit images), too much to hold at once for the millions of wells of RxRx3."""
    for group, well_index, record in output.well_records(f"{RECORDS}/wells/"):
        yield WellResult.from_record(group, well_index, record)


def keep_stored_chain(output: Output, plan: Plan, overwrite: bool, chunks_given: bool = False) -> Plan:
    """The plan, resuming an unfinished store with the codec chain it was begun with when an earlier version's
    profile of the same name used another one for this dtype (16-bit stores begun with zstd-3 stay zstd-3), and
    unless `chunks_given`, with the chunks and shards it was begun with (a schema's default may have changed since)."""
    attrs: dict[str, Any] = (output.root_meta() or {}).get("attributes", {}) if not overwrite else {}
    stored_plan = attrs.get(MARKER_ATTR, {}).get("plan", {})
    if not chunks_given:
        plan = _keep_stored_chunks(output, plan, stored_plan)
    stored = stored_plan.get("codec")
    settings = plan.settings
    if stored is None or stored == settings.profile.codec or stored not in chains_of(settings.compression):
        return plan
    log.info("%s was begun with %s: resuming with it", output.location, stored)
    return dataclasses.replace(plan, settings=dataclasses.replace(settings, codec=stored))


def _keep_stored_chunks(output: Output, plan: Plan, stored: dict[str, Any]) -> Plan:
    """The plan with the chunks and shards of the store's plan `stored`, if they are another cut of the same images."""
    settings = plan.settings
    chunks, shards = tuple(stored.get("chunks") or ()), tuple(stored.get("shards") or ())
    same_images = stored.get("image_shape") == list(plan.schema.image_shape) and shards[:3] == settings.shards[:3]
    if not same_images or (chunks, shards) == (settings.chunks, settings.shards):
        return plan
    log.info("%s was begun with chunks %s: resuming with them", output.location, list(chunks))
    return dataclasses.replace(plan, settings=dataclasses.replace(settings, chunks=chunks, shards=shards))


def prepare(output: Output, plan: Plan, identity: dict, fmt: StoreFormat, overwrite: bool, started: str) -> bool:
    """Make the output ready: a fresh skeleton (False), or an interrupted run of the same plan (`identity`, from
    `plan_identity`) to resume (True: `finished_wells` reads what it finished)."""
    identity = identity | {"format": fmt.name}  # an output of one format is never resumed as another
    meta = output.root_meta()
    state = output.classify(meta)
    if state == "foreign":
        raise StoreError(f"{output.location} exists and is not a platezarr store; it is left untouched: choose another output")
    if state != "absent" and overwrite:
        output.clear()
        state = "absent"
    if state == "complete":
        raise StoreError(f"{output.location} already holds a complete platezarr store; pass --overwrite to replace it")
    if state != "absent":
        attrs: dict[str, Any] = (meta or {}).get("attributes", {})
        stored = attrs.get(MARKER_ATTR, attrs.get(ROOT_ATTR, {})).get("plan", {})
        changed = differences(stored, identity)
        if stored.get("format", "native") != fmt.name:
            changed.append(f"format: {stored.get('format', 'native')!r} before, {fmt.name!r} now")
        if changed:
            raise StoreError(
                f"{output.location} holds a conversion of a different plan ({'; '.join(changed)}); "
                "pass --overwrite to start over, or choose another output"
            )
        if output.read_json(TEMPLATE_KEY) is not None:
            output.delete_partials()
            return True
        output.clear()
    output.delete_partials()
    fmt.create(output, plan, {"plan": identity, "started": started, "converter_version": __version__})
    output.write_json(TEMPLATE_KEY, {"plates": len(plan.plates)})
    return False
