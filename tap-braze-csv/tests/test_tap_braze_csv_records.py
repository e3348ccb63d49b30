"""Records and schema from local exports: CSV quirks, generated exports, both writers, stream maps,
`column_types`, gzip and zip, ACTIVATE_VERSION."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import jsonschema
import pytest
from braze_csv_testkit import HAND_MADE, write
from tap_braze_csv.sample import generate_export


def test_records_bom_crlf_quotes_newlines_guard_and_metadata(tap_runner, export_dir: Path) -> None:
    f = write(export_dir / "VIP Users-2024-05-01.csv", HAND_MADE)
    run = tap_runner({"paths": [str(export_dir / "*.csv")]})
    assert run.records == [
        {
            "braze_id": "b1",
            "external_id": "u1",
            "email": "a@x.com",
            "first_name": "Smith, Jr",
            "phone_number": "+15551234567",
            "time_zone": "Europe/Paris",
            "favorite_color": "=SUM(A1)",
            "notes": "multi\r\nline",
            "session_count": 5,
            "created_at": "2020-10-19T10:50:41+00:00",
            "segment_name": "VIP Users",
            "_braze_segment_id": None,
            "_sdc_source_file": str(f),
            "_sdc_source_lineno": 2,
        },
        {
            "braze_id": "b2",
            "external_id": "u2",
            "email": None,
            "first_name": "O'Brien",
            "phone_number": None,
            "time_zone": None,
            "favorite_color": "-10",
            "notes": 'say "hi"',
            "session_count": None,
            "created_at": None,
            "segment_name": "VIP Users",
            "_braze_segment_id": None,
            "_sdc_source_file": str(f),
            "_sdc_source_lineno": 4,
        },
        {
            "braze_id": "-b3",
            "external_id": "u3",
            "email": "c@x.com",
            "first_name": "Zoë",
            "phone_number": "@home",
            "time_zone": None,
            "favorite_color": None,
            "notes": None,
            "session_count": 0,
            "created_at": "2021-01-02T03:04:05.678Z",
            "segment_name": "VIP Users",
            "_braze_segment_id": None,
            "_sdc_source_file": str(f),
            "_sdc_source_lineno": 6,
        },
    ]
    assert list(run.records[0])[:6] == [
        "braze_id",
        "external_id",
        "email",
        "first_name",
        "phone_number",
        "time_zone",
    ]
    # schema: custom columns from the first file were discovered, metadata typed
    props = run.schema["properties"]
    assert props["favorite_color"] == {"type": ["string", "null"]}
    assert props["_sdc_source_lineno"] == {"type": "integer"}
    assert run.schema["additionalProperties"] is False


def _check_formats(record: dict, schema: dict) -> None:
    for key, value in record.items():
        fmt = schema["properties"][key].get("format")
        if value is None or fmt is None:
            continue
        if fmt == "date":
            dt.date.fromisoformat(value)
        else:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            assert parsed.tzinfo is not None


@pytest.mark.parametrize("fast_writer", [True, False])
def test_generated_export_is_schema_valid(tap_runner, export_dir: Path, fast_writer: bool) -> None:
    generate_export(export_dir / "All Users-2024-05-01.csv", 600)
    run = tap_runner({"paths": [str(export_dir / "*.csv")], "fast_writer": fast_writer})
    assert len(run.records) == 600
    validator = jsonschema.Draft202012Validator(run.schema)
    for record in run.records[::7]:
        validator.validate(record)
        _check_formats(record, run.schema)
    sample = run.records[1]
    assert isinstance(sample["session_count"], int)
    assert isinstance(sample["in_app_purchase_total"], float)
    assert sample["phone_number"].startswith("+1555")
    assert all(r["segment_name"] == "All Users" for r in run.records)
    # the fast path writes exactly the SDK's RECORD envelope
    rec_msgs = [m for m in run.messages if m["type"] == "RECORD"]
    assert set(rec_msgs[0]) == {"type", "stream", "record", "time_extracted"}


def test_fast_writer_and_sdk_writer_give_identical_records(tap_runner, export_dir: Path) -> None:
    generate_export(export_dir / "seg-2024-05-01.csv", 300)
    cfg = {"paths": [str(export_dir / "*.csv")]}
    fast = tap_runner(cfg)
    slow = tap_runner({**cfg, "fast_writer": False})
    assert fast.records == slow.records
    assert fast.schema == slow.schema
    assert fast.bookmark() == slow.bookmark()


def test_stream_maps_go_through_the_sdk_path(tap_runner, export_dir: Path) -> None:
    write(export_dir / "s.csv", HAND_MADE)
    run = tap_runner(
        {
            "paths": [str(export_dir / "s.csv")],
            "stream_maps": {"braze_users": {"email": None, "__filter__": "session_count != None"}},
        }
    )
    assert [r["braze_id"] for r in run.records] == ["b1", "-b3"]
    assert all("email" not in r for r in run.records)


def test_column_types_setting_types_custom_columns(tap_runner, export_dir: Path) -> None:
    write(
        export_dir / "c.csv",
        "user_id,Lifetime Value,vip,signup_day,last_purchase_at\n"
        "u1,12.5,yes,2024-01-02,2024-01-02 03:04:05\nu2,,0,,\n",
    )
    cfg = {
        "paths": [str(export_dir / "c.csv")],
        "column_types": {"Lifetime Value": "number", "vip": "boolean", "signup_day": "date"},
    }
    run = tap_runner(cfg)
    assert run.records[0]["lifetime_value"] == 12.5
    assert run.records[0]["vip"] is True
    assert run.records[0]["signup_day"] == "2024-01-02"
    assert run.records[0]["last_purchase_at"] == "2024-01-02T03:04:05+00:00"
    assert run.records[1]["vip"] is False
    assert run.records[1]["lifetime_value"] is None
    assert run.schema["properties"]["vip"] == {"type": ["boolean", "null"]}


def test_gzip_and_zip_exports(tap_runner, export_dir: Path) -> None:
    generate_export(export_dir / "Gz Seg-2024-05-01.csv.gz", 10)
    z = generate_export(export_dir / "users-abc123.zip", 8, segment="Zipped Seg-2024-05-03")
    run = tap_runner({"paths": [str(export_dir / "*.gz"), str(export_dir / "*.zip")]})
    segs = [r["segment_name"] for r in run.records]
    assert segs.count("Gz Seg") == 10
    assert segs.count("Zipped Seg") == 8
    zipped = [r for r in run.records if r["segment_name"] == "Zipped Seg"]
    assert zipped[0]["_sdc_source_file"] == f"{z}!Zipped Seg-2024-05-03.csv"
    entry = next(f for f in run.bookmark()["files"] if f["path"] == str(z))
    assert entry["members"] == ["Zipped Seg-2024-05-03.csv"]
    with gzip.open(export_dir / "Gz Seg-2024-05-01.csv.gz") as gz:
        assert gz.read(3) == b"\xef\xbb\xbf"


@pytest.mark.parametrize("fast_writer", [True, False])
def test_activate_version_messages(tap_runner, export_dir: Path, fast_writer: bool) -> None:
    write(export_dir / "a.csv", HAND_MADE)
    run = tap_runner(
        {
            "paths": [str(export_dir / "a.csv")],
            "emit_activate_version_messages": True,
            "fast_writer": fast_writer,
        }
    )
    activate = [m for m in run.messages if m["type"] == "ACTIVATE_VERSION"]
    assert len(activate) == 1
    recs = [m for m in run.messages if m["type"] == "RECORD"]
    assert {m["version"] for m in recs} == {activate[0]["version"]}


def test_records_without_writing_messages(
    export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    write(export_dir / "a.csv", HAND_MADE)
    tap = TapBrazeCsv(config={"paths": [str(export_dir / "a.csv")]})
    stream = tap.streams["braze_users"]
    records = list(stream._sync_records(write_messages=False))
    assert [r["braze_id"] for r in records] == ["b1", "b2", "-b3"]
    assert capsys.readouterr().out == ""
