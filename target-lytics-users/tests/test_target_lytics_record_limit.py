"""Lytics' 16 KB limit on one record within a collect batch (platform limits).

A record over it is named (stream, id, input line, size), skipped and counted; with
`fail_on_rejected` the run stops with no STATE past it. The sandbox enforces the limit, so a
target that sent such a record would see it rejected, not stored.
"""

from __future__ import annotations

import logging

from target_lytics_testkit import braze_user, run_target, singer_lines
from target_lytics_users.client import LyticsRejectedError
from target_lytics_users.serialize import dumps_record


def _records() -> list[dict]:
    records = [braze_user(i) for i in range(5)]
    records[2]["custom_attributes"] = {"notes": "x" * 20_000}  # ~20 KB once serialized
    return records


def test_record_over_16_kb_is_reported_by_id_and_size_and_skipped(lytics_sandbox, config, caplog):
    records = _records()
    size = len(dumps_record(records[2]))
    with caplog.at_level(logging.INFO):
        result = run_target(config, singer_lines(records))

    assert result.error is None
    expected = [r for i, r in enumerate(records) if i != 2]
    assert sorted(lytics_sandbox.collected("braze_users"), key=lambda r: r["sessions"]) == expected
    assert result.states == [{"n": 5, "done": True}]  # skipping is the documented default
    logged = caplog.text
    assert "external_id='u2'" in logged
    assert f"{size} bytes, over Lytics' limit of 16 KB" in logged
    assert "input line 4" in logged
    summary = result.target.summary()
    assert summary["too_large"] == 1
    assert summary["records_sent"] == 4
    assert "1 skipped over Lytics' 16 KB record limit" in logged
    assert lytics_sandbox.stats["rejected_too_large"] == 0  # it never reached Lytics


def test_record_over_16_kb_fails_the_run_with_fail_on_rejected(lytics_sandbox, config):
    result = run_target({**config, "fail_on_rejected": True}, singer_lines(_records()))

    assert isinstance(result.error, LyticsRejectedError)
    assert "external_id='u2'" in str(result.error)
    assert "fail_on_rejected" in str(result.error)
    assert result.states == []  # no STATE past the rejected record
    assert result.target.summary()["too_large"] == 1


def test_sandbox_enforces_the_limit_when_a_client_sends_such_a_record(lytics_sandbox, config):
    # With the target's check loosened, the record reaches the emulated Lytics, which refuses
    # it inside the batch (rejected_count) and stores the others.
    result = run_target({**config, "max_record_bytes": 1_000_000}, singer_lines(_records()))

    assert result.error is None
    assert len(lytics_sandbox.collected("braze_users")) == 4
    assert lytics_sandbox.stats["rejected_too_large"] == 1
    assert result.target.summary()["rejected"] == 1


def test_records_at_the_limit_are_sent(lytics_sandbox, config):
    record = braze_user(1)
    base = len(dumps_record(record))
    record["custom_attributes"] = {"notes": ""}
    record["custom_attributes"]["notes"] = "z" * (16_000 - len(dumps_record(record)))
    assert len(dumps_record(record)) == 16_000
    assert base < 16_000
    result = run_target(config, singer_lines([record]))

    assert result.error is None
    assert lytics_sandbox.collected("braze_users") == [record]
    assert result.target.summary()["too_large"] == 0
