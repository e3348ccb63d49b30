"""Errors name the file and line: `on_bad_row` fail and skip, each kind of bad row, a file that
is not a Braze export, a missing path, undecodable bytes mid-file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from braze_csv_testkit import BAD, write
from tap_braze_csv.errors import BrazeCsvError


def test_bad_row_fails_with_file_and_line_after_good_rows(tap_runner, export_dir: Path) -> None:
    f = write(export_dir / "bad.csv", BAD)
    run = tap_runner({"paths": [str(f)], "on_bad_row": "fail"}, expect_error=True)
    assert isinstance(run.error, BrazeCsvError)
    assert f"{f}: line 3: 2 fields, the header has 3" in str(run.error)
    assert "on_bad_row: fail" in str(run.error)
    assert [r["external_id"] for r in run.records] == ["u1"]
    # the resume point is the last good row: a fixed file is re-read, an unchanged one resumes
    assert run.state["bookmarks"]["braze_users"]["current"]["line"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('user_id,email\nu1,"c@x"y.com\n', "line 2: malformed CSV"),
        ('user_id,n\nu1,"open\nu2,2\n', "line 2: unterminated quoted field"),
        ("user_id,session_count\nu1,four\n", "line 2: column 'session_count'"),
    ],
)
def test_each_kind_of_bad_row_is_named(
    tap_runner, export_dir: Path, text: str, expected: str
) -> None:
    f = write(export_dir / "bad.csv", text)
    run = tap_runner({"paths": [str(f)], "on_bad_row": "fail"}, expect_error=True)
    assert expected in str(run.error)
    assert str(f) in str(run.error)


def test_bad_rows_skipped_with_warning_and_count(
    tap_runner, export_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = write(export_dir / "bad.csv", BAD)
    with caplog.at_level(logging.WARNING):
        run = tap_runner({"paths": [str(f)], "on_bad_row": "skip"})
    assert [r["external_id"] for r in run.records] == ["u1", "u5"]
    assert [r["_sdc_source_lineno"] for r in run.records] == [2, 6]
    text = caplog.text
    assert f"{f}: line 3: 2 fields" in text
    assert f"{f}: line 4: 4 fields" in text
    assert f"{f}: line 5: column 'session_count'" in text
    assert "skipped 3 bad row(s)" in text
    assert run.bookmark()["files"][0]["complete"] is True


def test_not_a_braze_export(tap_runner, export_dir: Path) -> None:
    f = write(export_dir / "report.csv", "name,score\nann,3\n")
    run = tap_runner({"paths": [str(f)]}, expect_error=True)
    assert isinstance(run.error, BrazeCsvError)
    assert f"{f}: not a Braze user export" in str(run.error)


def test_missing_path_is_an_error_naming_it(tap_runner, export_dir: Path) -> None:
    missing = export_dir / "nope-*.csv"
    run = tap_runner({"paths": [str(missing)]}, expect_error=True)
    assert isinstance(run.error, BrazeCsvError)
    assert "nope-*.csv" in str(run.error)


def test_undecodable_bytes_mid_file_name_file_and_line(tap_runner, export_dir: Path) -> None:
    f = export_dir / "mixed.csv"
    good = "".join(f"u{i},Ann\r\n" for i in range(2, 50_000))
    f.write_bytes(b"user_id,first_name\r\n" + good.encode() + "u0,Zoé\r\n".encode("latin-1"))
    run = tap_runner({"paths": [str(f)]}, expect_error=True)
    message = str(run.error)
    assert message.startswith(f"{f}: at or after line ")
    line = int(message.split("at or after line ")[1].split(":")[0])
    # text is decoded ahead of the parser, so the line is a lower bound near the bad one
    assert 49_000 < line <= 50_000
    # rows before the bad block were sent, and the state says where to resume
    assert len(run.records) == line - 2
    assert run.states[-1]["bookmarks"]["braze_users"]["current"]["line"] == line - 1
    assert "0xe9" in message
