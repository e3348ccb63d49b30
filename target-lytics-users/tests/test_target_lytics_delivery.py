"""Records land in the Lytics sandbox exactly, batched by count and size, with the options passed."""

from __future__ import annotations

import datetime
import decimal
import itertools
import json

import orjson
import pytest
from target_lytics_testkit import BRAZE_USERS_SCHEMA, TOKEN, braze_user, run_target, singer_lines
from target_lytics_users.client import LyticsError
from target_lytics_users.serialize import dumps_record

from sandbox import LyticsSandbox


def collect_requests(sandbox: LyticsSandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith("/collect/json/")]


def test_records_land_with_exact_content_and_state(lytics_sandbox, config):
    records = [braze_user(i) for i in range(25)]
    records[3]["custom_attributes"] = {"nested": {"deep": [1, "two", {"three": 3.25}]}}
    records[4]["email"] = None
    records[5]["first_name"] = 'quote " backslash \\ emoji 🎉'
    result = run_target(config, singer_lines(records, state_every=10))

    assert result.error is None
    assert lytics_sandbox.collected("braze_users") == records
    assert result.states == [{"n": 25, "done": True}]  # STATE once, after everything landed
    reqs = collect_requests(lytics_sandbox)
    assert len(reqs) == 1
    req = reqs[0]
    assert req.method == "POST"
    assert req.path == "/collect/json/braze_users"
    assert req.headers["authorization"] == TOKEN
    assert req.headers["content-type"] == "application/json"
    assert req.query == {}  # no dryrun, no timestamp_field, never a key/token
    assert isinstance(req.json, list)
    summary = result.target.summary()
    assert summary["records_sent"] == 25
    assert summary["batches"] == 1
    assert summary["requests"] == 1
    assert summary["retries"] == 0
    assert summary["rejected"] == 0
    assert summary["bytes"] == len(req.body)


def test_batches_split_by_record_count_in_order(lytics_sandbox, config):
    records = [braze_user(i) for i in range(10)]
    result = run_target({**config, "max_batch_records": 3}, singer_lines(records))

    assert result.error is None
    sizes = [len(r.json) for r in collect_requests(lytics_sandbox)]
    assert sorted(sizes) == [1, 3, 3, 3]
    assert sorted(lytics_sandbox.collected("braze_users"), key=lambda r: r["sessions"]) == records
    assert result.target.summary()["batches"] == 4
    assert result.states == [{"n": 10, "done": True}]


def test_payload_split_by_size_stays_under_cap(lytics_sandbox, config):
    lytics_sandbox.max_collect_bytes = 5000  # the emulated Lytics refuses anything bigger
    records = [braze_user(i, bio="x" * 500) for i in range(40)]
    assert all(len(dumps_record(r)) < 1000 for r in records)
    result = run_target(
        {**config, "max_batch_bytes": 4096, "max_concurrency": 1}, singer_lines(records)
    )

    assert result.error is None
    reqs = collect_requests(lytics_sandbox)
    assert len(reqs) > 1
    assert all(len(r.body) <= 4096 for r in reqs)
    assert all(r.status == 200 for r in reqs)
    # each body is as full as possible: its next record would have crossed the cap
    for r, nxt in itertools.pairwise(reqs):
        assert len(r.body) + len(dumps_record(nxt.json[0])) + 1 > 4096
    assert lytics_sandbox.collected("braze_users") == records


def test_too_large_single_record_is_reported_and_fails_the_run(lytics_sandbox, config, caplog):
    records = [braze_user(i) for i in range(6)]
    records[2]["bio"] = "y" * 5000
    result = run_target({**config, "max_batch_bytes": 2048}, singer_lines(records))

    assert isinstance(result.error, LyticsError)
    assert "skip_oversized_records" in str(result.error)
    assert "stream 'braze_users', input line 4" in str(result.error)
    expected = [r for r in records if "bio" not in r]
    # the rest still delivered (batches may complete in any order)
    by_id = sorted(lytics_sandbox.collected("braze_users"), key=lambda r: r["braze_id"])
    assert by_id == expected
    assert result.states == []  # nothing may advance past the undelivered record
    logged = caplog.text
    assert "REJECTED" in logged
    assert "'braze_id': 'b000002'" in logged
    assert result.target.summary()["oversized"] == 1


def test_too_large_record_tolerated_when_configured(lytics_sandbox, config):
    records = [braze_user(i) for i in range(6)]
    records[2]["bio"] = "y" * 5000
    result = run_target(
        {**config, "max_batch_bytes": 2048, "skip_oversized_records": True}, singer_lines(records)
    )

    assert result.error is None
    assert len(lytics_sandbox.collected("braze_users")) == 5
    assert result.states == [{"n": 6, "done": True}]
    assert result.target.summary()["oversized"] == 1


def test_dry_run_sends_dryrun_true_and_stores_nothing(lytics_sandbox, config):
    records = [braze_user(i) for i in range(7)]
    result = run_target({**config, "dry_run": True, "max_batch_records": 4}, singer_lines(records))

    assert result.error is None
    reqs = collect_requests(lytics_sandbox)
    assert len(reqs) == 2
    assert all(r.query.get("dryrun") == "true" for r in reqs)
    assert lytics_sandbox.collected("braze_users") == []
    assert lytics_sandbox.stats["collect_requests"] == 2
    assert result.target.summary()["dry_run"] is True


def test_timestamp_field_is_passed_through(lytics_sandbox, config):
    records = [braze_user(i) for i in range(3)]
    result = run_target({**config, "timestamp_field": "last_used_app_date"}, singer_lines(records))

    assert result.error is None
    (req,) = collect_requests(lytics_sandbox)
    assert req.query == {"timestamp_field": "last_used_app_date"}
    assert lytics_sandbox.collected("braze_users") == records


def test_stream_mapping_routes_singer_streams(lytics_sandbox, config):
    users = [braze_user(i) for i in range(3)]
    contacts = [{"id": i, "email": f"c{i}@x.io"} for i in range(4)]
    contact_schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
    }
    lines = singer_lines(users, final_state=False) + singer_lines(
        contacts, stream="crm_contacts", schema=contact_schema, key_properties=["id"]
    )
    cfg = {**config, "stream": "default_users", "lytics_stream_map": {"crm_contacts": "crm"}}
    result = run_target(cfg, lines)

    assert result.error is None
    assert lytics_sandbox.collected("crm") == contacts
    assert lytics_sandbox.collected("default_users") == users  # unmapped -> `stream`
    assert lytics_sandbox.collected("braze_users") == []


def test_braze_engagement_goes_to_its_own_lytics_stream(lytics_sandbox, config):
    users = [braze_user(i) for i in range(2)]
    engagement = [
        {"braze_id": f"b{i}", "kind": "campaign", "api_id": f"c{i}", "opened_email": True}
        for i in range(3)
    ]
    schema = {"type": "object", "properties": {}, "additionalProperties": True}
    lines = singer_lines(users, final_state=False) + singer_lines(
        engagement, stream="braze_engagement", schema=schema, key_properties=["braze_id"]
    )
    # `stream` renames the users' Lytics stream; engagement still gets its own by default.
    result = run_target({**config, "stream": "my_users"}, lines)
    assert result.error is None
    assert lytics_sandbox.collected("my_users") == users
    assert lytics_sandbox.collected("braze_engagement") == engagement
    # An explicit lytics_stream_map entry wins over that default.
    cfg = {**config, "lytics_stream_map": {"braze_engagement": "engagement_events"}}
    result = run_target(cfg, lines)
    assert result.error is None
    assert lytics_sandbox.collected("engagement_events") == engagement
    assert len(lytics_sandbox.collected("braze_engagement")) == 3


def test_default_stream_is_braze_users(lytics_sandbox, config):
    result = run_target(config, singer_lines([braze_user(1)], stream="whatever"))
    assert result.error is None
    assert lytics_sandbox.collected("braze_users") == [braze_user(1)]


def test_rejected_count_is_logged_and_counted(rejecting_sandbox, caplog):
    cfg = {"api_token": TOKEN, "api_url": rejecting_sandbox.url, "max_batch_records": 5}
    records = [braze_user(i, _reject=(i % 4 == 0)) for i in range(10)]
    schema = {"type": "object", "properties": {}, "additionalProperties": True}
    result = run_target(cfg, singer_lines(records, schema=schema))

    assert result.error is None
    assert result.target.summary()["rejected"] == 3  # records 0, 4, 8
    assert len(rejecting_sandbox.collected("braze_users")) == 7
    assert "Lytics rejected 2 of 5 records of batch #1" in caplog.text
    assert "input lines 2-6" in caplog.text
    assert result.states == [{"n": 10, "done": True}]


def test_fail_on_rejected_stops_without_state(rejecting_sandbox):
    cfg = {"api_token": TOKEN, "api_url": rejecting_sandbox.url, "fail_on_rejected": True}
    schema = {"type": "object", "properties": {}, "additionalProperties": True}
    records = [braze_user(i, _reject=(i == 1)) for i in range(3)]
    result = run_target(cfg, singer_lines(records, schema=schema))

    assert isinstance(result.error, LyticsError)
    assert "fail_on_rejected" in str(result.error)
    assert result.states == []


def test_serialization_of_dates_decimals_and_nested_values():
    rec = {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "day": datetime.date(1990, 5, 17),
        "amount": decimal.Decimal("12345678901234567890.123456789"),
        "small": decimal.Decimal("1E-7"),
        "nan": decimal.Decimal("NaN"),
        "nested": {"list": [1, 2.5, None, {"k": "v"}], "empty": {}},
        "text": 'é\n"',
    }
    out = dumps_record(rec)
    assert out.startswith(b'{"when":"2024-01-02T03:04:05+00:00","day":"1990-05-17",')
    assert b'"amount":12345678901234567890.123456789,' in out
    parsed = json.loads(out, parse_float=decimal.Decimal)
    assert parsed["amount"] == decimal.Decimal("12345678901234567890.123456789")
    assert parsed["small"] == decimal.Decimal("1E-7")
    assert parsed["nan"] is None
    assert parsed["nested"] == {"list": [1, 2.5, None, {"k": "v"}], "empty": {}}
    assert parsed["text"] == 'é\n"'
    assert orjson.loads(out)["when"] == "2024-01-02T03:04:05+00:00"


def test_decimals_from_the_input_stay_exact(lytics_sandbox, config):
    """Numbers orjson cannot take as they are (NaN) use the SDK parser (Decimal) and still land."""
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "v": {"type": ["number", "null"]}},
    }
    lines = singer_lines([{"id": 1, "v": 0.1}], schema=schema, key_properties=["id"])
    lines.insert(2, '{"type": "RECORD", "stream": "braze_users", "record": {"id": 2, "v": NaN}}')
    result = run_target(config, lines)

    assert result.error is None
    assert lytics_sandbox.collected("braze_users") == [{"id": 1, "v": 0.1}, {"id": 2, "v": None}]


def test_integers_beyond_64_bits_reach_lytics_with_every_digit(lytics_sandbox, config):
    """orjson alone reads them as rounded floats and cannot write them: the body has each digit."""
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "n": {"type": ["integer", "null"]},
            "nested": {"type": ["object", "null"]},
        },
    }
    big = 123456789012345678901234
    records = [
        {"id": 1, "n": big, "nested": {"l": [-(2**63) - 1, 2**64, 2**64 - 1, 0.5]}},
        {"id": 2, "n": -big, "nested": None},
        {"id": 3, "n": 7, "nested": {"id": "12345678901234567890"}},
    ]
    result = run_target(config, singer_lines(records, schema=schema, key_properties=["id"]))

    assert result.error is None
    (req,) = collect_requests(lytics_sandbox)
    assert b'"n":123456789012345678901234,' in req.body  # a JSON number: not a float, no quotes
    assert b'"l":[-9223372036854775809,18446744073709551616,18446744073709551615,0.5]' in req.body
    sent = json.loads(req.body)  # exact ints: a rounded float or a string would differ
    assert [{k: (type(v), v) for k, v in r.items()} for r in sent] == [
        {k: (type(v), v) for k, v in r.items()} for r in records
    ]
    assert len(lytics_sandbox.collected("braze_users")) == 3
    assert result.states == [{"n": 3, "done": True}]


def test_invalid_record_fails_validation(lytics_sandbox, config):
    records = [braze_user(1), braze_user(2, sessions="not a number")]
    result = run_target(config, singer_lines(records))
    assert result.error is not None
    assert "sessions" in str(result.error) or "integer" in str(result.error)
    assert result.states == []


def test_invalid_date_fails_like_the_sdk(lytics_sandbox, config):
    result = run_target(config, singer_lines([braze_user(1, date_of_birth="17/05/1990")]))
    assert result.error is not None
    assert "date_of_birth" in str(result.error)
    assert result.states == []


def test_sdc_metadata_is_dropped_unless_asked_for(lytics_sandbox, config):
    rec = braze_user(1, _sdc_extracted_at="2024-01-01T00:00:00Z", _sdc_sequence=5)
    result = run_target(config, singer_lines([rec, braze_user(2)]))
    assert result.error is None
    assert lytics_sandbox.collected("braze_users") == [braze_user(1), braze_user(2)]


@pytest.mark.parametrize("add_record_metadata", [False, True])
def test_tap_source_metadata_reaches_lytics_only_when_asked_for(
    lytics_sandbox, config, add_record_metadata
):
    """tap-braze-csv's `_sdc_source_file` is a path on the runner: not profile data."""

    schema = {
        **BRAZE_USERS_SCHEMA,
        "properties": {
            **BRAZE_USERS_SCHEMA["properties"],
            "_sdc_source_file": {"type": ["string", "null"]},
            "_sdc_source_lineno": {"type": ["integer", "null"]},
        },
    }
    meta = {"_sdc_source_file": "/home/runner/exports/vip.csv", "_sdc_source_lineno": 2}
    cfg = {**config, "add_record_metadata": add_record_metadata}
    # tap-braze-csv's key properties are these very fields: the SDK checks them first
    keys = ["_sdc_source_file", "_sdc_source_lineno"]
    lines = singer_lines([braze_user(1, **meta)], schema=schema, key_properties=keys)
    result = run_target(cfg, lines)
    assert result.error is None
    (got,) = lytics_sandbox.collected("braze_users")
    if add_record_metadata:
        assert {k: got[k] for k in meta} == meta
    else:
        assert got == braze_user(1)
