"""Cell typing, the CSV-injection guard and the compiled row converter."""

from __future__ import annotations

import pytest
from tap_braze_csv.columns import Column, map_header
from tap_braze_csv.convert import (
    compile_row_converter,
    find_bad_cell,
    to_boolean,
    to_date,
    to_datetime,
    to_integer,
    to_number,
    unguard,
    unguard_row,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("'-1943", "-1943"),
        ("'=SUM(A1)", "=SUM(A1)"),
        ("'+15551234567", "+15551234567"),
        ("'@handle", "@handle"),
        ("'hello", "'hello"),  # not a guarded character: kept
        ("'", "'"),
        ("O'Brien", "O'Brien"),
        ("-12", "-12"),
        ("", ""),
    ],
)
def test_unguard(raw: str, clean: str) -> None:
    assert unguard(raw) == clean


def test_unguard_row_fixes_only_guarded_cells() -> None:
    row = ["'-1", "a", "'+1555", "O'Brien", "'x", "'@h", ""]
    assert unguard_row(row) == ["-1", "a", "+1555", "O'Brien", "'x", "@h", ""]
    assert unguard_row(["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2020-10-19T10:50:41.374Z", "2020-10-19T10:50:41.374Z"),
        ("2020-10-19T10:50:41+02:00", "2020-10-19T10:50:41+02:00"),
        ("2020-10-19 10:50:41 UTC", "2020-10-19T10:50:41+00:00"),
        ("2020-10-19 10:50:41", "2020-10-19T10:50:41+00:00"),
        ("2020-10-19T10:50:41.5", "2020-10-19T10:50:41.500000+00:00"),
        ("2020-10-19", "2020-10-19T00:00:00+00:00"),
        ("1603104641", "2020-10-19T10:50:41+00:00"),
        ("1603104641000", "2020-10-19T10:50:41+00:00"),
    ],
)
def test_to_datetime(raw: str, iso: str) -> None:
    assert to_datetime(raw) == iso


@pytest.mark.parametrize("bad", ["yesterday", "2020-13-45T10:00:00Z", "10/19/2020"])
def test_to_datetime_rejects(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        to_datetime(bad)


def test_scalars() -> None:
    assert to_date("1980-01-31") == "1980-01-31"
    assert to_date("1980-01-31T00:00:00Z") == "1980-01-31"
    assert to_integer("12") == 12
    assert to_integer("12.0") == 12
    assert to_number("12.99") == 12.99
    assert to_boolean("TRUE") is True
    assert to_boolean("no") is False
    for func, bad in ((to_integer, "1.5"), (to_number, "nan"), (to_boolean, "maybe")):
        with pytest.raises(ValueError):  # noqa: PT011
            func(bad)


def test_compiled_converter_types_nulls_and_constants() -> None:
    header = [
        "Appboy ID",
        "user_id",
        "session_count",
        "in_app_purchase_total",
        "created_at",
        "date_of_birth",
        "vip",
        "Favorite Color",
    ]
    cols = map_header(header, file="f.csv", column_types={"vip": "boolean"})
    for fast in (True, False):
        convert = compile_row_converter(
            cols, {"_sdc_source_file": "f.csv", "segment_name": "S"}, fast=fast
        )
        rec = convert(["b1", "", "12", "3.50", "2020-10-19 10:50:41", "", "yes", "red"], 7)
        assert rec == {
            "braze_id": "b1",
            "external_id": None,
            "session_count": 12,
            "in_app_purchase_total": 3.5,
            "created_at": "2020-10-19T10:50:41+00:00",
            "date_of_birth": None,
            "vip": True,
            "favorite_color": "red",
            "_sdc_source_file": "f.csv",
            "segment_name": "S",
            "_sdc_source_lineno": 7,
        }


def test_fast_converter_falls_back_and_bad_cell_is_named() -> None:
    cols = [Column(0, "user_id", "external_id", "string"), Column(1, "n", "n", "integer")]
    fast = compile_row_converter(cols, {}, fast=True)
    tolerant = compile_row_converter(cols, {})
    with pytest.raises(ValueError):  # noqa: PT011
        fast(["a", "3.0"], 2)
    assert tolerant(["a", "3.0"], 2)["n"] == 3
    found = find_bad_cell(cols, ["a", "three"])
    assert found is not None
    assert found[0].name == "n"
    assert found[1] == "three"
