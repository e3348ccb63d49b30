"""Removal safeguards of target-braze-audience (issue 10 section 1), against the Braze sandbox."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import pytest
from target_braze_audience.deltas import RemovalsHeldError
from target_braze_audience.store import MembershipStore
from target_braze_audience.target import TargetBrazeAudience


def users(n: int, start: int = 0) -> list[str]:
    return [f"u{i}" for i in range(start, start + n)]


def run_held(h: Any, cfg: dict, msgs: list) -> Any:
    """Run the target expecting held removals; return (summary, error message)."""
    target = TargetBrazeAudience(config=cfg)
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(RemovalsHeldError) as info:
        target.listen(io.StringIO(h.to_lines(msgs)))
    return target.last_summary, str(info.value)


def test_a_mass_removal_is_held_adds_and_other_audiences_still_delivered(
    braze_sandbox: Any, store_url: str, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, store_url)
    h.run_target(cfg, h.audience_msgs({"big": users(40), "other": users(10, 100)}))
    # A scan that silently lost 30 of big's 40 members, plus one real newcomer; "other"
    # loses 5 of 10 (a small audience: exempt) and gains one.
    b.clear_requests()
    msgs = h.audience_msgs({"big": [*users(10), "u500"], "other": [*users(5, 100), "u501"]})
    summary, message = run_held(h, cfg, msgs)
    assert "Audience 'big'" in message
    assert "would remove 30 of the 40 members" in message
    assert "max_removal_fraction=0.5" in message
    assert "max_removal_fraction=1" in message
    segs = h.segments(b)
    assert all(segs[u] == ["big"] for u in users(40))  # nobody removed from big
    assert segs["u500"] == ["big"]  # its add was delivered
    assert segs["u501"] == ["other"]
    assert all(u not in segs for u in users(5, 105))  # other's removals went through
    assert summary.audiences["big"].held == 30
    assert "HELD" in summary.audiences["big"].snapshot
    # Not forgotten: the next run decides again (the same truncated scan: held again) ...
    store = MembershipStore(store_url)
    assert sum(store.memberships("big").values()) == 41
    assert store.pending_rows() == []
    store.close()
    run_held(h, cfg, msgs)
    # ... and a complete scan removes nobody; an intended emptying passes with 1.
    _, summary = h.run_target(cfg, h.audience_msgs({"big": [*users(40), "u500"]}))
    assert summary.audiences["big"].removed == 0
    cfg1 = {**cfg, "max_removal_fraction": 1}
    _, summary = h.run_target(cfg1, h.audience_msgs({"big": ["u500"]}))
    assert summary.audiences["big"].removed == 40
    assert h.segments(b).get("u0") is None


def test_removal_guard_thresholds(braze_sandbox: Any, tmp_path: Any, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    h.run_target(cfg, h.audience_msgs({"small": users(19), "edge": users(20, 100)}))
    # 19 stored members: exempt, emptied; exactly half of 20: not more than 0.5, let through.
    _, summary = h.run_target(cfg, h.audience_msgs({"small": [], "edge": users(10, 100)}))
    assert summary.audiences["small"].removed == 19
    assert summary.audiences["edge"].removed == 10
    # 0 holds any removal of an audience of 20+ members.
    h.run_target(cfg, h.audience_msgs({"edge": users(20, 100)}))
    summary, _ = run_held(
        h, {**cfg, "max_removal_fraction": 0}, h.audience_msgs({"edge": users(19, 100)})
    )
    assert summary.audiences["edge"].held == 1


def test_members_losing_their_id_keep_their_memberships(
    braze_sandbox: Any, store_url: str, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, store_url)
    first = [h.member("a", f"u{i}", uid=f"lu{i}") for i in range(30)]
    h.run_target(cfg, [*h.schema_msgs(), *first, h.snapshot("a", 30), h.state()])
    # A third of the audience loses its braze_id in Lytics: records without an id but with
    # their Lytics uid (the tap's `lytics_uid`).
    msgs = h.schema_msgs()
    for i in range(30):
        msgs.append(h.member("a", None if i < 10 else f"u{i}", uid=f"lu{i}"))
    snap = h.snapshot("a", 30)
    snap["record"]["members_without_id"] = 10
    msgs += [snap, h.state()]
    b.clear_requests()
    _, summary = h.run_target(cfg, msgs)
    assert h.track_requests(b) == []
    assert all(h.segments(b)[u] == ["a"] for u in users(30))
    st = summary.audiences["a"]
    assert (st.removed, st.kept, st.held) == (0, 10, 0)
    assert "kept: 10 members without an id" in st.snapshot
    assert summary.invalid_records == 0


def test_a_merged_profile_keeps_the_memberships_of_its_other_id(
    braze_sandbox: Any, tmp_path: Any, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    h.run_target(cfg, h.audience_msgs({"a": ["u1-old", "u2"]}))
    # Lytics merged u1-old's profile (same uid "lu1-old") into one whose first id is u1.
    msgs = [
        *h.schema_msgs(),
        h.member("a", "u1", uid="lu1-old"),
        h.member("a", "u2"),
        h.snapshot("a", 2),
    ]
    _, summary = h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1-old": ["a"], "u1": ["a"], "u2": ["a"]}
    assert summary.audiences["a"].kept == 1


def test_an_audience_without_a_slug_is_never_written_as_the_stream_name(
    braze_sandbox: Any, tmp_path: Any, h: Any, caplog: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    schema = h.schema_msgs()
    for msg in schema:
        msg["schema"]["properties"]["audience_slug"] = {"type": ["string", "null"]}
    rec = h.member("a", "u1")
    rec["record"]["audience_slug"] = None
    snap = h.snapshot("a", 1)
    snap["record"]["audience_slug"] = None
    with caplog.at_level(logging.WARNING):
        _, summary = h.run_target(cfg, [*schema, rec, h.member("b", "u2"), snap])
    assert h.segments(b) == {"u2": ["b"]}
    assert "audience_members" not in str(b.users())
    assert summary.invalid_records == 1
    assert any("empty 'audience_slug'" in r.getMessage() for r in caplog.records)


def test_a_second_contradictory_snapshot_in_one_run_does_not_empty_the_audience(
    braze_sandbox: Any, tmp_path: Any, h: Any, caplog: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), max_removal_fraction=1)
    h.run_target(cfg, h.audience_msgs({"a": users(30)}))
    msgs = [
        *h.schema_msgs(),
        *[h.member("a", u, "scan2") for u in users(29)],
        h.snapshot("a", 29, "scan2"),
        h.snapshot("a", 0, "scan3"),  # an empty scan of the same audience, same run
    ]
    with caplog.at_level(logging.WARNING):
        _, summary = h.run_target(cfg, msgs)
    assert summary.audiences["a"].removed == 1  # only u29, missing from both
    assert sorted(h.segments(b)) == sorted(users(29))
    assert any("second complete snapshot" in r.getMessage() for r in caplog.records)


def test_dry_run_reports_held_removals_and_fails(braze_sandbox: Any, tmp_path: Any, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    h.run_target(cfg, h.audience_msgs({"a": users(30)}))
    b.clear_requests()
    summary, message = run_held(h, {**cfg, "dry_run": True}, h.audience_msgs({"a": users(5)}))
    assert summary.audiences["a"].held == 25
    assert summary.audiences["a"].removed == 0
    assert "would remove 25 of the 30" in message
    assert h.track_requests(b) == []
