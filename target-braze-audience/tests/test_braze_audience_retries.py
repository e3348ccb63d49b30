"""Retries against the Braze sandbox: rate limits, 5xx bursts, backoff settings, giving up with
the work kept pending, rejected users kept and retried by the next run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from target_braze_audience.client import BrazeClient
from target_braze_audience.deltas import DeliveryIncompleteError
from target_braze_audience.store import MembershipStore
from target_braze_audience.target import TargetBrazeAudience


def _objects(braze: Any, h: Any) -> list[dict[str, Any]]:
    return [o for r in h.track_requests(braze) for o in r.json["attributes"]]


def test_rate_limit_storm_ends_correct(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    b.rate_limit = 3
    b.rate_limit_window = 1.0
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), max_concurrency=6, batch_size=50)
    users = [f"u{i}" for i in range(500)]
    _, summary = h.run_target(cfg, h.audience_msgs({"a": users}))
    assert b.stats["rate_limited"] > 0
    assert summary.rate_limited > 0
    assert h.segments(b) == {u: ["a"] for u in users}
    assert summary.requests == 10


def test_5xx_burst_retried(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    b.fail_next(4, status=503)
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), max_concurrency=2)
    users = [f"u{i}" for i in range(200)]
    states, _ = h.run_target(cfg, h.audience_msgs({"a": users}))
    assert h.segments(b) == {u: ["a"] for u in users}
    assert b.stats["faults"] == 4
    assert states


def test_retry_backoff_settings_shape_the_waits(
    braze_sandbox: Any, tmp_path: Path, h: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`retry_backoff_base` doubles per retry, `retry_backoff_max` caps it, jitter 50-100 %."""
    b = braze_sandbox
    waits: list[float] = []
    monkeypatch.setattr(BrazeClient, "_sleep", lambda self, seconds: waits.append(seconds) or True)
    b.fail_next(4, status=503)
    cfg = h.braze_config(
        b,
        str(tmp_path / "s.sqlite"),
        max_retries=4,
        max_concurrency=1,
        retry_backoff_base=2.0,
        retry_backoff_max=5.0,
    )
    states, _ = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"]}
    assert states
    assert len(waits) == 4
    for wait, full in zip(waits, (2.0, 4.0, 5.0, 5.0), strict=True):  # 8 and 16 are capped
        assert full * 0.5 <= wait <= full


def test_final_failure_exits_nonzero_keeps_pending_no_state(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store, max_retries=2, max_concurrency=1)
    b.fail_next(1000, status=500)
    out = io.StringIO()
    target = TargetBrazeAudience(config=cfg)
    text = io.StringIO(h.to_lines(h.audience_msgs({"a": ["u1", "u2"]})))
    with (
        contextlib.redirect_stdout(out),
        pytest.raises(DeliveryIncompleteError, match="pending") as exc,
    ):
        target.listen(text)
    # How many attempts, over how long, the last answer, and the setting that raises the limit.
    assert re.search(
        r"gave up after 3 attempt\(s\) over \d+\.\ds; last: Braze answered 500: .*; "
        r"raise `max_retries` \(now 2\) to retry longer",
        str(exc.value),
    ), str(exc.value)
    assert out.getvalue() == ""  # no STATE
    assert b.users() == {}
    st = MembershipStore(store)
    assert {(u, o) for u, _a, o, *_ in st.pending_rows()} == {("u1", "add"), ("u2", "add")}
    assert st.memberships() == {}
    st.close()
    # Next run, Braze is back: a tap that now emits nothing still gets them delivered.
    b.fail_next(0)
    b._faults.clear()
    states, _ = h.run_target(cfg, [*h.schema_msgs(), h.state(2)])
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"]}
    assert states == [{"bookmarks": {"audience_members": {"run": 2}}}]


def test_rate_limit_exhaustion_names_attempts_duration_and_setting(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    b.fail_next(1000, status=429)
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), max_rate_limit_retries=2, max_concurrency=1)
    with pytest.raises(DeliveryIncompleteError) as exc:
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    assert re.search(
        r"gave up after 3 attempt\(s\) over \d+\.\ds; last: 429 rate limited \(3 times\); "
        r"raise `max_rate_limit_retries` \(now 2\) to retry longer",
        str(exc.value),
    ), str(exc.value)
    assert b.users() == {}


def test_rejected_users_kept_and_retried(braze_sandbox: Any, store_url: str, h: Any) -> None:
    b = braze_sandbox
    b.reject({"u2": "provided external_id is blacklisted and disallowed"})
    cfg = h.braze_config(b, store_url)
    states, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    assert h.segments(b) == {"u1": ["a"], "u3": ["a"]}
    assert summary.audiences["a"].rejected == 1
    assert states  # rejected deltas are recorded, so STATE may advance
    st = MembershipStore(store_url)
    assert st.pending_rows() == [
        ("u2", "a", "add", "rejected", True, "provided external_id is blacklisted and disallowed")
    ]
    st.close()
    b.reject({})
    b.clear_requests()
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"], "u3": ["a"]}
    assert _objects(b, h) == [{"external_id": "u2", "lytics_segments": {"add": ["a"]}}]
