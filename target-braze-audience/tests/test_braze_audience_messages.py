"""BATCH, ACTIVATE_VERSION and unsupported message types: no record is dropped silently."""

from __future__ import annotations

import gzip
import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from target_braze_audience.common.batch_files import BatchFileError
from target_braze_audience.sinks import UnsupportedMessageError
from target_braze_audience.store import MembershipStore
from target_braze_audience.target import TargetBrazeAudience

EXE = Path(sys.executable).parent / "target-braze-audience"


def _batched(tmp_path: Path, h: Any, audiences: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The messages of h.audience_msgs, with the records of each stream in a batch file."""
    msgs = h.audience_msgs(audiences)
    members = [m["record"] for m in msgs if m.get("stream") == "audience_members" and "record" in m]
    snaps = [m["record"] for m in msgs if m.get("stream") == "audience_snapshots" and "record" in m]
    return [
        *h.schema_msgs(),
        h.batch_msg(tmp_path, "audience_members", members[:3], "m1"),
        h.batch_msg(tmp_path, "audience_members", members[3:], "m2"),
        h.batch_msg(tmp_path, "audience_snapshots", snaps, "s1"),
        h.state(),
    ]


def _present(store: str) -> set[tuple[str, str]]:
    st = MembershipStore(store)
    try:
        return {k for k, p in st.memberships().items() if p}
    finally:
        st.close()


@pytest.mark.parametrize("maps", [None, {"audience_members": {"email": "__NULL__"}}])
def test_batch_records_are_delivered_then_state(
    braze_sandbox: Any, tmp_path: Path, h: Any, maps: dict | None
) -> None:
    # Without stream maps: the target's own record path; with them: the SDK's sink path.
    b = braze_sandbox
    extra = {"stream_maps": maps} if maps else {}
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), **extra)
    states, summary = h.run_target(cfg, _batched(tmp_path, h, {"a": ["u1", "u2", "u3", "u4"]}))
    assert h.segments(b) == {f"u{i}": ["a"] for i in range(1, 5)}
    assert states == [{"bookmarks": {"audience_members": {"run": 1}}}]
    assert summary.records == 4
    # The snapshot batch (after the members) removes who left.
    b.clear_requests()
    states, summary = h.run_target(cfg, _batched(tmp_path, h, {"a": ["u2", "u3"]}))
    assert h.segments(b) == {"u2": ["a"], "u3": ["a"]}
    assert summary.audiences["a"].removed == 2
    assert states == [{"bookmarks": {"audience_members": {"run": 1}}}]


def test_unreadable_batch_file_stops_before_state(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store)
    h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    b.clear_requests()
    missing = tmp_path / "gone.json.gz"
    msgs = [
        *h.schema_msgs(),
        h.member("a", "u1"),
        h.member("a", "u2"),
        {
            "type": "BATCH",
            "stream": "audience_members",
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "manifest": [missing.as_uri()],
        },
        h.snapshot("a", 2),
        h.state(),
    ]
    target = TargetBrazeAudience(config=cfg)
    with pytest.raises(BatchFileError, match=r"gone\.json\.gz.*cannot be read"):
        target.listen(io.StringIO(h.to_lines(msgs)))
    assert h.track_requests(b) == []
    target.engine.store.close()  # a failed process ends here, releasing the store's lock
    assert _present(store) == {("a", "u1")}

    # A corrupt line names the file and line; the installed executable exits 1, no STATE.
    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(orjson.dumps(h.member("a", "u2")["record"]) + b"\n{not json\n")
    msgs[4] = {**msgs[4], "manifest": [bad.as_uri()]}
    cfg_path = tmp_path / "config.json"
    cfg_path.write_bytes(orjson.dumps(cfg))
    proc = subprocess.run(
        [str(EXE), "--config", str(cfg_path)],
        input=h.to_lines(msgs).encode(),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert b"bad.json.gz (stream 'audience_members') line 2 is not JSON" in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert h.track_requests(b) == []
    assert _present(store) == {("a", "u1")}


def test_unsupported_message_type_stops_without_state(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    msgs = [
        *h.schema_msgs(),
        h.member("a", "u1"),
        h.state(1),
        {"type": "UPSERT", "stream": "audience_members", "record": {"external_id": "u2"}},
        h.member("a", "u3"),
        h.state(2),
    ]
    with pytest.raises(UnsupportedMessageError, match="'UPSERT' \\(stream 'audience_members'\\)"):
        h.run_target(cfg, msgs)
    assert h.track_requests(b) == []


def test_activate_version_is_ignored_with_one_warning(
    braze_sandbox: Any, tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    av = {"type": "ACTIVATE_VERSION", "stream": "audience_members", "version": 2}
    msgs = h.audience_msgs({"a": ["u1", "u2"]})
    msgs = [*msgs[:2], av, *msgs[2:4], av, *msgs[4:]]
    with caplog.at_level(logging.WARNING):
        states, _ = h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"]}
    assert states == [{"bookmarks": {"audience_members": {"run": 1}}}]
    warnings = [r for r in caplog.records if "ACTIVATE_VERSION" in r.getMessage()]
    assert len(warnings) == 1
    assert "never because a table version changed" in warnings[0].getMessage()
