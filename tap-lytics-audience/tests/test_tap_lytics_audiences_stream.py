"""The `audiences` stream: incremental on `updated`, records carry the segment definition."""

from __future__ import annotations

from tap_lytics_testkit import members, parse


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
