"""`array_write_mode: set_when_cheaper` against the Braze sandbox: cost and exactness.

The sandbox bills as Braze's data-point documentation says: one data point per value in
`add`/`remove`, one for a whole-array assignment (sandbox/README.md). Every scenario runs
in both modes, each on its own sandbox and store, and the final Braze state is compared.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox.braze import BrazeSandbox
from target_braze_audience.deltas import RemovalsHeldError

SET = {"array_write_mode": "set_when_cheaper"}
EXE = Path(sys.executable).parent / "target-braze-audience"

# Backfill: 4 users in 1 audience, 3 in 2, 2 in 3 (a user's audiences are a prefix of a, b, c).
IN_1 = [f"one{i}" for i in range(4)]
IN_2 = [f"two{i}" for i in range(3)]
IN_3 = [f"three{i}" for i in range(2)]
BACKFILL = {"a": IN_1 + IN_2 + IN_3, "b": IN_2 + IN_3, "c": IN_3}
# Churn: the users in 3 audiences leave a and join d (2 changes each); one user in 2 leaves b
# (1 change); one user in 1 joins b (1 change).
CHURN = {
    "a": IN_1 + IN_2,
    "b": [*IN_2[1:], *IN_3, IN_1[0]],
    "c": IN_3,
    "d": IN_3,
}


def _objects(braze: Any, h: Any) -> dict[str, Any]:
    """external_id -> the attribute value of its (only) object in the recorded requests."""
    return {
        o["external_id"]: o["lytics_segments"]
        for r in h.track_requests(braze)
        for o in r.json["attributes"]
    }


def _expected(runs: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for aud, users in runs.items():
        for u in users:
            out.setdefault(u, []).append(aud)
    return {u: sorted(v) for u, v in out.items()}


def test_backfill_and_churn_cost_less_and_end_identical(
    braze_sandbox: Any, store_url: str, tmp_path: Path, h: Any
) -> None:
    """Set where cheaper (users with 2+ changes), deltas elsewhere; same final state."""
    b = braze_sandbox
    with BrazeSandbox() as d:  # delta mode: its own sandbox and SQLite store
        dcfg = h.braze_config(d, str(tmp_path / "delta.sqlite"))
        scfg = h.braze_config(b, store_url, **SET)

        _, dsum = h.run_target(dcfg, h.audience_msgs(BACKFILL))
        _, ssum = h.run_target(scfg, h.audience_msgs(BACKFILL))
        # Delta mode: one data point per membership; set mode: one per user.
        assert d.stats["data_points"] == 4 * 1 + 3 * 2 + 2 * 3 == 16
        assert b.stats["data_points"] == 4 + 3 + 2 == 9
        assert h.segments(b) == h.segments(d) == _expected(BACKFILL)
        objs = _objects(b, h)
        assert objs["one0"] == {"add": ["a"]}  # 1 value: a set would not be cheaper
        assert objs["two0"] == ["a", "b"]
        assert objs["three0"] == ["a", "b", "c"]
        assert (dsum.data_points, dsum.data_points_saved) == (16, 0)
        assert (dsum.set_objects, dsum.delta_objects) == (0, 9)
        assert (ssum.data_points, ssum.data_points_saved) == (9, 7)
        assert (ssum.set_objects, ssum.delta_objects) == (5, 4)
        # Per-audience bookkeeping is per membership whatever the object carried.
        for s in (dsum, ssum):
            assert {a: st.added for a, st in s.audiences.items()} == {"a": 9, "b": 5, "c": 2}
            assert s.values_sent == 16
            assert s.objects_sent == 9

        b.clear_requests()
        b.stats["data_points"] = d.stats["data_points"] = 0
        _, dsum = h.run_target(dcfg, h.audience_msgs(CHURN))
        _, ssum = h.run_target(scfg, h.audience_msgs(CHURN))
        assert d.stats["data_points"] == 2 * 2 + 1 + 1 == 6
        assert b.stats["data_points"] == 2 * 1 + 1 + 1 == 4
        assert h.segments(b) == h.segments(d) == _expected(CHURN)
        objs = _objects(b, h)
        assert objs["three0"] == ["b", "c", "d"]  # left a, kept b and c, joined d
        assert objs["two0"] == {"remove": ["b"]}
        assert objs["one0"] == {"add": ["b"]}
        assert (ssum.data_points, ssum.data_points_saved, ssum.set_objects) == (4, 2, 2)
        assert (dsum.data_points, dsum.data_points_saved, dsum.set_objects) == (6, 0, 0)
        for s in (dsum, ssum):
            assert (s.audiences["a"].removed, s.audiences["d"].added) == (2, 2)
            assert s.audiences["a"].pending == 0

        # Unchanged input: nothing sent in set mode either.
        b.clear_requests()
        _, ssum = h.run_target(scfg, h.audience_msgs(CHURN))
        assert h.track_requests(b) == []
        assert ssum.data_points == 0


def test_summary_log_line_and_dry_run_agree(
    braze_sandbox: Any, tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), **SET)
    _, dry = h.run_target({**cfg, "dry_run": True}, h.audience_msgs(BACKFILL))
    assert h.track_requests(b) == []
    assert (dry.data_points, dry.data_points_saved, dry.set_objects, dry.delta_objects) == (
        9,
        7,
        5,
        4,
    )
    with caplog.at_level(logging.INFO):
        _, real = h.run_target(cfg, h.audience_msgs(BACKFILL))
    assert b.stats["data_points"] == real.data_points == 9
    assert real.as_dict()["data_points_saved"] == 7
    assert (
        "attribute values=16 data points=9 (array_write_mode=set_when_cheaper: saved=7, "
        "set objects=5, delta objects=4)" in caplog.text
    )


def test_held_removals_stay_in_the_array(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    """A removal held by max_removal_fraction is not undone by a complete array."""
    b = braze_sandbox
    users = [f"u{i:02d}" for i in range(25)]
    with BrazeSandbox() as d:
        cfgs = [
            (b, h.braze_config(b, str(tmp_path / "set.sqlite"), **SET)),
            (d, h.braze_config(d, str(tmp_path / "delta.sqlite"))),
        ]
        for braze, cfg in cfgs:
            h.run_target(cfg, h.audience_msgs({"big": users}))
            # A truncated scan of `big` (5 of 25: removals held) while everyone joins x, y.
            msgs = h.audience_msgs({"big": users[:5], "x": users, "y": users})
            with contextlib.redirect_stdout(io.StringIO()), pytest.raises(RemovalsHeldError):
                h.run_target(cfg, msgs)
            assert h.segments(braze) == {u: ["big", "x", "y"] for u in users}
        objs = _objects(b, h)
        assert objs["u24"] == ["big", "x", "y"]  # held `big` kept in the complete array
        assert b.stats["data_points"] == 25 + 25
        assert d.stats["data_points"] == 25 + 50


def test_rejected_and_refused_users_keep_exact_bookkeeping(
    braze_sandbox: Any, tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), **SET)
    b.reject({"three0": "bad id"})
    # A request carrying two1 is refused whole, without naming it: split until isolated.
    b.refuse_requests_with({"two1": "payload too large"}, status=400)
    with caplog.at_level(logging.WARNING):
        _, summary = h.run_target(cfg, h.audience_msgs(BACKFILL))
    # Refused requests were split down to two1's object alone, a complete array each time.
    refused = [r for r in h.track_requests(b) if "two1" in str(r.json)]
    assert len(refused) > 1
    assert all(
        o["lytics_segments"] == ["a", "b"]
        for r in refused
        for o in r.json["attributes"]
        if o["external_id"] == "two1"
    )
    assert summary.rejected_objects == 2
    assert {a: st.rejected for a, st in summary.audiences.items()} == {"a": 2, "b": 2, "c": 1}
    assert {a: st.pending for a, st in summary.audiences.items()} == {"a": 2, "b": 2, "c": 1}
    assert (summary.set_objects, summary.delta_objects, summary.data_points) == (3, 4, 7)
    assert b.stats["data_points"] == 7
    exp = _expected(BACKFILL)
    got = h.segments(b)
    assert got == {u: v for u, v in exp.items() if u not in {"three0", "two1"}}
    assert "Braze rejected user 'three0' (add a, add b, add c): bad id" in caplog.text
    assert "Braze rejected user 'two1' (add a, add b)" in caplog.text
    # Both kept as rejected deltas, one per membership, and delivered once accepted.
    b.reject({})
    b.refuse_requests_with({})
    b.clear_requests()
    _, summary = h.run_target(cfg, h.audience_msgs(BACKFILL))
    assert h.segments(b) == exp
    assert _objects(b, h) == {"three0": ["a", "b", "c"], "two1": ["a", "b"]}
    assert (summary.set_objects, summary.data_points, summary.data_points_saved) == (2, 2, 3)
    assert sum(st.pending for st in summary.audiences.values()) == 0


def test_foreign_values_overwritten_in_set_mode_only(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    """Documented: set_when_cheaper overwrites values the store did not write."""
    b = braze_sandbox
    with BrazeSandbox() as d:
        for braze, extra in ((b, SET), (d, {})):
            braze.add_user("u1", lytics_segments=["manual"])
            braze.add_user("u2", lytics_segments=["manual"])
            cfg = h.braze_config(braze, str(tmp_path / f"{bool(extra)}.sqlite"), **extra)
            h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"], "b": ["u1"]}))
        assert h.segments(d) == {"u1": ["a", "b", "manual"], "u2": ["a", "manual"]}
        # u1 (2 changes) got a complete array: `manual` is gone; u2 (1 change) got an add.
        assert h.segments(b) == {"u1": ["a", "b"], "u2": ["a", "manual"]}


def test_user_leaving_every_audience_gets_removes_not_an_empty_array(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), **SET)
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"], "b": ["u1", "u2"]}))
    b.clear_requests()
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["u2"], "b": ["u2"]}))
    assert _objects(b, h) == {"u1": {"remove": ["a", "b"]}}
    assert h.segments(b) == {"u2": ["a", "b"]}
    assert (summary.data_points, summary.set_objects) == (2, 0)


def test_update_existing_only_set_objects(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    """Update-only set objects: unknown users skipped by Braze, adds kept for re-offers."""
    b = braze_sandbox
    b.add_user("known")
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), update_existing_only=True, **SET)
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["known", "new"], "b": ["known", "new"]}))
    objs = [o for r in h.track_requests(b) for o in r.json["attributes"]]
    assert all(o["_update_existing_only"] is True for o in objs)
    assert {o["external_id"]: o["lytics_segments"] for o in objs} == {
        "known": ["a", "b"],
        "new": ["a", "b"],
    }
    assert h.segments(b) == {"known": ["a", "b"]}
    assert summary.audiences["a"].update_only == 2


def test_cli_setting_from_env_and_bad_value(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    """Through the real executable, the setting given as a Meltano-style env var."""
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    data = h.to_lines(h.audience_msgs({"a": ["u1", "u2"], "b": ["u1"]})).encode()

    def run(mode: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "TARGET_BRAZE_AUDIENCE_ARRAY_WRITE_MODE": mode}
        return subprocess.run(
            [str(EXE), "--config", str(tmp_path / "config.json"), "--config", "ENV"],
            input=data,
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )

    bad = run("overwrite")
    assert bad.returncode != 0
    assert b"array_write_mode" in bad.stderr
    assert h.track_requests(b) == []
    ok = run("set_when_cheaper")
    assert ok.returncode == 0, ok.stderr.decode()[-2000:]
    text = ok.stderr.decode()
    assert "saved=1, set objects=1, delta objects=1" in text
    assert _objects(b, h) == {"u1": ["a", "b"], "u2": {"add": ["a"]}}
    assert b.stats["data_points"] == 2


def _start(name: str, cfg: dict[str, Any], tmp_path: Path) -> subprocess.Popen[bytes]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cfg))
    return subprocess.Popen(
        [str(EXE), "--config", str(run_dir / "config.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=(run_dir / "stderr").open("wb"),
        env={**os.environ, "LOGLEVEL": "INFO"},
    )


def test_set_mode_and_another_run_never_share_a_postgres_store(
    braze_sandbox: Any, pg_store_url: str, tmp_path: Path, h: Any
) -> None:
    """set_when_cheaper takes the store exclusively, both ways round.

    Refused while any run is active, and every other run is refused while it runs:
    a complete array would overwrite what partitioned runners deliver.
    """
    b = braze_sandbox
    modes: dict[str, dict[str, str]] = {"delta": {}, "set": SET}
    for first, second in (("delta", "set"), ("set", "delta")):
        holder = _start(f"{first}-first", h.braze_config(b, pg_store_url, **modes[first]), tmp_path)
        assert holder.stdin is not None
        msgs = h.audience_msgs({"a": ["u1"]})
        holder.stdin.write(h.to_lines(msgs[:-2]).encode())  # the snapshot and STATE held back
        holder.stdin.flush()
        log = tmp_path / f"{first}-first" / "stderr"
        assert h.wait_for(
            lambda log=log: "Membership store:" in log.read_text(errors="replace"), 30
        )
        b.clear_requests()
        cfg2 = h.braze_config(b, pg_store_url, **modes[second])
        (tmp_path / f"{second}-second.json").write_text(json.dumps(cfg2))
        refused = subprocess.run(
            [str(EXE), "--config", str(tmp_path / f"{second}-second.json")],
            input=h.to_lines(h.audience_msgs({"z": ["u1", "u2"], "y": ["u1"]})).encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0
        # set_when_cheaper opens the store `exclusive`: refused while a normal run holds it
        # shared, and a normal run is refused while it holds it exclusively.
        want = (
            b"this run needs the store to itself (exclusive)"
            if second == "set"
            else b"Another run is using the membership store"
        )
        assert want in refused.stderr, refused.stderr.decode()[-2000:]
        if second == "delta":
            assert b"exclusively (" in refused.stderr
        assert h.track_requests(b) == []
        holder.stdin.write(h.to_lines(msgs[-2:]).encode())
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0, log.read_text()[-2000:]
