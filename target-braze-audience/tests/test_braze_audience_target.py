"""target-braze-audience end to end against the Braze sandbox (in-process runs)."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidRecord
from target_braze_audience.client import BrazeClient, BrazeSettingError
from target_braze_audience.deltas import DeliveryIncompleteError
from target_braze_audience.store import MembershipStore
from target_braze_audience.target import TargetBrazeAudience


def _objects(braze: Any, h: Any) -> list[dict[str, Any]]:
    return [o for r in h.track_requests(braze) for o in r.json["attributes"]]


def test_backfill_enters_exits_and_empty_audience(
    braze_sandbox: Any, store_url: str, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, store_url)
    users = [f"u{i}" for i in range(100)]
    run1 = {"a": users[:80], "b": users[40:], "c": ["u1", "u2"]}
    states, summary = h.run_target(cfg, h.audience_msgs(run1))
    expected1: dict[str, list[str]] = {}
    for aud, members in run1.items():
        for u in members:
            expected1.setdefault(u, []).append(aud)
    assert h.segments(b) == {u: sorted(v) for u, v in expected1.items()}
    # One object per user, at most 75 per request, minimum number of requests/values.
    reqs = h.track_requests(b)
    assert len(reqs) == math.ceil(100 / 75)
    assert all(len(r.json["attributes"]) <= 75 for r in reqs)
    objs = _objects(b, h)
    assert len(objs) == 100 == len({o["external_id"] for o in objs})
    assert b.stats["data_points"] == sum(len(v) for v in run1.values())
    assert states == [{"bookmarks": {"audience_members": {"run": 1}}}]
    assert summary.audiences["a"].added == 80
    assert summary.values_sent == b.stats["data_points"]

    # Run 2: u0..u9 leave a, u100 enters a and b, audience c empties.
    b.clear_requests()
    run2 = {"a": [*users[10:80], "u100"], "b": [*users[40:], "u100"], "c": []}
    _, summary = h.run_target(cfg, h.audience_msgs(run2))
    expected2: dict[str, list[str]] = {}
    for aud, members in run2.items():
        for u in members:
            expected2.setdefault(u, []).append(aud)
    assert h.segments(b) == {u: sorted(v) for u, v in expected2.items()}
    objs = _objects(b, h)
    by_user = {o["external_id"]: o["lytics_segments"] for o in objs}
    assert by_user["u100"] == {"add": ["a", "b"]}
    assert by_user["u1"] == {"remove": ["a", "c"]}
    assert len(objs) == 11  # u0..u9 and u100: only users with changes
    assert summary.audiences["a"].removed == 10
    assert summary.audiences["a"].unchanged == 70
    assert summary.audiences["c"].removed == 2

    # Run 3: unchanged input -> zero requests.
    b.clear_requests()
    states, summary = h.run_target(cfg, h.audience_msgs(run2))
    assert h.track_requests(b) == []
    assert summary.audiences["b"].unchanged == 61
    assert states  # nothing to confirm: STATE still emitted


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
    with pytest.raises(Exception, match="parse"):
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


def test_state_only_after_confirmation(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    seen_at_state: list[int] = []

    class Spy(io.StringIO):
        def write(self, s: str) -> int:
            if s.strip():
                seen_at_state.append(len(b.users()))
            return super().write(s)

    msgs = [*h.schema_msgs(), h.member("a", "u1"), h.state(1), h.member("a", "u2"), h.state(2)]
    spy = Spy()
    with contextlib.redirect_stdout(spy):
        TargetBrazeAudience(config=cfg).listen(io.StringIO(h.to_lines(msgs)))
    assert spy.getvalue().strip() == '{"bookmarks": {"audience_members": {"run": 2}}}'
    assert seen_at_state == [2]


@pytest.mark.parametrize(
    ("status", "setting"), [(401, "api_key"), (403, "api_key"), (404, "rest_endpoint")]
)
def test_auth_errors_fail_fast_naming_setting(
    braze_sandbox: Any,
    tmp_path: Path,
    h: Any,
    status: int,
    setting: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = braze_sandbox
    secret = "very-secret-rest-key-9f8e7d"
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), api_key=secret)
    if status == 404:
        cfg["rest_endpoint"] = b.url + "/wrong-prefix"
        cfg["api_key"] = h.API_KEY
    elif status == 403:
        b.fail_next(1, status=403)
        cfg["api_key"] = h.API_KEY
    users = [f"u{i}" for i in range(400)]
    with caplog.at_level(logging.DEBUG), pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, h.audience_msgs({"a": users}))
    assert setting in str(err.value)
    assert secret not in str(err.value)
    assert secret not in caplog.text
    assert len(h.track_requests(b)) <= 8  # fail fast: no retry storm
    # Requests already in flight may have succeeded: the store holds exactly those.
    st = MembershipStore(cfg["store_url"])
    held = {u for (_a, u), present in st.memberships().items() if present}
    assert held == set(h.segments(b))
    if status != 403:
        assert held == set()
    st.close()


@pytest.mark.parametrize("where", ["refused", "dns"])
def test_unreachable_rest_endpoint_fails_at_once_naming_the_setting(
    tmp_path: Path, h: Any, where: str
) -> None:
    import socket
    import time

    if where == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
    else:
        url = "http://rest.braze.invalid"
    cfg = {
        "api_key": h.API_KEY,
        "rest_endpoint": url,
        "store_url": str(tmp_path / "s.sqlite"),
        "retry_backoff_base": 1.0,  # 5 retries from 1 s: half a minute if it retried
    }
    started = time.monotonic()
    with pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert time.monotonic() - started < 15
    assert "`rest_endpoint`" in str(err.value)
    assert url in str(err.value)
    st = MembershipStore(cfg["store_url"])
    assert not any(st.memberships().values())  # nothing recorded as sent
    st.close()


def test_update_existing_only(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    b.add_user("u1")
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), update_existing_only=True)
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert h.segments(b) == {"u1": ["a"]}
    assert b.user("u2") is None
    assert all(o["_update_existing_only"] is True for o in _objects(b, h))


def test_user_alias_and_braze_id_identifiers(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(
        b, str(tmp_path / "s.sqlite"), identifier_field="user_alias", alias_label="lytics_uid"
    )
    h.run_target(cfg, h.audience_msgs({"a": ["x1"]}))
    assert _objects(b, h) == [
        {
            "user_alias": {"alias_name": "x1", "alias_label": "lytics_uid"},
            "_update_existing_only": False,
            "lytics_segments": {"add": ["a"]},
        }
    ]
    assert b.users()["alias:lytics_uid:x1"]["lytics_segments"] == ["a"]
    # A store built for user_alias refuses another identifier.
    with pytest.raises(Exception, match="identifier_field"):
        h.run_target({**cfg, "identifier_field": "braze_id"}, h.audience_msgs({"a": ["x1"]}))
    b.clear_requests()
    cfg2 = h.braze_config(b, str(tmp_path / "s2.sqlite"), identifier_field="braze_id")
    h.run_target(cfg2, h.audience_msgs({"a": ["bz1"]}))
    assert _objects(b, h) == [{"braze_id": "bz1", "lytics_segments": {"add": ["a"]}}]


def test_backfill_false_silent_baseline(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), backfill_existing_users=False)
    # Truncated first run: no baseline, nothing sent.
    h.run_target(cfg, [*h.schema_msgs(), h.member("a", "u1")])
    assert h.track_requests(b) == []
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert h.track_requests(b) == []
    assert summary.audiences["a"].baseline == 2
    h.run_target(cfg, h.audience_msgs({"a": ["u2", "u3"]}))
    assert _objects(b, h) == [
        {"external_id": "u1", "lytics_segments": {"remove": ["a"]}},
        {"external_id": "u3", "lytics_segments": {"add": ["a"]}},
    ]
    assert h.segments(b) == {"u3": ["a"]}


def test_explicit_delta_and_stream_name_audience(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    schema = {"type": "object", "properties": {"external_id": {"type": "string"}}}
    dschema = {
        "type": "object",
        "properties": {
            "external_id": {"type": "string"},
            "add": {"type": "array", "items": {"type": "string"}},
            "remove": {"type": "array", "items": {"type": "string"}},
        },
    }
    msgs = [
        {"type": "SCHEMA", "stream": "vip", "schema": schema, "key_properties": []},
        {"type": "SCHEMA", "stream": "deltas", "schema": dschema, "key_properties": []},
        {
            "type": "SCHEMA",
            "stream": "audiences",
            "schema": {"type": "object", "properties": {}},
            "key_properties": [],
        },
        {"type": "RECORD", "stream": "audiences", "record": {"id": "x", "slug_name": "vip"}},
        {"type": "RECORD", "stream": "vip", "record": {"external_id": "u1"}},
        {"type": "RECORD", "stream": "deltas", "record": {"external_id": "u2", "add": ["a", "b"]}},
        {"type": "RECORD", "stream": "deltas", "record": {"external_id": "u2", "remove": ["b"]}},
        {"type": "RECORD", "stream": "deltas", "record": {"external_id": "u1", "remove": ["old"]}},
    ]
    h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["vip"], "u2": ["a"]}
    assert {o["external_id"]: o["lytics_segments"] for o in _objects(b, h)} == {
        "u1": {"add": ["vip"], "remove": ["old"]},
        "u2": {"add": ["a"], "remove": ["b"]},
    }


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


def test_end_to_end_on_postgresql(braze_sandbox: Any, pg_store_url: str, h: Any) -> None:
    b = braze_sandbox
    # max_removal_fraction=1: audience b really empties (50 of 50 members).
    cfg = h.braze_config(b, pg_store_url, max_concurrency=3, batch_size=20, max_removal_fraction=1)
    users = [f"u{i}" for i in range(150)]
    h.run_target(cfg, h.audience_msgs({"a": users, "b": users[:50]}))
    assert len(h.track_requests(b)) == math.ceil(150 / 20)
    h.run_target(cfg, h.audience_msgs({"a": users[50:], "b": []}))
    assert h.segments(b) == {u: ["a"] for u in users[50:]}
    b.clear_requests()
    h.run_target(cfg, h.audience_msgs({"a": users[50:], "b": []}))
    assert h.track_requests(b) == []


def test_stream_maps_use_the_sdk_path_in_order(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    # With stream maps the SDK's record path (map transform, sink) feeds the same pipeline.
    b = braze_sandbox
    maps = {"audience_members": {"email": "__NULL__"}}
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), stream_maps=maps)
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"], "b": ["u2"]}))
    assert h.segments(b) == {"u1": ["a"], "u2": ["a", "b"]}
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["u2"], "b": ["u2"]}))
    assert h.segments(b) == {"u2": ["a", "b"]}
    assert summary.audiences["a"].removed == 1
    bad = h.member("a", "u3")
    bad["record"]["external_id"] = 42
    with pytest.raises(InvalidRecord):
        h.run_target(cfg, [*h.schema_msgs(), bad])


# What `meltano config target-braze-audience test` pipes into the loader (meltano 4.4,
# core/plugin_test_service.py LoaderTestService._generate_test_messages).
MELTANO_TEST_MSGS: list[dict[str, Any]] = [
    {
        "type": "SCHEMA",
        "stream": "meltano_test_stream",
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        "key_properties": ["id"],
    },
    {
        "type": "RECORD",
        "stream": "meltano_test_stream",
        "record": {"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"},
    },
    {"type": "STATE", "value": {"bookmarks": {"meltano_test_stream": {"last_record": 1}}}},
]


def test_meltano_config_test_checks_the_key_and_writes_nothing(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    store = tmp_path / "store.sqlite"
    cfg = h.braze_config(b, str(store))
    h.run_target(cfg, MELTANO_TEST_MSGS)
    assert b.users() == {}
    (req,) = h.track_requests(b)
    assert req.json == {"attributes": []}  # authenticated, nothing to write
    assert not store.exists()  # no membership store created by a connection test


@pytest.mark.parametrize("bad", ["api_key", "rest_endpoint"])
def test_meltano_config_test_fails_naming_the_setting(
    braze_sandbox: Any, tmp_path: Path, h: Any, bad: str
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "store.sqlite"))
    if bad == "api_key":
        cfg["api_key"] = "wrong-key"
    else:
        cfg["rest_endpoint"] = b.url + "/v2"
    with pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, MELTANO_TEST_MSGS)
    assert f"`{bad}`" in str(err.value)
    assert b.users() == {}


def test_default_store_file_is_announced_loudly_once(
    braze_sandbox: Any,
    tmp_path: Path,
    h: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = h.braze_config(braze_sandbox, "")
    del cfg["store_url"]
    with caplog.at_level(logging.WARNING):
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    default = tmp_path / ".braze_audience_store.sqlite"
    assert default.exists()
    warnings = [r.getMessage() for r in caplog.records if "NO store_url SET" in r.getMessage()]
    assert len(warnings) == 1
    assert str(default) in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    assert "NO store_url SET" not in caplog.text  # the file exists now: no more warning


def test_require_store_url_refuses_the_default_file(
    braze_sandbox: Any, tmp_path: Path, h: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from target_braze_audience.target import StoreUrlRequiredError

    monkeypatch.chdir(tmp_path)
    cfg = {**h.braze_config(braze_sandbox, ""), "require_store_url": True}
    del cfg["store_url"]
    with pytest.raises(StoreUrlRequiredError) as err:
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    assert "store_url" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no SQLite file created
    assert h.track_requests(braze_sandbox) == []
    # a connection test (meltano config test) still works: it opens no store
    h.run_target(cfg, MELTANO_TEST_MSGS)
    assert list(tmp_path.iterdir()) == []
