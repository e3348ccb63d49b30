"""What a run sends to Braze and keeps in the store: backfill, enters and exits, identifiers,
explicit deltas, stream maps, a PostgreSQL store (in-process runs against the Braze sandbox)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidRecord


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
