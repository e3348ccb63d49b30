"""`dry_run`: nothing sent, nothing stored, the summary says what a real run would send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_braze_audience.store import MembershipStore


def test_dry_run_sends_nothing_changes_nothing(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store)
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    before = (MembershipStore(store).memberships(), b.users())
    b.clear_requests()
    dry = {**cfg, "dry_run": True}
    states, summary = h.run_target(dry, h.audience_msgs({"a": ["u2", "u3"], "b": ["u1"]}))
    assert b.requests == []
    assert states == []
    st = MembershipStore(store)
    assert (st.memberships(), b.users()) == before
    assert st.pending_rows() == []
    st.close()
    assert summary.dry_run
    assert summary.audiences["a"].added == 1
    assert summary.audiences["a"].removed == 1
    assert summary.requests == 1
    assert summary.values_sent == 3
    assert summary.objects_sent == 2  # u1 (remove a, add b) travels as one object
    _, summary = h.run_target(
        {**dry, "batch_size": 1}, h.audience_msgs({"a": ["u2", "u3"], "b": ["u1"]})
    )
    assert (summary.requests, summary.objects_sent, summary.values_sent) == (2, 2, 3)
    assert b.requests == []
    # Dry run with no store yet creates none.
    fresh = tmp_path / "fresh.sqlite"
    h.run_target({**dry, "store_url": str(fresh)}, h.audience_msgs({"a": ["u1"]}))
    assert not fresh.exists()
