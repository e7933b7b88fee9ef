"""Metadata tables: typed columns, and bad rows named with their file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.errors import MetadataError
from converters.metadata import read_metadata
from converters.schema import load_schema
from converters.wells import normalize_well, well_order

HEADER = "site_id,well_id,cell_type,dataset,experiment,plate,well,site,well_type,sirna,sirna_id\n"
ROW = "HUVEC-01_1_B02_1,HUVEC-01_1_B02,HUVEC,train,HUVEC-01,1,B02,1,negative_control,EMPTY,1138\n"


def table(tmp_path: Path, text: str, name: str = "metadata.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_types_follow_the_schema(tmp_path: Path) -> None:
    meta = read_metadata(table(tmp_path, HEADER + ROW + ROW.replace("_1,", "_2,").replace(",1,neg", ",2,neg")), load_schema("rxrx1"))
    t = meta.table
    assert t["plate"].dtype == np.int64 and t["site"].dtype == np.int64 and t["sirna_id"].dtype == np.int64
    assert t["site"].tolist() == [1, 2]


def test_bad_value_names_file_line_and_column(tmp_path: Path) -> None:
    bad = ROW.replace(",1,B02,", ",one,B02,")
    with pytest.raises(MetadataError, match=r"metadata.csv:3: column 'plate' must be an integer, found 'one'"):
        read_metadata(table(tmp_path, HEADER + ROW.replace(",1,B02,1", ",2,B02,1") + bad), load_schema("rxrx1"))


def test_missing_key_column(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="missing required column.*well"):
        read_metadata(table(tmp_path, "experiment,plate,site\nHUVEC-01,1,1\n"), load_schema("rxrx1"))


def test_blank_key_and_duplicate_site(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match=r"metadata.csv:2: key column 'well' is blank"):
        read_metadata(table(tmp_path, HEADER + ROW.replace(",B02,1,", ",,1,")), load_schema("rxrx1"))
    with pytest.raises(MetadataError, match=r"metadata.csv:2 and .*metadata.csv:3: duplicate site_id"):
        read_metadata(table(tmp_path, HEADER + ROW + ROW), load_schema("rxrx1"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "metadata.csv"
    path.write_bytes(HEADER.encode() + ROW.replace("EMPTY", "EMPT\xff").encode("latin-1"))
    with pytest.raises(MetadataError, match="not UTF-8"):
        read_metadata(path, load_schema("rxrx1"))


def test_a_folder_without_competition_tables(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="competition tables"):
        read_metadata(tmp_path, load_schema("rxrx1"))


def test_wells_are_ordered_as_on_the_plate() -> None:
    assert well_order(["C02", "B10", "B02", "AA01", "Z24", "B02"]) == ["B02", "B10", "C02", "Z24", "AA01"]
    assert normalize_well("d7") == "D07"
    with pytest.raises(ValueError):
        normalize_well("7D")


SECOND = ROW.replace("_1,", "_2,").replace(",1,neg", ",2,neg")  # site 2 of the same well


@pytest.mark.parametrize(("value", "blank", "limits"), [
    ("12345678901234567890", False, "from -9223372036854775808 to 9223372036854775807"),
    ("-9223372036854775809", False, "from -9223372036854775808 to 9223372036854775807"),
    ("1e19", False, "from -9223372036854775808 to 9223372036854775807"),
    ("1e999999999", False, "from -9223372036854775808 to 9223372036854775807"),
    ("9007199254740993", True, "from -9007199254740992 to 9007199254740992"),  # with a blank the column is float64
])
def test_integers_the_column_cannot_hold_are_refused(tmp_path: Path, value: str, blank: bool, limits: str) -> None:
    rows = ROW.replace(",1138\n", f",{value}\n") + (SECOND.replace(",1138\n", ",\n") if blank else SECOND)
    with pytest.raises(MetadataError, match=rf"metadata.csv:2: column 'sirna_id' must be an integer {limits}"):
        read_metadata(table(tmp_path, HEADER + rows), load_schema("rxrx1"))


def test_integers_are_kept_exactly(tmp_path: Path) -> None:
    """int64's extremes and whole numbers in float notation are exact; a column the schema does not type, of
    integers too long for int64, stays text."""
    header = HEADER.replace("\n", ",barcode\n")
    rows = ROW.replace(",1138\n", ",9223372036854775807,12345678901234567890\n")
    rows += SECOND.replace(",1138\n", ",-9.223372036854775808e18,7\n")
    t = read_metadata(table(tmp_path, header + rows), load_schema("rxrx1")).table
    assert t["sirna_id"].dtype == np.int64 and t["sirna_id"].tolist() == [2**63 - 1, -(2**63)]
    assert t["barcode"].tolist() == ["12345678901234567890", "7"]
