"""Resume: a fingerprint of the plan, and completion records of finished wells.

A well's record is written only after its shard, so on a re-run every recorded well is kept and
every other one is written again; an interrupted write leaves no record.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from converters.output import RECORDS, Output
from converters.plan import Plan
from converters.write import WellResult

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


def finished_wells(output: Output) -> dict[tuple[str, int], WellResult]:
    """Every well with a completion record, keyed by (plate group, well index)."""
    prefix = f"{RECORDS}/wells/"
    finished = {}
    for key in output.keys(prefix):
        group, _, name = key.removeprefix(prefix).rpartition("/")
        record = output.read_json(key)
        if record is not None and name.endswith(".json"):
            index = int(name.removesuffix(".json"))
            finished[(group, index)] = WellResult.from_record(group, index, record)
    return finished
