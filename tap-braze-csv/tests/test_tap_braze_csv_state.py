"""STATE and resume: files skipped once read, changed files re-read, no float in STATE, old
states honoured, forgotten files, resume after an interruption or a failed run."""

from __future__ import annotations

import io
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
import tap_braze_csv.output as output_mod
import tap_braze_csv.streams as streams_mod
from braze_csv_testkit import BAD, HAND_MADE, write
from tap_braze_csv.sample import generate_export


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
    monkeypatch.setattr(output_mod, "FLUSH_ROWS", 7)
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


def test_failed_run_records_progress_and_next_run_resumes(tap_runner, export_dir: Path) -> None:
    f = write(export_dir / "bad.csv", BAD)
    first = tap_runner({"paths": [str(f)], "on_bad_row": "fail"}, expect_error=True)
    # the failing run's last STATE (written before exiting) points at the last good row
    assert first.states[-1]["bookmarks"]["braze_users"]["current"]["line"] == 2
    second = tap_runner({"paths": [str(f)], "on_bad_row": "skip"}, state=first.states[-1])
    # resumes after line 2: u1 is not sent again, bad lines 3-5 skipped, u5 arrives
    assert [r["external_id"] for r in second.records] == ["u5"]
    assert second.bookmark()["files"][0]["complete"] is True
