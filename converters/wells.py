"""Well names: `B02` ↔ row `B`, column 2, ordered row by row as on the plate."""

from __future__ import annotations

import re

_WELL = re.compile(r"^([A-Z]{1,2})(\d{1,2})$")


def split_well(well: str) -> tuple[str, int]:
    """`B02` → (`B`, 2); `AF48` → (`AF`, 48). Raises ValueError for anything else."""
    match = _WELL.match(well)
    if not match:
        raise ValueError(f"{well!r} is not a well name like 'B02' or 'AF48'")
    return match.group(1), int(match.group(2))


def row_index(row: str) -> int:
    """0-based plate row: A=0 … Z=25, AA=26 … AF=31 (1536-well plates)."""
    if len(row) == 1:
        return ord(row) - ord("A")
    return 26 * (ord(row[0]) - ord("A") + 1) + ord(row[1]) - ord("A")


def well_name(row: int, column: int) -> str:
    """1-based row and column numbers (as microscopes write them) → `D14`; rows past Z are `AA`..`AF`."""
    if not 1 <= row <= 32 or not 1 <= column <= 99:
        raise ValueError(f"row {row}, column {column} is not a position on a plate of up to 32 rows")
    letters = chr(ord("A") + row - 1) if row <= 26 else "A" + chr(ord("A") + row - 27)
    return f"{letters}{column:02d}"


def normalize_well(well: str) -> str:
    """Canonical form with a two-digit column: `B2` → `B02`."""
    row, column = split_well(well.strip().upper())
    return f"{row}{column:02d}"


def well_order(wells: list[str]) -> list[str]:
    """Wells sorted row by row, then by column, as they sit on the plate."""
    def key(well: str) -> tuple[int, int]:
        row, column = split_well(well)
        return row_index(row), column

    return sorted(set(wells), key=key)
