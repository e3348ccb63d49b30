"""Real exports do not stop a run; broken CSV structure is never papered over.

- a value that does not convert: by default the row is emitted, the field null, the raw text
  in `_sdc_unparsed`, and the summary counts it per column (`on_bad_row: fail` stays strict);
- a quoted cell over the field limit, or a quote never closed: no record ever comes from
  inside the cell, the file is not marked read, the lines lost are counted and the run fails
  after reading every other file.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tap_braze_csv import streams
from tap_braze_csv.errors import BrazeCsvError

HEADER = "user_id,email,session_count,date_of_birth\n"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def small_field_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Lower the CSV field limit (16 MiB in production) so a test file can exceed it."""
    old = csv.field_size_limit()
    monkeypatch.setattr(streams, "FIELD_SIZE_LIMIT", 2000)
    try:
        yield 2000
    finally:
        csv.field_size_limit(old)


def test_unparsable_values_are_kept_raw_and_counted_by_default(
    tap_runner, export_dir: Path, caplog: pytest.LogCaptureFixture
):
    f = write(
        export_dir / "users.csv",
        HEADER
        + "u1,a@x.com,3,1980-01-31\n"
        + "u2,b@x.com,12 sessions,31/01/1980\n"  # both values unparsable
        + "u3,c@x.com,n/a,1990-05-06\n"
        + "u4,d@x.com,4,\n",
    )
    with caplog.at_level(logging.INFO):
        run = tap_runner({"paths": [str(f)]})
    assert [r["user_id"] if "user_id" in r else r["external_id"] for r in run.records] == [
        "u1",
        "u2",
        "u3",
        "u4",
    ]
    r1, r2, r3, r4 = run.records
    assert "_sdc_unparsed" not in r1
    assert r1["session_count"] == 3
    assert r2["session_count"] is None
    assert r2["date_of_birth"] is None
    assert r2["_sdc_unparsed"] == {"session_count": "12 sessions", "date_of_birth": "31/01/1980"}
    assert r3["_sdc_unparsed"] == {"session_count": "n/a"}
    assert r3["date_of_birth"] == "1990-05-06"
    assert r4["date_of_birth"] is None
    assert "_sdc_unparsed" not in r4
    assert "_sdc_unparsed" in run.schema["properties"]
    assert run.bookmark()["files"][0]["complete"] is True
    assert "2 value(s) kept unparsed (date_of_birth=1, session_count=2)" not in caplog.text
    assert "3 value(s) kept unparsed (date_of_birth=1, session_count=2)" in caplog.text
    assert f"{f}: line 3: session_count: '12 sessions' does not convert" in caplog.text


def test_unparsable_value_with_skip_drops_the_row_and_with_fail_stops(tap_runner, export_dir: Path):
    f = write(export_dir / "users.csv", HEADER + "u1,a@x.com,x,\nu2,b@x.com,2,\n")
    skipped = tap_runner({"paths": [str(f)], "on_bad_row": "skip"})
    assert [r["external_id"] for r in skipped.records] == ["u2"]
    failed = tap_runner({"paths": [str(f)], "on_bad_row": "fail"}, expect_error=True)
    assert f"{f}: line 2: column 'session_count'" in str(failed.error)
    assert failed.records == []


def _oversized_cell_file(path: Path, limit: int) -> Path:
    # The cell's text looks like CSV rows with the right field count: a parser that resumes
    # inside the cell would emit each as a phantom user.
    inner = "".join(f"p{i},phantom{i}@x.com,{i},\n" for i in range(limit // 10))
    return write(
        path,
        HEADER + "u1,a@x.com,1,\n" + "u2,b@x.com,2,\n" + f'u3,"{inner}",3,\n' + "u4,d@x.com,4,\n",
    )


@pytest.mark.parametrize("mode", ["keep", "skip"])
def test_cell_over_the_field_limit_never_yields_phantom_records(
    tap_runner, export_dir: Path, small_field_limit: int, mode: str
):
    bad = _oversized_cell_file(export_dir / "a-broken.csv", small_field_limit)
    good = write(export_dir / "b-good.csv", HEADER + "g1,g@x.com,1,\n")
    run = tap_runner({"paths": [str(export_dir / "*.csv")], "on_bad_row": mode}, expect_error=True)
    ids = [r["external_id"] for r in run.records]
    assert not any(i.startswith("p") for i in ids), "records from inside a cell"
    assert ids == ["u1", "u2", "g1"], "rows before the break and other files are read"
    message = str(run.error)
    assert f"{bad}: line 4: a quoted cell over 2000 characters" in message
    assert "line(s) lost in total" in message
    files = {f["path"]: f for f in run.bookmark()["files"]}
    assert files[str(good)]["complete"] is True
    assert files[str(bad)]["complete"] is False
    assert files[str(bad)]["broken"] == {"member": "", "line": 3}

    # The next run resumes after the last good row and stops at the break again: nothing is
    # sent twice, no phantom appears, the file is still not marked read.
    again = tap_runner(
        {"paths": [str(export_dir / "*.csv")], "on_bad_row": mode},
        state=run.states[-1],
        expect_error=True,
    )
    assert again.records == []
    assert {f["path"]: f for f in again.bookmark()["files"]}[str(bad)]["broken"]["line"] == 3


def test_quote_never_closed_counts_the_rows_it_swallowed(
    tap_runner, export_dir: Path, caplog: pytest.LogCaptureFixture
):
    rows = "".join(f"u{i},u{i}@x.com,{i},\n" for i in range(1, 6))  # lines 2-6
    swallowed = "".join(f"v{i},v{i}@x.com,{i},\n" for i in range(1000))  # lines 8-1007
    f = write(export_dir / "users.csv", HEADER + rows + 'u6,"oops,6,\n' + swallowed)
    with caplog.at_level(logging.INFO):
        run = tap_runner({"paths": [str(f)]}, expect_error=True)
    assert [r["external_id"] for r in run.records] == [f"u{i}" for i in range(1, 6)]
    message = str(run.error)
    assert f"{f}: line 7: unterminated quoted field (from line 7 to line 1007)" in message
    assert "1001 line(s) from line 7 on were not read" in message
    assert "1 file(s) with broken structure, 1001 line(s) lost" in caplog.text
    assert all(not f["complete"] for f in run.bookmark()["files"])


def test_structural_damage_with_fail_stops_at_once(
    tap_runner, export_dir: Path, small_field_limit: int
):
    _oversized_cell_file(export_dir / "a-broken.csv", small_field_limit)
    write(export_dir / "b-good.csv", HEADER + "g1,g@x.com,1,\n")
    run = tap_runner(
        {"paths": [str(export_dir / "*.csv")], "on_bad_row": "fail"}, expect_error=True
    )
    assert isinstance(run.error, BrazeCsvError)
    assert "line 4: a quoted cell over 2000 characters" in str(run.error)
    assert [r["external_id"] for r in run.records] == ["u1", "u2"]


def test_stray_quote_is_structural_not_a_skipped_row(tap_runner, export_dir: Path):
    f = write(
        export_dir / "users.csv", HEADER + "u1,a@x.com,1,\n" + 'u2,"b@x"y.com,2,\nu3,c@x.com,3,\n'
    )
    run = tap_runner({"paths": [str(f)], "on_bad_row": "skip"}, expect_error=True)
    assert [r["external_id"] for r in run.records] == ["u1"]
    assert f"{f}: line 3: malformed CSV (broken quote?)" in str(run.error)
    assert "2 line(s) from line 3 on were not read" in str(run.error)
