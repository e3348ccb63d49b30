"""Audience scans against the Lytics sandbox: paging, snapshots, ids, cursor expiry and restarts,
concurrent scans, profile fields."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from singer_sdk.exceptions import FatalAPIError
from tap_lytics_audience.client import LyticsCursorPaginator
from tap_lytics_testkit import members, scan_requests


@pytest.mark.parametrize("prefetch", [0, 3])
@pytest.mark.parametrize("cursor_key", ["_next", "next"])
def test_scan_pages_to_the_end_with_either_cursor_key(
    lytics_sandbox, tap_runner, make_config, prefetch, cursor_key
):
    lytics_sandbox.cursor_key = cursor_key
    aid = lytics_sandbox.generate_members("big", 250, prefix="b")
    run = tap_runner(
        make_config(
            lytics_sandbox.url,
            audiences=["big"],
            page_size=100,
            prefetch_pages=prefetch,
            fields=["email"],
        )
    )
    recs = run.records["audience_members"]
    assert [r["external_id"] for r in recs] == [f"b{i}" for i in range(250)]
    assert {r["audience_id"] for r in recs} == {aid}
    assert {r["audience_slug"] for r in recs} == {"big"}
    assert recs[7]["lytics_uid"] == "lu7"
    assert recs[7]["email"] == "b7@example.com"
    assert len({r["scan_id"] for r in recs}) == 1
    reqs = scan_requests(lytics_sandbox, aid)
    assert len(reqs) == 3  # 100 + 100 + 50, stopped when the cursor was absent
    assert [r.query.get("limit") for r in reqs] == ["100"] * 3
    assert "start" not in reqs[0].query
    assert reqs[1].query["start"]
    assert reqs[2].query["start"] != reqs[1].query["start"]
    assert reqs[0].query["fields"] == "braze_id,_uid,email"
    assert all(r.headers["authorization"] == "sandbox-lytics-token" for r in reqs)
    (snap,) = run.records["audience_snapshots"]
    assert snap["audience_id"] == aid
    assert snap["member_count"] == 250
    assert snap["members_without_id"] == 0
    assert snap["scan_id"] == recs[0]["scan_id"]
    assert snap["started_at"] <= snap["completed_at"]


def test_snapshot_comes_after_all_members_of_its_audience(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("a", members=members(30, "a"))
    lytics_sandbox.add_audience("b", members=members(20, "b"))
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["a", "b"], page_size=7))
    order = [
        (m["stream"], m["record"]["audience_slug"])
        for m in run.messages
        if m["type"] == "RECORD" and m["stream"] != "audiences"
    ]
    for slug, count in (("a", 30), ("b", 20)):
        snap_at = order.index(("audience_snapshots", slug))
        member_positions = [i for i, o in enumerate(order) if o == ("audience_members", slug)]
        assert len(member_positions) == count
        assert max(member_positions) < snap_at
    snaps = run.records["audience_snapshots"]
    assert Counter(s["audience_slug"] for s in snaps) == {"a": 1, "b": 1}
    # the stream order is members, snapshots, audiences (the SDK syncs streams by name)
    streams = list(dict.fromkeys(m["stream"] for m in run.messages if m["type"] == "RECORD"))
    assert streams == ["audience_members", "audience_snapshots", "audiences"]


def test_members_without_id_are_emitted_with_their_uid_counted_and_warned(
    lytics_sandbox, tap_runner, make_config, caplog
):
    profiles = [
        {"_uid": "l1", "braze_id": "x1"},
        {"_uid": "l2"},
        {"_uid": "l3", "braze_id": ""},
        {"_uid": "l4", "braze_id": "   "},
        {"_uid": "l5", "braze_id": None},
        {"braze_id": 42},
        {"braze_id": " ", "email": "nobody@x.io"},  # neither an id nor a uid: not emitted
        {"_uid": "", "braze_id": None},  # an empty uid is no uid either
    ]
    lytics_sandbox.add_audience("mixed", members=profiles)
    with caplog.at_level(logging.INFO):
        run = tap_runner(make_config(lytics_sandbox.url, audiences=["mixed"]))
    recs = run.records["audience_members"]
    assert [(r["member_key"], r["external_id"], r["lytics_uid"]) for r in recs] == [
        ("x1", "x1", "l1"),
        ("lytics_uid:l2", None, "l2"),
        ("lytics_uid:l3", None, "l3"),
        ("lytics_uid:l4", None, "l4"),
        ("lytics_uid:l5", None, "l5"),
        ("42", "42", None),
    ]
    (schema,) = [
        m for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == "audience_members"
    ]
    assert schema["key_properties"] == ["audience_id", "member_key"]
    assert "member_key" in schema["schema"]["required"]
    # Lytics' total (8) still matches the profiles served, so the snapshot is emitted; it
    # counts the 6 records emitted, as a target receiving them does.
    (snap,) = run.records["audience_snapshots"]
    assert (snap["member_count"], snap["members_without_id"]) == (6, 4)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "kept: 4 members without `braze_id`" in m
        and "2 without `braze_id` or `_uid` not emitted" in m
        for m in messages
    )
    assert any(
        "6 members emitted" in m and "2 profiles without `braze_id` or `_uid` not emitted" in m
        for m in messages
    )
    # More than half lack the field: a warning naming the field, the audience and the
    # fields the profiles do have.
    assert any(
        "6 of its 8 members have no `braze_id`" in m and "mixed" in m and "_uid, braze_id" in m
        for m in messages
    )


def test_custom_external_id_field(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience(
        "e", members=[{"email": "a@x.io", "braze_id": "b"}, {"_uid": "l2", "braze_id": "c"}]
    )
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["e"], external_id_field="email"))
    assert [r["external_id"] for r in run.records["audience_members"]] == ["a@x.io", None]
    assert run.records["audience_snapshots"][0]["members_without_id"] == 1


def test_audiences_accepts_ids_and_merges_duplicates(lytics_sandbox, tap_runner, make_config):
    aid = lytics_sandbox.add_audience("by_id", members=members(5))
    run = tap_runner(make_config(lytics_sandbox.url, audiences=[aid, "by_id"]))
    assert len(run.records["audience_members"]) == 5
    assert len(run.records["audience_snapshots"]) == 1
    assert len(scan_requests(lytics_sandbox)) == 1


def test_empty_audience_gets_a_zero_snapshot(lytics_sandbox, tap_runner, make_config):
    aid = lytics_sandbox.add_audience("nobody", members=[])
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["nobody"]))
    assert run.records["audience_members"] == []
    (snap,) = run.records["audience_snapshots"]
    assert (snap["audience_id"], snap["member_count"], snap["members_without_id"]) == (aid, 0, 0)
    assert len(scan_requests(lytics_sandbox, aid)) == 1


def test_no_configured_audiences_scans_nothing(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("a", members=members(3))
    run = tap_runner(make_config(lytics_sandbox.url))
    assert [r["slug_name"] for r in run.records["audiences"]] == ["a"]
    assert run.records["audience_members"] == []
    assert run.records["audience_snapshots"] == []
    assert scan_requests(lytics_sandbox) == []


@pytest.mark.parametrize("prefetch", [0, 4])
def test_expired_cursor_restarts_the_scan_with_a_new_scan_id(
    lytics_sandbox, tap_runner, make_config, caplog, prefetch
):
    aid = lytics_sandbox.generate_members("exp", 95)
    calls = {"n": 0}
    original = LyticsCursorPaginator.get_next

    def expire_after_page_two(self, response):
        token = original(self, response)
        calls["n"] += 1
        if calls["n"] == 2:
            lytics_sandbox.expire_cursors()
        return token

    config = make_config(
        lytics_sandbox.url, audiences=["exp"], page_size=20, prefetch_pages=prefetch
    )
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setattr(LyticsCursorPaginator, "get_next", expire_after_page_two)
        run = tap_runner(config)
    recs = run.records["audience_members"]
    scan_ids = list(dict.fromkeys(r["scan_id"] for r in recs))
    assert len(scan_ids) == 2
    first, second = scan_ids
    assert sum(r["scan_id"] == first for r in recs) == 40  # two pages before the cursor expired
    assert [r["external_id"] for r in recs if r["scan_id"] == second] == [
        f"user{i}" for i in range(95)
    ]
    (snap,) = run.records["audience_snapshots"]
    assert (snap["scan_id"], snap["member_count"]) == (second, 95)
    statuses = [r.status for r in scan_requests(lytics_sandbox, aid)]
    assert statuses.count(400) == 1
    assert any(
        "expired" in r.getMessage() and "restarting" in r.getMessage() for r in caplog.records
    )


def test_undocumented_400_on_a_cursor_request_also_restarts_the_scan(
    lytics_sandbox, tap_runner, make_config
):
    # Lytics documents no error text for a stale cursor: any 400 answering a request that
    # carried `start` restarts the scan, whatever the message says.
    import sandbox.lytics as sandbox_lytics

    aid = lytics_sandbox.generate_members("other", 30)
    original = LyticsCursorPaginator.get_next
    calls = {"n": 0}

    def expire_once(self, response):
        token = original(self, response)
        calls["n"] += 1
        if calls["n"] == 1:
            lytics_sandbox.expire_cursors()
        return token

    config = make_config(lytics_sandbox.url, audiences=["other"], page_size=10, prefetch_pages=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sandbox_lytics, "CURSOR_ERROR", "Bad Request: start parameter not found")
        mp.setattr(LyticsCursorPaginator, "get_next", expire_once)
        run = tap_runner(config)
    recs = run.records["audience_members"]
    scan_ids = list(dict.fromkeys(r["scan_id"] for r in recs))
    assert len(scan_ids) == 2
    (snap,) = run.records["audience_snapshots"]
    assert (snap["scan_id"], snap["member_count"]) == (scan_ids[1], 30)
    assert [r.status for r in scan_requests(lytics_sandbox, aid)].count(400) == 1


def test_cursor_expiring_forever_fails_after_bounded_restarts(
    lytics_sandbox, tap_runner, make_config
):
    aid = lytics_sandbox.generate_members("flaky", 50)
    original = LyticsCursorPaginator.get_next

    def always_expire(self, response):
        token = original(self, response)
        lytics_sandbox.expire_cursors()
        return token

    config = make_config(lytics_sandbox.url, audiences=["flaky"], page_size=10, max_scan_restarts=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LyticsCursorPaginator, "get_next", always_expire)
        run = tap_runner(config, expect_error=True)
    assert isinstance(run.error, FatalAPIError)
    assert "max_scan_restarts" in str(run.error)
    assert run.records["audience_snapshots"] == []
    assert [r.status for r in scan_requests(lytics_sandbox, aid)].count(400) == 3


def test_membership_change_mid_scan_invalidates_cursor_and_restarts(
    lytics_sandbox, tap_runner, make_config
):
    lytics_sandbox.add_audience("live", members=members(30, "old"))
    original = LyticsCursorPaginator.get_next
    calls = {"n": 0}

    def change_after_first_page(self, response):
        token = original(self, response)
        calls["n"] += 1
        if calls["n"] == 1:
            lytics_sandbox.set_members("live", members(25, "new"))
        return token

    config = make_config(
        lytics_sandbox.url, audiences=["live"], page_size=10, prefetch_pages=0, scan_concurrency=1
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LyticsCursorPaginator, "get_next", change_after_first_page)
        run = tap_runner(config)
    (snap,) = run.records["audience_snapshots"]
    final = [
        r["external_id"] for r in run.records["audience_members"] if r["scan_id"] == snap["scan_id"]
    ]
    assert final == [f"new{i}" for i in range(25)]
    assert snap["member_count"] == 25


def test_profile_fields_are_rendered_as_nullable_strings(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience(
        "f",
        members=[
            {"braze_id": "a", "segments": ["x", "y"], "score": 3, "vip": True, "email": "a@x.io"},
            {"braze_id": "b"},
        ],
    )
    run = tap_runner(
        make_config(
            lytics_sandbox.url, audiences=["f"], fields=["segments", "score", "vip", "email"]
        )
    )
    a, b = run.records["audience_members"]
    assert (a["segments"], a["score"], a["vip"], a["email"]) == ('["x","y"]', "3", "true", "a@x.io")
    assert (b["segments"], b["score"], b["vip"], b["email"]) == (None, None, None, None)


@pytest.mark.parametrize(("concurrency", "prefetch"), [(1, 0), (1, 2), (3, 1), (5, 4)])
def test_concurrent_scans_emit_every_audience_completely(
    lytics_sandbox, tap_runner, make_config, concurrency, prefetch
):
    sizes = {"c0": 230, "c1": 0, "c2": 99, "c3": 101, "c4": 1}
    ids = {
        slug: lytics_sandbox.generate_members(slug, n, prefix=f"{slug}_")
        for slug, n in sizes.items()
    }
    run = tap_runner(
        make_config(
            lytics_sandbox.url,
            audiences=list(sizes),
            page_size=50,
            scan_concurrency=concurrency,
            prefetch_pages=prefetch,
        )
    )
    recs = run.records["audience_members"]
    for slug, n in sizes.items():
        mine = [r for r in recs if r["audience_slug"] == slug]
        assert [r["external_id"] for r in mine] == [f"{slug}_{i}" for i in range(n)]
        assert {r["audience_id"] for r in mine} <= {ids[slug]}
    snaps = {s["audience_slug"]: s for s in run.records["audience_snapshots"]}
    assert {k: v["member_count"] for k, v in snaps.items()} == sizes
    for slug in sizes:
        assert {r["scan_id"] for r in recs if r["audience_slug"] == slug} <= {
            snaps[slug]["scan_id"]
        }
    if concurrency == 1:  # one scan at a time: requests grouped by audience, in config order
        paths = [r.path for r in scan_requests(lytics_sandbox)]
        assert list(dict.fromkeys(paths)) == [f"/api/segment/{ids[s]}/scan" for s in sizes]
        assert paths == sorted(paths, key=list(dict.fromkeys(paths)).index)
