"""Removal safeguards of tap-lytics-audience (issue 10 section 1): a snapshot is emitted only
for a scan that is verifiably the whole audience, and members without an id are kept."""

from __future__ import annotations

import logging

import pytest
from tap_lytics_audience.client import AudienceScanFailed
from tap_lytics_audience.streams import normalize_id


def members(n: int, prefix: str = "u") -> list[dict]:
    return [{"_uid": f"lu{i}", "braze_id": f"{prefix}{i}"} for i in range(n)]


def scan_statuses(sandbox, slug: str) -> list[int]:
    aid = sandbox.audience(slug)["id"]
    return [r.status for r in sandbox.requests_snapshot() if r.path == f"/api/segment/{aid}/scan"]


def snapshots(run) -> dict[str, dict]:
    return {s["audience_slug"]: s for s in run.records["audience_snapshots"]}


@pytest.mark.parametrize("kind", ["no_data", "null_data", "object_data"])
def test_a_malformed_page_is_retried_and_the_scan_completes(
    lytics_sandbox, tap_runner, make_config, kind
):
    lytics_sandbox.add_audience("a", members=members(25))
    lytics_sandbox.malformed_scan_pages(1, kind)
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["a"], page_size=10))
    assert snapshots(run)["a"]["member_count"] == 25
    assert lytics_sandbox.stats["malformed_pages"] == 1
    assert len(scan_statuses(lytics_sandbox, "a")) == 4  # 3 pages + the retried one


def test_a_page_malformed_after_retries_fails_the_run_without_its_snapshot(
    lytics_sandbox, tap_runner, make_config, caplog
):
    lytics_sandbox.add_audience("good", members=members(5, "g"))
    lytics_sandbox.add_audience("bad", members=members(30))
    config = make_config(
        lytics_sandbox.url,
        audiences=["good", "bad"],
        page_size=10,
        max_retries=2,
        scan_concurrency=1,
        prefetch_pages=0,
    )
    lytics_sandbox.malformed_scan_pages(1, "no_data")  # good's only page: retried, recovers
    original = lytics_sandbox._scan

    def bad_second_page(req, slug_or_id):
        if slug_or_id == lytics_sandbox.audience("bad")["id"] and req.query.get("start"):
            lytics_sandbox.malformed_scan_pages(1, "null_data")
        return original(req, slug_or_id)

    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.ERROR):
        mp.setattr(lytics_sandbox, "_scan", bad_second_page)
        run = tap_runner(config, expect_error=True)
    assert isinstance(run.error, AudienceScanFailed)
    assert "Audience bad" in str(run.error)
    assert "no `data`" in str(run.error) or "NoneType" in str(run.error)
    assert set(snapshots(run)) == {"good"}  # the other audience still got its snapshot
    assert scan_statuses(lytics_sandbox, "bad") == [200] * 4  # page 1, then 3 malformed tries


def test_a_wrong_external_id_field_fails_naming_field_audience_and_profile_fields(
    lytics_sandbox, tap_runner, make_config
):
    lytics_sandbox.add_audience(
        "vip",
        members=[{"_uid": f"lu{i}", "braze_id": f"u{i}", "email": f"{i}@x"} for i in range(7)],
    )
    run = tap_runner(
        make_config(lytics_sandbox.url, audiences=["vip"], external_id_field="brazeid"),
        expect_error=True,
    )
    assert isinstance(run.error, AudienceScanFailed)
    msg = str(run.error)
    assert "none of its 7 members has the field `brazeid`" in msg
    assert "Audience vip" in msg
    assert "_uid, braze_id, email" in msg
    assert run.records["audience_snapshots"] == []
    # The members are still emitted, without an id, so a target keeps what Braze has.
    assert {r["external_id"] for r in run.records["audience_members"]} == {None}
    assert [r["member_key"] for r in run.records["audience_members"]] == [
        f"lytics_uid:lu{i}" for i in range(7)
    ]


def test_a_silently_truncated_scan_detected_by_total_gets_no_snapshot(
    lytics_sandbox, tap_runner, make_config
):
    lytics_sandbox.add_audience("t", members=members(40))
    lytics_sandbox.truncate_scan("t", 25, report_total=True)
    run = tap_runner(
        make_config(lytics_sandbox.url, audiences=["t"], page_size=10, max_scan_restarts=1),
        expect_error=True,
    )
    assert "served 25 distinct profiles but Lytics' `total` says 40" in str(run.error)
    assert "`max_scan_restarts`=1" in str(run.error)
    assert run.records["audience_snapshots"] == []
    assert len({r["scan_id"] for r in run.records["audience_members"]}) == 2  # one restart


def test_membership_changing_during_the_scan_restarts_it(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("live", members=members(30))
    # lu0 leaves after the first page: the old scan would miss u10 and see total 30 -> 29.
    lytics_sandbox.edit_members_during_scan("live", 1, remove=["lu0"])
    run = tap_runner(
        make_config(
            lytics_sandbox.url,
            audiences=["live"],
            page_size=10,
            scan_concurrency=1,
            prefetch_pages=0,
        )
    )
    (snap,) = run.records["audience_snapshots"]
    final = [
        r["external_id"] for r in run.records["audience_members"] if r["scan_id"] == snap["scan_id"]
    ]
    assert final == [f"u{i}" for i in range(1, 30)]
    assert snap["member_count"] == 29


def test_a_member_served_twice_counts_once_and_the_hidden_miss_restarts_the_scan(
    lytics_sandbox, tap_runner, make_config
):
    lytics_sandbox.add_audience("shift", members=members(30))
    # After page 1, n1 joins at the front and u20 leaves: `total` stays 30, but the running
    # scan serves u9 twice and never n1.
    lytics_sandbox.edit_members_during_scan(
        "shift", 1, add=[{"_uid": "n1", "braze_id": "n1"}], remove=["lu20"]
    )
    run = tap_runner(
        make_config(
            lytics_sandbox.url,
            audiences=["shift"],
            page_size=10,
            scan_concurrency=1,
            prefetch_pages=0,
        )
    )
    recs = run.records["audience_members"]
    first, second = dict.fromkeys(r["scan_id"] for r in recs)
    first_ids = [r["external_id"] for r in recs if r["scan_id"] == first]
    assert first_ids.count("u9") == 1  # served twice, emitted once
    assert len(first_ids) == 29
    (snap,) = run.records["audience_snapshots"]
    assert snap["scan_id"] == second
    final = [r["external_id"] for r in recs if r["scan_id"] == second]
    assert final == ["n1"] + [f"u{i}" for i in range(30) if i != 20]
    assert snap["member_count"] == 30


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  u1 ", "u1"),
        (1500, "1500"),
        (1500.0, "1500"),
        (15.5, "15.5"),
        (["u1", "u1-old"], "u1"),
        (["", None, 7.0], "7"),
        ([], None),
        ([["nested"]], None),
        (True, None),
        ({"a": 1}, None),
        (float("nan"), None),
        ("", None),
    ],
)
def test_id_normalisation_rule(raw, expected):
    assert normalize_id(raw) == expected


def test_list_and_float_ids_are_sent_and_keep_their_uid(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience(
        "m",
        members=[
            {"_uid": "l1", "braze_id": ["u1", "u1-old"]},
            {"_uid": "l2", "braze_id": 1500.0},
        ],
    )
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["m"]))
    recs = [(r["external_id"], r["lytics_uid"]) for r in run.records["audience_members"]]
    assert recs == [("u1", "l1"), ("1500", "l2")]
    assert run.records["audience_snapshots"][0]["members_without_id"] == 0
