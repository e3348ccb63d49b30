"""BATCH, ACTIVATE_VERSION and unsupported message types: no record is dropped silently."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from target_lytics_testkit import braze_user, run_target, singer_lines
from target_lytics_users.common.batch_files import BatchFileError
from target_lytics_users.serialize import UnsupportedMessageError

EXE = Path(sys.executable).parent / "target-lytics-users"


def batch_line(path: Path, records: list[dict], *, stream: str = "braze_users") -> str:
    """Write `records` as a gzipped JSONL batch file; return the BATCH message line."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    return json.dumps(
        {
            "type": "BATCH",
            "stream": stream,
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "manifest": [path.as_uri()],
        }
    )


def _sessions(records: list[dict]) -> list[int]:
    return sorted(r["sessions"] for r in records)


@pytest.mark.parametrize("maps", [None, {"braze_users": {"city": "__NULL__"}}])
def test_batch_records_are_delivered_before_state(lytics_sandbox, config, tmp_path, maps):
    head = singer_lines([braze_user(0)], final_state=False)
    lines = [
        *head,
        json.dumps({"type": "STATE", "value": {"n": 1}}),
        batch_line(tmp_path / "b1.json.gz", [braze_user(i) for i in range(1, 8)]),
        batch_line(tmp_path / "b2.json.gz", [braze_user(i) for i in range(8, 12)]),
        json.dumps({"type": "STATE", "value": {"n": 12}}),
    ]
    cfg = {**config, "max_batch_records": 5, **({"stream_maps": maps} if maps else {})}
    result = run_target(cfg, lines)
    assert result.error is None
    collected = lytics_sandbox.collected("braze_users")
    assert _sessions(collected) == list(range(12))  # every record once
    assert result.states == [{"n": 12}]
    assert result.target.summary()["records_sent"] == 12


def test_unreadable_batch_file_stops_before_state(lytics_sandbox, config, tmp_path):
    lines = [
        *singer_lines([braze_user(0)], final_state=False),
        batch_line(tmp_path / "ok.json.gz", [braze_user(1)]),
        json.dumps(
            {
                "type": "BATCH",
                "stream": "braze_users",
                "encoding": {"format": "jsonl", "compression": "gzip"},
                "manifest": [(tmp_path / "gone.json.gz").as_uri()],
            }
        ),
        json.dumps({"type": "STATE", "value": {"n": 3}}),
    ]
    result = run_target(config, lines)
    assert isinstance(result.error, BatchFileError)
    assert "gone.json.gz" in str(result.error)
    assert result.states == []

    # The installed executable: one clear line, exit 1, no STATE.
    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(json.dumps(braze_user(2)).encode() + b"\n[1, 2\n")
    lines[3] = lines[3].replace((tmp_path / "gone.json.gz").as_uri(), bad.as_uri())
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [str(EXE), "--config", str(cfg_path)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "bad.json.gz (stream 'braze_users') line 2 is not JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed: Parquet is read"
)
def test_parquet_batch_without_pyarrow_is_refused(lytics_sandbox, config, tmp_path):
    parquet = tmp_path / "b.parquet"
    parquet.write_bytes(b"PAR1")
    message = {
        "type": "BATCH",
        "stream": "braze_users",
        "encoding": {"format": "parquet", "compression": None},
        "manifest": [parquet.as_uri()],
    }
    lines = [
        *singer_lines([braze_user(0)], final_state=False),
        json.dumps(message),
        json.dumps({"type": "STATE", "value": {"n": 1}}),
    ]
    result = run_target(config, lines)
    assert isinstance(result.error, BatchFileError)
    assert "b.parquet (stream 'braze_users') is Parquet: install pyarrow" in str(result.error)
    assert result.states == []


def test_unsupported_message_type_stops_before_state(lytics_sandbox, config):
    lines = [
        *singer_lines([braze_user(0)], final_state=False),
        json.dumps({"type": "UPSERT", "stream": "braze_users", "record": braze_user(1)}),
        json.dumps({"type": "STATE", "value": {"n": 2}}),
    ]
    result = run_target(config, lines)
    assert isinstance(result.error, UnsupportedMessageError)
    assert "Input line 3: unsupported Singer message type 'UPSERT'" in str(result.error)
    assert result.states == []


def test_activate_version_is_ignored_with_one_warning(lytics_sandbox, config, caplog):
    av = json.dumps({"type": "ACTIVATE_VERSION", "stream": "braze_users", "version": 3})
    lines = singer_lines([braze_user(i) for i in range(3)])
    lines = [lines[0], av, *lines[1:3], av, *lines[3:]]
    with caplog.at_level(logging.WARNING):
        result = run_target(config, lines)
    assert result.error is None
    assert _sessions(lytics_sandbox.collected("braze_users")) == [0, 1, 2]
    assert result.states == [{"n": 3, "done": True}]
    warnings = [r for r in caplog.records if "ACTIVATE_VERSION" in r.getMessage()]
    assert len(warnings) == 1
    assert "not deleted" in warnings[0].getMessage()
