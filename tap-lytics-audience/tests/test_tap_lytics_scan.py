"""Behaviour of tap-lytics-audience against the Lytics sandbox."""

from __future__ import annotations

import datetime
import logging
from collections import Counter

import pytest
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from tap_lytics_audience.client import LyticsAuthError, LyticsCursorPaginator
from tap_lytics_audience.streams import AudienceMembersStream
from tap_lytics_audience.tap import TapLyticsAudience

from sandbox import LyticsSandbox


def parse(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def scan_requests(sandbox, audience_id: str | None = None):
    reqs = [r for r in sandbox.requests_snapshot() if r.path.endswith("/scan")]
    if audience_id:
        reqs = [r for r in reqs if r.path == f"/api/segment/{audience_id}/scan"]
    return reqs


def members(n: int, prefix: str = "u") -> list[dict]:
    return [
        {"_uid": f"lu{i}", "braze_id": f"{prefix}{i}", "email": f"{prefix}{i}@x.io"}
        for i in range(n)
    ]


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


def test_unknown_audience_is_a_configuration_error_listing_slugs(
    lytics_sandbox, tap_runner, make_config
):
    lytics_sandbox.add_audience("high_value", members=members(3))
    lytics_sandbox.add_audience("churn_risk", members=[])
    run = tap_runner(
        make_config(lytics_sandbox.url, audiences=["high_value", "nope"]), expect_error=True
    )
    assert isinstance(run.error, ConfigValidationError)
    text = str(run.error)
    assert "'nope'" in text
    assert "`audiences`" in text
    assert "churn_risk" in text
    assert "high_value" in text
    assert scan_requests(lytics_sandbox) == []
    assert run.records["audience_snapshots"] == []


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


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_errors_are_retried(lytics_sandbox, tap_runner, make_config, status):
    aid = lytics_sandbox.generate_members("r", 120)
    lytics_sandbox.fail_next(2, status=status, path_prefix=f"/api/segment/{aid}/scan")
    lytics_sandbox.fail_next(1, status=status, path_prefix="/api/segment")
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["r"], max_retries=3))
    assert len(run.records["audience_members"]) == 120
    assert run.records["audience_snapshots"][0]["member_count"] == 120
    statuses = [r.status for r in lytics_sandbox.requests_snapshot()]
    assert statuses.count(status) == 3
    assert lytics_sandbox.stats_snapshot()["faults"] == 3


def test_rate_limit_429_from_the_server_is_retried(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.generate_members("rl", 500)
    lytics_sandbox.rate_limit = 2
    lytics_sandbox.rate_limit_window = 0.2
    run = tap_runner(
        make_config(
            lytics_sandbox.url,
            audiences=["rl"],
            max_retries=8,
            retry_backoff_base=0.05,
            retry_backoff_max=0.3,
        )
    )
    assert len(run.records["audience_members"]) == 500
    assert lytics_sandbox.stats_snapshot()["rate_limited"] > 0
    assert run.records["audience_snapshots"][0]["member_count"] == 500


def test_retries_are_bounded_and_a_crash_emits_no_snapshot(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("done_first", members=members(3))
    aid = lytics_sandbox.generate_members("crash", 500)
    config = make_config(
        lytics_sandbox.url,
        audiences=["done_first", "crash"],
        page_size=100,
        max_retries=2,
        prefetch_pages=2,
    )
    calls = {"n": 0}
    original = LyticsCursorPaginator.get_next

    def failing_after_two_pages(self, response):
        token = original(self, response)
        if response.url.split("?")[0].endswith(f"{aid}/scan"):
            calls["n"] += 1
            if calls["n"] == 2:  # every later request of this scan fails with 500
                lytics_sandbox.fail_next(1000, status=500, path_prefix=f"/api/segment/{aid}/scan")
        return token

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LyticsCursorPaginator, "get_next", failing_after_two_pages)
        run = tap_runner(config, expect_error=True)
    assert isinstance(run.error, RetriableAPIError)
    crash_reqs = scan_requests(lytics_sandbox, aid)
    assert len(crash_reqs) == 2 + 3  # two pages, then 1 + max_retries attempts
    crashed = [r for r in run.records["audience_members"] if r["audience_id"] == aid]
    assert len(crashed) == 200
    done_first = [r for r in run.records["audience_members"] if r["audience_slug"] == "done_first"]
    assert len(done_first) == 3  # scanned to the end, yet the failed run emits no snapshot
    assert run.records["audience_snapshots"] == []
    assert "sandbox-lytics-token" not in str(run.error)


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


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_fail_fast_without_leaking_the_token(
    lytics_sandbox, tap_runner, make_config, caplog, status
):
    lytics_sandbox.add_audience("a", members=members(3))
    if status == 401:
        config = make_config(
            lytics_sandbox.url, audiences=["a"], api_token="wrong-SECRET-token-xyz"
        )
    else:
        config = make_config(lytics_sandbox.url, audiences=["a"])
        lytics_sandbox.fail_next(1, status=403, path_prefix="/api/segment")
    with caplog.at_level(logging.DEBUG):
        run = tap_runner(config, expect_error=True)
    assert isinstance(run.error, LyticsAuthError)
    assert "`api_token`" in str(run.error)
    assert f"HTTP {status}" in str(run.error)
    assert len(lytics_sandbox.requests_snapshot()) == 1  # no retry
    secret = config["api_token"]
    assert secret not in str(run.error)
    assert secret not in run.stdout
    assert secret not in caplog.text


def test_audiences_stream_is_incremental_on_updated(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("one", members=members(2))
    lytics_sandbox.add_audience("two", members=members(2))
    lytics_sandbox.add_audience("three", members=members(2))
    run1 = tap_runner(make_config(lytics_sandbox.url))
    assert sorted(r["slug_name"] for r in run1.records["audiences"]) == ["one", "three", "two"]
    final = run1.states[-1]
    bookmark = final["bookmarks"]["audiences"]
    newest = max(r["updated"] for r in run1.records["audiences"])
    assert bookmark["replication_key"] == "updated"
    assert parse(bookmark["replication_key_value"]) == parse(newest)
    assert "progress_markers" not in bookmark

    run2 = tap_runner(make_config(lytics_sandbox.url), state=final)
    assert run2.records["audiences"] == []
    assert parse(run2.states[-1]["bookmarks"]["audiences"]["replication_key_value"]) == parse(
        newest
    )

    lytics_sandbox.set_members("two", members(4))  # bumps `updated`
    run3 = tap_runner(make_config(lytics_sandbox.url), state=run2.states[-1])
    assert [r["slug_name"] for r in run3.records["audiences"]] == ["two"]
    assert parse(run3.states[-1]["bookmarks"]["audiences"]["replication_key_value"]) > parse(newest)

    # configured audiences are scanned on every run, whatever the audiences bookmark
    run4 = tap_runner(make_config(lytics_sandbox.url, audiences=["one"]), state=run3.states[-1])
    assert run4.records["audiences"] == []
    assert len(run4.records["audience_members"]) == 2
    assert run4.records["audience_snapshots"][0]["member_count"] == 2


def test_audience_records_carry_the_segment_definition(lytics_sandbox, tap_runner, make_config):
    aid = lytics_sandbox.add_audience(
        "hv", name="High value", description="big spenders", members=[]
    )
    run = tap_runner(make_config(lytics_sandbox.url))
    (rec,) = run.records["audiences"]
    assert rec["id"] == aid
    assert (rec["slug_name"], rec["name"], rec["description"], rec["table"]) == (
        "hv",
        "High value",
        "big spenders",
        "user",
    )
    assert rec["segment_ql"]
    assert rec["created"]
    assert rec["updated"]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"page_size": 500}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"fields": ["email", "external_id"]}, "fields"),
        ({"external_id_field": " "}, "external_id_field"),
    ],
)
def test_bad_settings_are_clear_errors(make_config, override, fragment):
    with pytest.raises(ConfigValidationError) as err:
        TapLyticsAudience(config=make_config("http://127.0.0.1:9", **override))
    assert fragment in str(err.value)


def test_retry_after_is_honoured_by_the_wait_generator(make_config):
    import requests as rq

    tap = TapLyticsAudience(
        config=make_config("http://127.0.0.1:9", retry_backoff_base=0.5, retry_backoff_max=4)
    )
    stream = tap.streams["audience_members"]
    assert isinstance(stream, AudienceMembersStream)
    gen = stream.backoff_wait_generator()
    gen.send(None)

    def exc_with(headers):
        resp = rq.Response()
        resp.status_code = 429
        resp.headers.update(headers)
        return RetriableAPIError("429", resp)

    assert gen.send(exc_with({})) == 0.5
    assert gen.send(exc_with({"Retry-After": "3"})) == 3.0
    assert gen.send(exc_with({})) == 2.0
    assert gen.send(exc_with({})) == 4.0
    assert gen.send(exc_with({})) == 4.0  # capped
    for value in (1.0, 3.0):
        jittered = [stream.backoff_jitter(value) for _ in range(50)]
        assert all(value <= j <= value * 1.25 for j in jittered)
    assert stream.backoff_max_tries() == 6


def test_request_timeout_accepts_fractional_seconds(make_config):
    tap = TapLyticsAudience(config=make_config("http://127.0.0.1:9", request_timeout=2.5))
    assert tap.streams["audience_members"].timeout == 2.5


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


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"http://127.0.0.1:{_closed_port()}", "the connection was refused"),
        ("http://lytics-api.invalid", "the host name does not resolve"),
    ],
    ids=["refused", "dns"],
)
def test_unreachable_api_url_fails_at_once_naming_the_setting(tap_runner, make_config, url, why):
    import time

    # with the default retries (5, from 1 s doubling) this used to take about a minute
    config = make_config(url, audiences=["a"], retry_backoff_base=1.0, retry_backoff_max=60)
    started = time.monotonic()
    run = tap_runner(config, expect_error=True)
    assert time.monotonic() - started < 10
    assert "`api_url`" in str(run.error)
    assert why in str(run.error)


def test_wrong_base_path_404_names_api_url(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("a", members=members(3))
    run = tap_runner(make_config(lytics_sandbox.url + "/v2", audiences=["a"]), expect_error=True)
    assert "`api_url`" in str(run.error)
    assert "/v2/api/segment" in str(run.error)
    assert len(lytics_sandbox.requests_snapshot()) == 1  # not retried


def test_network_errors_after_first_contact_are_still_retried(
    lytics_sandbox, tap_runner, make_config, monkeypatch
):
    """A refused connection once Lytics answered is transient (e.g. a restart): retried."""
    import requests
    from tap_lytics_audience.client import LyticsStream

    lytics_sandbox.add_audience("a", members=members(3))
    real_send = LyticsStream.send_on
    calls = {"n": 0}

    def flaky(self, session, prepared, context):  # first scan request: refused once
        calls["n"] += 1
        if calls["n"] == 1:
            raise requests.exceptions.ConnectionError(ConnectionRefusedError(111, "refused"))
        return real_send(self, session, prepared, context)

    monkeypatch.setattr(LyticsStream, "send_on", flaky)
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["a"]))
    assert calls["n"] >= 2
    assert run.records["audience_snapshots"][0]["member_count"] == 3


class TruncatingLyticsSandbox(LyticsSandbox):
    """Lytics emulator whose next `truncate` answers under `prefix` lose half their body.

    A transport fault (proxy, load balancer, dropped connection): Lytics documents nothing
    about it, so the tap must treat it as transient.
    """

    truncate = 0
    prefix = "/api/segment"

    def decorate(self, req, resp):
        status, body, headers = super().decorate(req, resp)
        if self.truncate and status == 200 and req.path.startswith(self.prefix):
            self.truncate -= 1
            body = body[: len(body) // 2]
        return status, body, headers


@pytest.mark.parametrize("where", ["list", "scan"])
def test_truncated_json_body_is_retried(tap_runner, make_config, where):
    with TruncatingLyticsSandbox() as sandbox:
        aid = sandbox.generate_members("t", 150)
        sandbox.prefix = f"/api/segment/{aid}/scan" if where == "scan" else "/api/segment"
        sandbox.truncate = 2
        run = tap_runner(make_config(sandbox.url, audiences=["t"], max_retries=3))
        assert sandbox.truncate == 0, "both truncated answers were served"
    assert len(run.records["audience_members"]) == 150
    assert run.records["audience_snapshots"][0]["member_count"] == 150


def test_truncated_json_body_fails_naming_the_path_after_bounded_retries(tap_runner, make_config):
    with TruncatingLyticsSandbox() as sandbox:
        aid = sandbox.generate_members("t", 150)
        sandbox.prefix = f"/api/segment/{aid}/scan"
        sandbox.truncate = 1000
        run = tap_runner(
            make_config(sandbox.url, audiences=["t"], max_retries=2), expect_error=True
        )
        scans = [r for r in sandbox.requests_snapshot() if r.path.endswith("/scan")]
    assert isinstance(run.error, RetriableAPIError)
    message = str(run.error)
    assert message.startswith(
        f"Lytics answered HTTP 200 on /api/segment/{aid}/scan with a truncated"
    )
    assert "`max_retries` (2)" in message
    assert len(scans) == 3  # 1 + max_retries attempts, then the run fails
    assert run.records["audience_snapshots"] == []  # a failed scan never completes
    assert "sandbox-lytics-token" not in message
