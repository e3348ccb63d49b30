"""Triggered REST exports (`rest_export`) against the Braze sandbox's /users/export/segment."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sample import sample_profiles

from sandbox import BrazeSandbox

SEGMENT = "seg-active"
FIELDS = [
    "email",
    "first_name",
    "phone",
    "home_city",
    "dob",
    "time_zone",
    "created_at",
    "custom_attributes",
    "campaigns_received",
    "canvases_received",
]


def seed(braze: BrazeSandbox, n: int = 12) -> dict[str, dict]:
    profiles = {}
    for profile in sample_profiles(n, seed=3):
        attrs = dict(profile)
        ext = attrs.pop("external_id")
        braze.add_user(ext, **attrs)
        profiles[ext] = profile
    braze.add_segment(SEGMENT)
    braze.segment_exports.users_per_file = 5
    return profiles


def config(braze: BrazeSandbox, **overrides: Any) -> dict:
    rest = {
        "api_key": braze.api_key,
        "rest_endpoint": braze.url,
        "segment_ids": [SEGMENT],
        "fields_to_export": FIELDS,
        "poll_interval": 1,
        "wait_timeout": 10,
        "retry_backoff_base": 0,
    }
    rest.update(overrides)
    return {"rest_export": rest}


def records(run: Any, stream: str) -> list[dict]:
    return [m["record"] for m in run.messages if m["type"] == "RECORD" and m["stream"] == stream]


def no_floats(value: Any) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(no_floats(v) for v in value)
    return True


def test_url_export_users_and_engagement(braze_sandbox: BrazeSandbox, tap_runner) -> None:
    profiles = seed(braze_sandbox)
    braze_sandbox.segment_exports.delay = 0.3  # not ready at the first poll
    run = tap_runner(config(braze_sandbox))

    # One export requested, with the configured fields plus the ids records are keyed by.
    posts = [r for r in braze_sandbox.requests if r.path == "/users/export/segment"]
    assert len(posts) == 1
    assert posts[0].json["segment_id"] == SEGMENT
    assert posts[0].json["fields_to_export"][:2] == ["braze_id", "external_id"]
    assert set(FIELDS) <= set(posts[0].json["fields_to_export"])
    # The URL was polled until ready (404 first), without the API key.
    downloads = [r for r in braze_sandbox.requests if r.path.startswith("/_export_downloads/")]
    assert [r.status for r in downloads][-1] == 200
    assert 404 in [r.status for r in downloads]
    assert all("authorization" not in r.headers for r in downloads)

    users = records(run, "braze_users")
    assert sorted(u["external_id"] for u in users) == sorted(profiles)
    for user in users:
        profile = profiles[user["external_id"]]
        # Same field names as CSV rows: phone -> phone_number, home_city -> city, dob -> ...
        assert user["email"] == profile["email"]
        assert user["phone_number"] == profile["phone"]
        assert user["city"] == profile["home_city"]
        assert user["date_of_birth"] == profile["dob"]
        assert user["time_zone"] == profile["time_zone"]
        assert user["created_at"].endswith("+00:00")
        assert "T" in user["created_at"]
        assert user["custom_attributes"] == {
            "loyalty_tier": profile["loyalty_tier"],
            "lifetime_value": profile["lifetime_value"],
        }
        assert user["braze_id"]
        assert user["_braze_segment_id"] == SEGMENT
        assert "campaigns_received" not in user
        assert "phone" not in user
    assert len({u["_sdc_source_file"] for u in users}) == 3  # 12 users, 5 per file

    engagement = records(run, "braze_engagement")
    expected = [
        (ext, "campaign", c["api_campaign_id"], c["last_received"], c["engaged"], c["converted"])
        for ext, p in profiles.items()
        for c in p["campaigns_received"]
    ]
    got = [
        (
            e["external_id"],
            e["kind"],
            e["api_id"],
            e["last_received"],
            {k: v for k, v in (e["engaged"] or {}).items()},
            e["converted"],
        )
        for e in engagement
        if e["kind"] == "campaign"
    ]
    assert sorted(got, key=str) == sorted(expected, key=str)
    assert expected, "the sample has campaign engagement"
    canvases = [e for e in engagement if e["kind"] == "canvas"]
    assert len(canvases) == sum(len(p["canvases_received"]) for p in profiles.values())
    for e in engagement:
        if e["kind"] == "campaign":
            assert e["opened_email"] == bool(e["engaged"].get("opened_email"))
            assert e["clicked_email"] == bool(e["engaged"].get("clicked_email"))
        assert e["braze_id"]
        assert e["name"]
    schema_msgs = {m["stream"]: m for m in run.messages if m["type"] == "SCHEMA"}
    assert schema_msgs["braze_engagement"]["key_properties"] == ["braze_id", "kind", "api_id"]

    state = run.state["bookmarks"]
    for stream in ("braze_users", "braze_engagement"):
        entry = state[stream]["exports"][SEGMENT]
        assert entry["complete"] is True
        assert len(entry["members"]) == 3
        assert "url" not in json.dumps(entry).lower()
    assert no_floats(run.state)
    # The download URL (a credential) is in no record and no state.
    token = downloads[0].path.rsplit("/", 1)[-1].removesuffix(".zip")
    assert token not in json.dumps(run.messages)


def test_second_run_reads_nothing_new_within_min_interval(
    braze_sandbox: BrazeSandbox, tap_runner
) -> None:
    seed(braze_sandbox, 4)
    first = tap_runner(config(braze_sandbox, min_interval_hours=1))
    assert len(records(first, "braze_users")) == 4
    first_prefix = first.state["bookmarks"]["braze_users"]["exports"][SEGMENT]["object_prefix"]
    second = tap_runner(
        config(braze_sandbox, min_interval_hours=1), state=copy.deepcopy(first.state)
    )
    assert records(second, "braze_users") == []
    assert records(second, "braze_engagement") == []
    assert braze_sandbox.stats["exports"] == 1  # no second export was requested
    # Without an interval, every run takes a fresh snapshot (a new export, read once).
    third = tap_runner(config(braze_sandbox), state=copy.deepcopy(second.state))
    assert len(records(third, "braze_users")) == 4
    assert braze_sandbox.stats["exports"] == 2
    third_prefix = third.state["bookmarks"]["braze_users"]["exports"][SEGMENT]["object_prefix"]
    assert third_prefix != first_prefix


def test_export_never_ready_fails_clearly(braze_sandbox: BrazeSandbox, tap_runner) -> None:
    seed(braze_sandbox, 2)
    braze_sandbox.segment_exports.delay = 60
    run = tap_runner(config(braze_sandbox, wait_timeout=1), expect_error=True)
    message = str(run.error)
    assert SEGMENT in message
    assert "rest_export.wait_timeout" in message
    assert "X-Amz-Signature" not in message
    assert "_export_downloads" not in message
    assert records(run, "braze_users") == []
    for stream in ("braze_users", "braze_engagement"):
        bookmark = run.state.get("bookmarks", {}).get(stream, {})
        entry = bookmark.get("exports", {}).get(SEGMENT)
        assert not entry or not entry.get("complete")


def test_rate_limited_trigger_retries_then_succeeds(
    braze_sandbox: BrazeSandbox, tap_runner
) -> None:
    seed(braze_sandbox, 3)
    braze_sandbox.fail_next(2, 429, "/users/export")
    run = tap_runner(config(braze_sandbox, max_retries=3))
    assert len(records(run, "braze_users")) == 3
    statuses = [r.status for r in braze_sandbox.requests if r.path == "/users/export/segment"]
    assert statuses == [429, 429, 201]


def test_second_export_of_a_running_segment_gives_clear_error(
    braze_sandbox: BrazeSandbox, tap_runner
) -> None:
    seed(braze_sandbox, 3)
    braze_sandbox.segment_exports.delay = 60
    first = tap_runner(config(braze_sandbox, wait_timeout=1), expect_error=True)
    assert "wait_timeout" in str(first.error)
    braze_sandbox.clear_requests()
    # 429 answers count in their own budget (issue 15's retry contract), not in max_retries.
    run = tap_runner(
        config(braze_sandbox, max_retries=0, max_rate_limit_retries=1), expect_error=True
    )
    message = str(run.error)
    assert "429" in message
    assert "one export per segment" in message
    assert (
        "gave up after 2 attempt(s): raise `rest_export.max_rate_limit_retries` (now 1)" in message
    )
    statuses = [r.status for r in braze_sandbox.requests if r.path == "/users/export/segment"]
    assert statuses == [429, 429]


@pytest.mark.parametrize(("status", "hint"), [(401, "rest_export.api_key"), (500, "max_retries")])
def test_errors_name_the_setting_and_never_the_key(
    braze_sandbox: BrazeSandbox, tap_runner, status: int, hint: str
) -> None:
    seed(braze_sandbox, 2)
    cfg = config(braze_sandbox, max_retries=1)
    if status == 401:
        cfg["rest_export"]["api_key"] = "wrong-key-4242"
    else:
        braze_sandbox.fail_next(5, 500, "/users/export")
    run = tap_runner(cfg, expect_error=True)
    message = str(run.error)
    assert hint in message
    assert SEGMENT in message
    assert "wrong-key-4242" not in message
    assert braze_sandbox.api_key not in message


def test_download_5xx_is_retried(braze_sandbox: BrazeSandbox, tap_runner) -> None:
    seed(braze_sandbox, 3)
    braze_sandbox.segment_exports.delay = 0
    braze_sandbox.fail_next(1, 503, "/_export_downloads/")
    run = tap_runner(config(braze_sandbox))
    assert len(records(run, "braze_users")) == 3
    statuses = [r.status for r in braze_sandbox.requests if r.path.startswith("/_export_downloads")]
    assert statuses == [503, 200]


def test_download_429s_and_5xx_have_their_own_budgets(
    braze_sandbox: BrazeSandbox, tap_runner
) -> None:
    """429s count in max_rate_limit_retries, 5xx in max_retries, each request on its own."""
    seed(braze_sandbox, 3)
    braze_sandbox.segment_exports.delay = 0
    braze_sandbox.fail_next(2, 429, "/_export_downloads/")
    braze_sandbox.fail_next(1, 503, "/_export_downloads/")
    run = tap_runner(config(braze_sandbox, max_retries=1, max_rate_limit_retries=2))
    assert len(records(run, "braze_users")) == 3
    statuses = [r.status for r in braze_sandbox.requests if r.path.startswith("/_export_downloads")]
    assert statuses == [429, 429, 503, 200]

    braze_sandbox.clear_requests()
    braze_sandbox.fail_next(1000, 503, "/_export_downloads/")
    run = tap_runner(config(braze_sandbox, max_retries=2), expect_error=True)
    assert "gave up after 3 attempt(s): raise `rest_export.max_retries` (now 2)" in str(run.error)
    statuses = [r.status for r in braze_sandbox.requests if r.path.startswith("/_export_downloads")]
    assert statuses == [503, 503, 503]
    braze_sandbox.clear_faults()


def test_download_retries_end_within_wait_timeout(
    braze_sandbox: BrazeSandbox, tap_runner, caplog
) -> None:
    """A retry whose wait would pass `wait_timeout` is not made: the run stops naming it.

    Braze answers the download 503 (retried at once: backoff 0), then 429 with an
    `X-RateLimit-Reset` far away: the wait (capped at `retry_backoff_max`, 60 s) would end
    past the 2 s `wait_timeout`, so the tap stops there instead of sleeping 60 s per retry.
    """
    seed(braze_sandbox, 3)
    braze_sandbox.segment_exports.delay = 0
    braze_sandbox.rate_limit_window = 10**10  # the window resets in 2286: a long wait asked
    braze_sandbox.fail_next(1, 503, "/_export_downloads/")
    braze_sandbox.fail_next(1000, 429, "/_export_downloads/")
    cfg = config(braze_sandbox, wait_timeout=2, max_rate_limit_retries=1)
    started = time.monotonic()
    with caplog.at_level("WARNING"):
        run = tap_runner(cfg, expect_error=True)
    elapsed = time.monotonic() - started
    message = str(run.error)
    assert "not downloaded within rest_export.wait_timeout (2s)" in message
    assert "HTTP 429 after 2 attempt(s)" in message
    assert "the next retry's wait (60.0 s) would pass it" in message
    assert SEGMENT in message
    assert "X-Amz-Signature" not in message
    assert braze_sandbox.api_key not in message + caplog.text
    statuses = [r.status for r in braze_sandbox.requests if r.path.startswith("/_export_downloads")]
    assert statuses == [503, 429]
    assert [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()] == [
        f"Braze export of segment {SEGMENT} (download from 127.0.0.1:{braze_sandbox.port}): "
        "HTTP 503; retry 1/5 in 0.0 s"
    ]
    assert elapsed < 5  # not 60 s (one capped wait), let alone 30 of them
    assert records(run, "braze_users") == []
    braze_sandbox.clear_faults()


def test_settings_are_validated(tap_runner) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    with pytest.raises(Exception, match=r"rest_export\.api_key"):
        TapBrazeCsv(config={"rest_export": {"segment_ids": ["s"], "rest_endpoint": "http://x"}})
    with pytest.raises(Exception, match=r"rest_export\.rest_endpoint"):
        TapBrazeCsv(config={"rest_export": {"segment_ids": ["s"], "api_key": "k"}})
    with pytest.raises(Exception, match="paths"):
        TapBrazeCsv(config={})


_REST = {"api_key": "k", "rest_endpoint": "https://rest.x.braze.com/", "segment_ids": ["a"]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"segment_ids": []}, "segment_ids: list the Braze segment ids"),
        ({"segment_ids": ["a", "a"]}, "segment_ids: a segment id is listed twice"),
        ({"api_key": 3}, "api_key is required"),
        ({"rest_endpoint": "ftp://x"}, "rest_endpoint must be an http(s) URL, got 'ftp://x'"),
        ({"fields_to_export": [1]}, "fields_to_export must be a list of strings"),
        (
            {"custom_attributes_to_export": ["c"] * 501},
            "custom_attributes_to_export: Braze exports at most 500",
        ),
        ({"output_format": "tar"}, "output_format must be zip or gzip, got 'tar'"),
        ({"bucket_url": "bucket"}, "bucket_url must be the URL of the bucket"),
        ({"poll_interval": 0}, "poll_interval must be a whole number >= 1, got 0"),
        ({"wait_timeout": "1.5"}, "wait_timeout must be a whole number >= 0, got '1.5'"),
    ],
)
def test_each_bad_rest_export_setting_is_named(overrides: dict, message: str) -> None:
    from tap_braze_csv.rest_export import RestExportSettings

    with pytest.raises(BrazeCsvError) as raised:
        RestExportSettings.from_config({"rest_export": {**_REST, **overrides}})
    assert f"rest_export.{message}" in str(raised.value)


def test_rest_export_settings_are_normalised() -> None:
    from tap_braze_csv.rest_export import REQUIRED_FIELDS, RestExportSettings

    cfg = {**_REST, "fields_to_export": "email, external_id", "output_format": "GZIP"}
    settings = RestExportSettings.from_config({"rest_export": {**cfg, "bucket_url": "s3://b/"}})
    assert settings is not None
    assert settings.rest_endpoint == "https://rest.x.braze.com"
    assert settings.fields_to_export == (*REQUIRED_FIELDS, "email")
    assert (settings.output_format, settings.bucket_url) == ("gzip", "s3://b")
    assert RestExportSettings.from_config({"rest_export": {"segment_ids": []}}) is None


def test_users_only_selection_reads_no_engagement(braze_sandbox: BrazeSandbox, tap_runner) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    seed(braze_sandbox, 3)
    cfg = config(braze_sandbox)
    catalog = TapBrazeCsv(config=cfg).catalog_dict
    for entry in catalog["streams"]:
        selected = entry["tap_stream_id"] == "braze_users"
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = selected
    run = tap_runner(cfg, catalog=catalog)
    assert len(records(run, "braze_users")) == 3
    assert records(run, "braze_engagement") == []
    assert braze_sandbox.stats["exports"] == 1


def bucket_setup(braze: BrazeSandbox, s3: Any) -> str:
    """Make the sandbox write exports to a fresh bucket of the S3-compatible test server."""
    bucket = s3.new_bucket("braze-exports")
    braze.segment_exports.bucket = f"s3://{bucket}"
    braze.segment_exports.storage_options = {
        "key": s3.access_key,
        "secret": s3.secret_key,
        "client_kwargs": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
    }
    return bucket


def test_bucket_export_is_read_from_the_bucket_then_resumed(
    braze_sandbox: BrazeSandbox, tap_runner, s3
) -> None:
    profiles = seed(braze_sandbox)
    bucket = bucket_setup(braze_sandbox, s3)
    braze_sandbox.segment_exports.delay = 0.5
    cfg = config(braze_sandbox, bucket_url=f"s3://{bucket}", settle_seconds=1)
    cfg["s3"] = s3.config()
    run = tap_runner(cfg)

    assert not [r for r in braze_sandbox.requests if r.path.startswith("/_export_downloads")]
    users = records(run, "braze_users")
    assert sorted(u["external_id"] for u in users) == sorted(profiles)
    sources = sorted({u["_sdc_source_file"] for u in users})
    assert len(sources) == 3  # three .zip files under the object_prefix
    entry = run.state["bookmarks"]["braze_users"]["exports"][SEGMENT]
    assert entry["complete"] is True
    assert len(entry["members"]) == 3
    engagement = records(run, "braze_engagement")
    assert len(engagement) == sum(
        len(p["campaigns_received"]) + len(p["canvases_received"]) for p in profiles.values()
    )
    assert s3.secret_key not in json.dumps(run.messages)

    # A run that stopped after the first file resumes the same export from the bucket: no new
    # export is requested and only the other files' users are emitted.
    state = copy.deepcopy(run.state)
    for stream in ("braze_users", "braze_engagement"):
        item = state["bookmarks"][stream]["exports"][SEGMENT]
        item["complete"] = False
        item["members"] = item["members"][:1]
    first_file_users = {u["external_id"] for u in users if u["_sdc_source_file"] == sources[0]}
    resumed = tap_runner(cfg, state=state)
    assert braze_sandbox.stats["exports"] == 1
    again = records(resumed, "braze_users")
    assert {u["external_id"] for u in again} == set(profiles) - first_file_users
    assert resumed.state["bookmarks"]["braze_users"]["exports"][SEGMENT]["complete"] is True
