"""Bad records: blank or oversized ids skipped with a warning, invalid ones named by stream and row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidRecord


def test_blank_and_oversized_ids_are_skipped_per_record_with_a_warning(
    braze_sandbox: Any, tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    huge = "x" * 100_000
    wide = "é" * 499  # 499 characters, 998 bytes: one byte over Braze's limit
    fits = "é" * 498  # 996 bytes: accepted
    delta_schema = {
        "type": "SCHEMA",
        "stream": "deltas",
        "schema": {
            "type": "object",
            "properties": {
                "external_id": {"type": "string"},
                "add": {"type": "array", "items": {"type": "string"}},
            },
        },
        "key_properties": [],
    }
    msgs = [
        *h.schema_msgs(),
        delta_schema,
        h.member("a", "u1"),
        h.member("a", " \t\n "),
        h.member("a", huge),
        h.member("a", wide),
        h.member("a", fits),
        {"type": "RECORD", "stream": "deltas", "record": {"external_id": "   ", "add": ["b"]}},
        h.snapshot("a", 5),
        h.state(),
    ]
    states, summary = h.run_target(cfg, msgs)
    assert states, "the run succeeds: bad ids are skipped, not fatal"
    assert h.segments(b) == {"u1": ["a"], fits: ["a"]}  # nobody else reached Braze
    assert summary.invalid_records == 4
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert (
        "Stream 'audience_members' record #2 skipped: identifier is only whitespace"
        in (warnings[0])
    )
    assert "record #3 skipped: identifier is 100000 bytes long" in warnings[1]
    assert "record #4 skipped: identifier is 998 bytes long" in warnings[2]
    assert "Stream 'deltas' record #6 skipped: identifier is only whitespace" in warnings[3]
    assert all(len(w) < 400 for w in warnings), "a huge id is never printed whole"


def test_invalid_record_names_stream_and_row(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    bad = h.member("a", "u2")
    bad["record"]["external_id"] = 42
    with pytest.raises(InvalidRecord, match=r"audience_members' record #2"):
        h.run_target(cfg, [*h.schema_msgs(), h.member("a", "u1"), bad])
    assert h.track_requests(b) == []
