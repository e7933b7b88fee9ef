"""Match many file names against a schema's pattern at once, with Python's `re` deciding every answer.

RxRx1's 753,060 names take about 1 s with RE2 (pyarrow's `extract_regex`, in C++) against 5 s one
`re.match` at a time. RE2 is used only for patterns built from parts on which it agrees with Python on
ASCII text (literals, `.`, sets of characters, ranges and `\\d`, repeats, groups, `^`, `$`), only on
ASCII names without a newline (where Python's Unicode `\\d` and its `$` before a final newline differ),
and only where it finds a match: every other name is matched with `re`, so each answer is Python's.
"""

from __future__ import annotations

import re
import re._constants as sre  # no public parser of patterns
import re._parser
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PLAIN = {sre.LITERAL, sre.NOT_LITERAL, sre.ANY}
_SET_ITEMS = {sre.LITERAL, sre.RANGE, sre.NEGATE}
_ANCHORS = {sre.AT_BEGINNING, sre.AT_END}


def match_names(names: pa.ChunkedArray,
                pattern: re.Pattern[str]) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, list[str]]]]:
    """The positions of the names that `pattern.match` matches, in order, and each named group's values there as
    codes (int32; -1 where the group took no part) into its distinct values, numbered as first met (a dataset has
    many files but few experiments, wells or channels). Matched a chunk of names at a time, so that no column of
    every name's groups is made in passing."""
    groups = list(pattern.groupindex)
    re2 = _re2_agrees(pattern)
    # filled in place a chunk at a time (no second copy to join them); the part past the matches is never written
    kept = np.empty(len(names), dtype=np.int64)
    codes = {g: np.empty(len(names), dtype=np.int32) for g in groups}
    seen: dict[str, dict[str, int]] = {g: {} for g in groups}
    start = matched = 0
    for chunk in names.chunks:
        found = _re2_matches(chunk, pattern) if re2 else None
        re2 = found is not None
        chunk_kept, columns = _match_chunk(chunk, pattern, groups, found)
        end = matched + len(chunk_kept)
        kept[matched:end] = chunk_kept + start
        for g in groups:
            codes[g][matched:end] = _codes(columns[g], seen[g])
        start, matched = start + len(chunk), end
    return kept[:matched], {g: (codes[g][:matched], list(seen[g])) for g in groups}


def _codes(column: pa.DictionaryArray, seen: dict[str, int]) -> np.ndarray:
    """A dictionary-encoded column as codes into `seen` (values numbered as first met, added to as they are), -1
    for nulls."""
    lookup = [seen.setdefault(value, len(seen)) for value in column.dictionary.to_pylist()]
    return np.array([*lookup, -1], dtype=np.int32)[pc.fill_null(column.indices, -1).to_numpy()]


def _match_chunk(chunk: pa.Array, pattern: re.Pattern[str], groups: list[str],
                 found: tuple[np.ndarray, pa.StructArray] | None) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """The matches in one chunk of names: RE2's (`found`), and Python's for every name RE2 did not match."""
    matched, struct = found if found is not None else (np.zeros(len(chunk), dtype=bool), None)
    fast = np.flatnonzero(matched)
    slow, slow_values = _python_matches(chunk, np.flatnonzero(~matched), pattern, groups)
    kept = np.concatenate([fast, slow])
    order = pa.array(np.argsort(kept, kind="stable")) if len(slow) and len(fast) else None
    columns = {}
    for g, values in zip(groups, slow_values):
        column = pc.struct_field(struct, g).filter(pa.array(matched)) if struct is not None else pa.array([], chunk.type)
        if len(slow):
            column = pa.concat_arrays([column, pa.array(values, chunk.type)])
        columns[g] = (column.take(order) if order is not None else column).dictionary_encode()
    return np.sort(kept), columns


def _re2_matches(names: pa.Array, pattern: re.Pattern[str]) -> tuple[np.ndarray, pa.StructArray] | None:
    """Which names RE2 matches (ASCII names without a newline only) and their groups, or None if RE2 cannot
    take the pattern."""
    try:
        struct = pc.extract_regex(names, f"^(?:{pattern.pattern})")
    except pa.ArrowInvalid:
        return None
    matched = struct.is_valid().to_numpy(zero_copy_only=False)
    if len(names):
        plain = pc.and_(pc.string_is_ascii(names), pc.invert(pc.match_substring(names, "\n")))
        matched &= plain.to_numpy(zero_copy_only=False)
    return matched, struct


def _python_matches(names: pa.Array, rows: np.ndarray, pattern: re.Pattern[str],
                    groups: list[str]) -> tuple[np.ndarray, list[list[str | None]]]:
    """`re.match` of the names at `rows`: the rows it matched and each named group's values there."""
    kept: list[int] = []
    values: list[tuple[str | None, ...]] = []
    for row, name in zip(rows.tolist(), names.take(pa.array(rows, pa.int64())).to_pylist()):
        m = pattern.match(name)
        if m is not None:
            kept.append(row)
            values.append(tuple(m.group(g) for g in groups))
    columns = [list(column) for column in zip(*values)] if values else [[] for _ in groups]
    return np.array(kept, dtype=np.int64), columns


def _re2_agrees(pattern: re.Pattern[str]) -> bool:
    """Whether RE2 matches ASCII text exactly as Python does: no flags, no construct either reads otherwise (classes
    such as `\\w` or `\\b`, lookarounds, backreferences), and every capturing group taken exactly once."""
    if pattern.flags & ~re.UNICODE:
        return False
    try:
        parsed = re._parser.parse(pattern.pattern)
    except re.error:
        return False
    return _agrees(list(parsed), optional=False)


def _agrees(items: list[tuple[Any, Any]], optional: bool) -> bool:
    for op, arg in items:
        if op in _PLAIN:
            continue
        if op is sre.IN:
            if not all(kind in _SET_ITEMS or (kind is sre.CATEGORY and value is sre.CATEGORY_DIGIT)
                       for kind, value in arg):
                return False
        elif op is sre.AT:
            if arg not in _ANCHORS:
                return False
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = arg
            if not _agrees(list(sub), optional or low == 0 or high != 1):
                return False
        elif op is sre.SUBPATTERN:
            group, add_flags, del_flags, sub = arg
            if add_flags or del_flags or (group is not None and optional) or not _agrees(list(sub), optional):
                return False
        elif op is sre.BRANCH:
            if not all(_agrees(list(branch), True) for branch in arg[1]):
                return False
        else:
            return False
    return True
