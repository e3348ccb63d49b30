"""Snapshots decide removals: a crash, a count mismatch or a restarted scan removes nobody wrongly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest


def test_crash_mid_input_removes_nobody(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    # The tap dies after two members of the next scan: no snapshot.
    msgs = [*h.schema_msgs(), h.member("a", "u1", "s2"), h.member("a", "u4", "s2")]
    _, summary = h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"], "u3": ["a"], "u4": ["a"]}
    assert "nobody removed" in summary.audiences["a"].snapshot
    # A line cut in half: the run fails before sending anything.
    b.clear_requests()
    text = h.to_lines([*h.schema_msgs(), h.member("a", "u5", "s3")]) + '{"type": "RECORD", "stre'
    with pytest.raises(Exception, match="Input line 4 is not JSON"):
        h.run_target(cfg, text)
    assert h.track_requests(b) == []


def test_count_mismatch_removes_nobody(
    braze_sandbox: Any, tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    msgs = [*h.schema_msgs(), h.member("a", "u1", "s2"), h.snapshot("a", 3, "s2"), h.state()]
    with caplog.at_level(logging.WARNING):
        _, summary = h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"], "u3": ["a"]}
    assert "counts 3 members but 1 arrived" in caplog.text
    assert "nobody removed" in summary.audiences["a"].snapshot


def test_restarted_scan_uses_the_complete_pass(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    # Pass s2 expires after u1, u2; pass s3 restarts and completes with u1 only.
    msgs = [
        *h.schema_msgs(),
        h.member("a", "u1", "s2"),
        h.member("a", "u2", "s2"),
        h.member("a", "u1", "s3"),
        h.snapshot("a", 1, "s3"),
    ]
    h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["a"]}


def test_snapshot_processed_after_preceding_members(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    """Order across streams: the snapshot sees every member record that preceded it."""
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    members = [f"u{i}" for i in range(12_000)]  # more than one internal chunk
    h.run_target(cfg, h.audience_msgs({"a": members}))
    b.clear_requests()
    _, summary = h.run_target(cfg, h.audience_msgs({"a": members}))
    assert summary.audiences["a"].snapshot.startswith("complete")
    assert summary.audiences["a"].removed == 0
    assert h.track_requests(b) == []
