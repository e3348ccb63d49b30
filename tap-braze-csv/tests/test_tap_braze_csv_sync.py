"""End-to-end tap runs on local files: records, schema, state, resume, bad rows, secrets."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import logging
import os
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import tap_braze_csv.streams as streams_mod
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sample import generate_export

HAND_MADE = (
    "\ufeffAppboy ID,user_id,email,first_name,phone_number,Favorite Color,notes,session_count,"
    "created_at,timezone\r\n"
    'b1,u1,a@x.com,"Smith, Jr",\'+15551234567,\'=SUM(A1),"multi\r\nline",5,'
    "2020-10-19 10:50:41 UTC,Europe/Paris\r\n"
    'b2,u2,,"O\'Brien",,\'-10,"say ""hi""",,,\r\n'
    "\r\n"
    "'-b3,u3,c@x.com,Zoë,'@home,,,0,2021-01-02T03:04:05.678Z,\r\n"
)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


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


def test_incremental_skip_changed_and_new_files(tap_runner, export_dir: Path) -> None:
    a = generate_export(export_dir / "A-2024-05-01.csv", 30, seed=1)
    cfg = {"paths": [str(export_dir / "*.csv")]}
    first = tap_runner(cfg)
    assert len(first.records) == 30
    state = first.states[-1]
    entry = state["bookmarks"]["braze_users"]["files"][0]
    assert entry["path"] == str(a)
    assert entry["size"] == a.stat().st_size
    assert entry["complete"] is True
    assert entry["rows"] == 30
    assert "current" not in state["bookmarks"]["braze_users"]

    again = tap_runner(cfg, state=state)
    assert again.records == []

    # a new file is read, the old one still skipped
    generate_export(export_dir / "B-2024-05-02.csv", 5, seed=2)
    third = tap_runner(cfg, state=again.states[-1])
    assert {r["segment_name"] for r in third.records} == {"B"}
    assert len(third.records) == 5

    # the same path with new content (other size and mtime) is a new file: read from its start
    generate_export(a, 12, seed=3)
    os.utime(a, (1_700_000_000, 1_700_000_000))
    fourth = tap_runner(cfg, state=third.states[-1])
    assert len(fourth.records) == 12
    assert fourth.records[0]["_sdc_source_lineno"] == 2
    files = fourth.bookmark()["files"]
    assert sorted(f["path"] for f in files) == sorted(
        [str(a), str(export_dir / "B-2024-05-02.csv")]
    )


def _floats(value: object) -> list[object]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def test_state_has_no_float_a_stock_sdk_target_could_not_write_back(
    tap_runner, export_dir: Path
) -> None:
    from singer_sdk.singerlib.json import deserialize_json

    a = generate_export(export_dir / "A-2024-05-01.csv", 3, seed=1)
    os.utime(a, (1_714_560_000.123456, 1_714_560_000.123456))  # a sub-second mtime
    first = tap_runner({"paths": [str(export_dir / "*.csv")]})
    assert first.states
    for state in first.states:
        assert _floats(state) == []
        # what singer-sdk 0.54.9 targets do with a STATE line: parse floats as Decimal, then
        # write the state back with plain json.dumps (raised TypeError on the float mtime)
        line = json.dumps({"type": "STATE", "value": state})
        assert json.loads(json.dumps(deserialize_json(line)["value"])) == state
    entry = first.bookmark()["files"][0]
    assert entry["mtime_ns"] == round(a.stat().st_mtime * 1e9)
    assert "mtime" not in entry


@pytest.mark.parametrize("parse_float", [float, Decimal], ids=["float", "decimal"])
def test_old_state_with_float_mtime_is_still_honoured(
    tap_runner, export_dir: Path, parse_float: type
) -> None:
    """A state written before mtime_ns (float seconds) still skips its files and resumes."""
    a = generate_export(export_dir / "A-2024-05-01.csv", 3, seed=1)
    b = write(export_dir / "B-2024-05-02.csv", "user_id\nu1\nu2\nu3\n")
    os.utime(a, (1_714_560_000.123456, 1_714_560_000.123456))
    old = {
        "bookmarks": {
            "braze_users": {
                "files": [
                    {
                        "path": str(a),
                        "size": a.stat().st_size,
                        "mtime": a.stat().st_mtime,
                        "members": [""],
                        "complete": True,
                        "rows": 3,
                    }
                ],
                "current": {
                    "path": str(b),
                    "size": b.stat().st_size,
                    "mtime": b.stat().st_mtime,
                    "member": "",
                    "line": 3,
                },
            }
        }
    }
    # as the SDK reads a --state file: floats become Decimal (or stay float from other readers)
    state = json.loads(json.dumps(old), parse_float=parse_float)
    run = tap_runner({"paths": [str(export_dir / "*.csv")]}, state=state)
    assert [r["external_id"] for r in run.records] == ["u3"]  # a skipped, b resumed after line 3
    for st in run.states:
        assert _floats(st) == []
        assert "Decimal" not in repr(st)
    files = {f["path"]: f for f in run.bookmark()["files"]}
    assert files[str(a)]["mtime_ns"] == round(a.stat().st_mtime * 1e9)
    assert files[str(b)]["complete"] is True
    assert "mtime" not in files[str(a)]


def test_state_forgets_files_that_no_longer_match(tap_runner, export_dir: Path) -> None:
    a = write(export_dir / "A-2024-05-01.csv", HAND_MADE)
    b = write(export_dir / "B-2024-05-02.csv", HAND_MADE)
    cfg = {"paths": [str(export_dir / "*.csv")]}
    first = tap_runner(cfg)
    assert sorted(f["path"] for f in first.bookmark()["files"]) == [str(a), str(b)]
    # a stale `current` for a file that is gone is dropped too
    state = first.states[-1]
    gone_cur = {"path": str(a), "size": a.stat().st_size, "mtime": a.stat().st_mtime}
    state["bookmarks"]["braze_users"]["current"] = {**gone_cur, "member": "", "line": 2}
    a.unlink()
    second = tap_runner(cfg, state=state)
    assert second.records == []
    bookmark = second.bookmark()
    assert [f["path"] for f in bookmark["files"]] == [str(b)]
    assert "current" not in bookmark

    # a failed listing (a path matching nothing) forgets nothing
    missing = {"paths": [str(export_dir / "*.csv"), str(export_dir / "nope-*.zip")]}
    failed = tap_runner(missing, state=second.states[-1], expect_error=True)
    assert "nope-*.zip" in str(failed.error)
    for st in failed.states:
        assert [f["path"] for f in st["bookmarks"]["braze_users"]["files"]] == [str(b)]
    assert failed.state["bookmarks"]["braze_users"]["files"][0]["path"] == str(b)

    # the file coming back is read again (the documented cost of forgetting)
    write(a, HAND_MADE)
    third = tap_runner(cfg, state=second.states[-1])
    assert {r["_sdc_source_file"] for r in third.records} == {str(a)}


class _Interrupted(OSError):
    pass


class _Cut(io.TextIOBase):
    """A text stream that fails like a dropped connection after `lines` lines."""

    def __init__(self, inner, lines: int) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.left = lines

    def __iter__(self):  # type: ignore[no-untyped-def]
        return self

    def __next__(self) -> str:
        self.left -= 1
        if self.left < 0:
            raise _Interrupted("connection reset")
        return next(self.inner)


def _cut_after(lines: int):
    """Wrap iter_csv_members so the text stream fails after `lines` physical lines."""
    real = streams_mod.iter_csv_members

    def fake(ref, raw, config):  # type: ignore[no-untyped-def]
        for member, text in real(ref, raw, config):
            yield member, _Cut(text, lines)

    return fake


def test_resume_after_interruption_never_half_skips(
    tap_runner, export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # single-line rows so physical lines == rows
    body = "user_id,email\r\n" + "".join(f"u{i},u{i}@x.com\r\n" for i in range(1, 101))
    write(export_dir / "r.csv", body)
    cfg = {"paths": [str(export_dir / "r.csv")]}
    monkeypatch.setattr(streams_mod, "FLUSH_ROWS", 7)
    monkeypatch.setattr(streams_mod.BrazeUsersStream, "STATE_MSG_FREQUENCY", 20)
    monkeypatch.setattr(streams_mod, "iter_csv_members", _cut_after(64))
    first = tap_runner(cfg, expect_error=True)
    assert isinstance(first.error, _Interrupted)
    got = [r["external_id"] for r in first.records]
    assert got == [f"u{i}" for i in range(1, len(got) + 1)]
    cur = first.states[-1]["bookmarks"]["braze_users"]["current"]
    # a STATE never claims more than the records written before it
    assert 2 <= cur["line"] <= len(got) + 1
    # the in-memory state (what the SDK writes on SIGTERM) only holds flushed rows
    mem = first.state["bookmarks"]["braze_users"]["current"]["line"]
    assert mem == first.records[-1]["_sdc_source_lineno"]
    assert not first.state["bookmarks"]["braze_users"]["files"]

    monkeypatch.setattr(
        streams_mod,
        "iter_csv_members",
        streams_mod.iter_csv_members.__wrapped__
        if hasattr(streams_mod.iter_csv_members, "__wrapped__")
        else _real_iter(),
    )
    second = tap_runner(cfg, state=first.states[-1])
    rest = [r["external_id"] for r in second.records]
    assert second.records[0]["_sdc_source_lineno"] == cur["line"] + 1
    assert rest[-1] == "u100"
    combined = got[: cur["line"] - 1] + rest
    assert combined == [f"u{i}" for i in range(1, 101)]
    assert second.bookmark()["files"][0]["complete"] is True
    assert "current" not in second.bookmark()


def _real_iter():  # type: ignore[no-untyped-def]
    from tap_braze_csv import openers

    return openers.iter_csv_members


def test_resume_is_ignored_when_the_file_changed(tap_runner, export_dir: Path) -> None:
    f = write(export_dir / "r.csv", "user_id\nu1\nu2\nu3\n")
    st = f.stat()
    state = {
        "bookmarks": {
            "braze_users": {
                "files": [],
                "current": {
                    "path": str(f),
                    "size": st.st_size + 1,
                    "mtime": st.st_mtime,
                    "member": "",
                    "line": 3,
                },
            }
        }
    }
    run = tap_runner({"paths": [str(f)]}, state=state)
    assert [r["external_id"] for r in run.records] == ["u1", "u2", "u3"]


BAD = (
    "user_id,email,session_count\n"
    "u1,a@x.com,1\n"
    "u2,b@x.com\n"  # line 3: wrong field count
    "u3,c@x.com,3,extra\n"  # line 4: wrong field count
    "u4,d@x.com,four\n"  # line 5: not an integer
    "u5,e@x.com,5\n"
)


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


def test_no_file_at_discovery_allows_extra_columns(tap_runner, export_dir: Path) -> None:
    cfg = {"paths": [str(export_dir / "later-*.csv")]}
    from tap_braze_csv.tap import TapBrazeCsv

    catalog = TapBrazeCsv(config=cfg).catalog_dict
    schema = catalog["streams"][0]["schema"]
    assert schema["additionalProperties"] is True
    write(export_dir / "later-1.csv", "user_id,Shoe Size\nu1,42\n")
    run = tap_runner(cfg, catalog=catalog)
    assert run.records[0]["shoe_size"] == "42"


def test_catalog_without_a_column_drops_it_with_warning(
    tap_runner, export_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    write(export_dir / "a.csv", "user_id,color\nu1,red\n")
    cfg = {"paths": [str(export_dir / "*.csv")]}
    catalog = TapBrazeCsv(config=cfg).catalog_dict
    write(export_dir / "b.csv", "user_id,color,size\nu2,blue,XL\n")
    with caplog.at_level(logging.WARNING):
        run = tap_runner(cfg, catalog=catalog)
    assert run.records[1] == {
        "external_id": "u2",
        "color": "blue",
        "segment_name": "b",
        "_braze_segment_id": None,
        "_sdc_source_file": str(export_dir / "b.csv"),
        "_sdc_source_lineno": 2,
    }
    assert "not in the catalog schema are not emitted: size" in caplog.text


def test_deselected_columns_are_not_emitted(tap_runner, export_dir: Path) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    write(export_dir / "a.csv", "user_id,email,color\nu1,a@x.com,red\n")
    cfg = {"paths": [str(export_dir / "*.csv")]}
    catalog = TapBrazeCsv(config=cfg).catalog_dict
    for md in catalog["streams"][0]["metadata"]:
        if md["breadcrumb"] == ["properties", "email"]:
            md["metadata"]["selected"] = False
    run = tap_runner(cfg, catalog=catalog)
    assert "email" not in run.records[0]
    assert run.records[0]["color"] == "red"


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


def test_secrets_never_in_records_state_or_logs(
    tap_runner,
    export_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret_pass = "s3cr3t-Passphrase-XYZ"
    secret_key = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nNOTAREALKEYabc123\n-----END PGP PRIVATE KEY BLOCK-----"
    write(export_dir / "a.csv", HAND_MADE)
    with caplog.at_level(logging.DEBUG):
        run = tap_runner(
            {
                "paths": [str(export_dir / "*.csv")],
                "pgp_passphrase": secret_pass,
                "pgp_private_key": secret_key,
            }
        )
        bad = tap_runner(
            {"paths": [str(export_dir / "zzz*.csv")], "pgp_passphrase": secret_pass},
            expect_error=True,
        )
    out = capfd.readouterr()
    blob = "\n".join(
        [repr(run.messages), repr(run.state), caplog.text, out.out, out.err, str(bad.error)]
    )
    assert run.records
    assert secret_pass not in blob
    assert "NOTAREALKEY" not in blob


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


def test_batch_capability_is_not_advertised() -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    about = TapBrazeCsv._get_about_info()
    assert "batch" not in [str(c) for c in about.capabilities]
    assert "state" in [str(c) for c in about.capabilities]


def test_every_setting_the_code_reads_is_declared() -> None:
    """Each `sftp.*` key SftpSettings reads, and the top-level keys, show in --about."""
    import dataclasses

    from tap_braze_csv.sources import SftpSettings
    from tap_braze_csv.tap import TapBrazeCsv

    props = TapBrazeCsv.config_jsonschema["properties"]
    sftp_props = props["sftp"]["properties"]
    assert {f.name for f in dataclasses.fields(SftpSettings)} == set(sftp_props)
    assert sftp_props["timeout"]["default"] == 30
    assert sftp_props["retries"]["default"] == 3
    assert sftp_props["retry_wait"]["default"] == 1.0
    for name in ("timeout", "retries", "retry_wait"):
        assert sftp_props[name]["description"]
    top = {"paths", "sftp", "pgp_private_key", "pgp_passphrase", "stream_name", "on_bad_row"}
    top |= {"column_types", "encoding", "delimiter", "segment_name_regex", "fast_writer"}
    assert top <= set(props)


def test_failed_run_records_progress_and_next_run_resumes(tap_runner, export_dir: Path) -> None:
    f = write(export_dir / "bad.csv", BAD)
    first = tap_runner({"paths": [str(f)], "on_bad_row": "fail"}, expect_error=True)
    # the failing run's last STATE (written before exiting) points at the last good row
    assert first.states[-1]["bookmarks"]["braze_users"]["current"]["line"] == 2
    second = tap_runner({"paths": [str(f)], "on_bad_row": "skip"}, state=first.states[-1])
    # resumes after line 2: u1 is not sent again, bad lines 3-5 skipped, u5 arrives
    assert [r["external_id"] for r in second.records] == ["u5"]
    assert second.bookmark()["files"][0]["complete"] is True


def test_encoding_and_delimiter_settings(tap_runner, export_dir: Path) -> None:
    f = export_dir / "latin.csv"
    f.write_bytes("user_id;first_name;city\r\nu1;Zoé;Montréal\r\n".encode("latin-1"))
    run = tap_runner({"paths": [str(f)], "encoding": "latin-1", "delimiter": ";"})
    assert run.records[0]["first_name"] == "Zoé"
    assert run.records[0]["city"] == "Montréal"
    wrong = tap_runner({"paths": [str(f)], "delimiter": ";"}, expect_error=True)
    assert isinstance(wrong.error, BrazeCsvError)
    assert str(wrong.error).startswith(f"{f}: at or after line 1: is not UTF-8 text")
    assert "set `encoding`" in str(wrong.error)


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


def test_unknown_encoding_fails_at_start_naming_the_setting(export_dir: Path) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    with pytest.raises(BrazeCsvError, match=r"^encoding: unknown text encoding 'latin-9000'"):
        TapBrazeCsv(config={"paths": [str(export_dir / "*.csv")], "encoding": "latin-9000"})


def test_invalid_segment_name_regex_fails_at_start_naming_the_setting(export_dir: Path) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    with pytest.raises(ValueError, match=r"^segment_name_regex: not a valid Python regular"):
        TapBrazeCsv(config={"paths": [str(export_dir / "*.csv")], "segment_name_regex": "(a"})


def test_readme_settings_table_matches_about(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's settings table is `tap-braze-csv --about --format=markdown`'s, verbatim."""
    from tap_braze_csv.tap import TapBrazeCsv

    TapBrazeCsv.print_about(output_format="markdown")
    about = capsys.readouterr().out
    table = about.split("## Settings\n\n", 1)[1].split("\n\n", 1)[0].strip()
    assert table.startswith("| Setting |")
    assert "| sftp.retry_wait |" in table
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert table in readme, "regenerate the README settings table from --about"


def test_discovery_warns_when_no_file_is_readable(
    export_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    caplog.set_level(logging.WARNING)
    pattern = str(export_dir / "none-*.zip")
    tap = TapBrazeCsv(config={"paths": [pattern]})
    schema = tap.streams["braze_users"].schema
    assert schema["additionalProperties"] is True
    assert any(r.levelno == logging.WARNING and pattern in r.getMessage() for r in caplog.records)
