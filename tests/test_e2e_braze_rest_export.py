"""Braze REST segment export -> Lytics through `meltano run braze-to-lytics` (no manual step).

The job runs `tap-braze-rest-export` (tap-braze-csv with `rest_export`) into target-lytics-users:
the tap triggers `POST /users/export/segment` on the Braze sandbox, waits for the archive,
streams its JSON lines; users land in the Lytics stream `braze_users`, campaign/Canvas
engagement in `braze_engagement`.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_helpers import Meltano
from tap_braze_csv.sample import sample_profiles

SEGMENT = "all-users"
STATE_ID = "sandbox:tap-braze-rest-export-to-target-lytics-users"
USERS = 240


@pytest.fixture
def profiles(braze_sandbox) -> dict[str, dict[str, Any]]:
    out = {}
    for profile in sample_profiles(USERS, seed=11):
        attrs = dict(profile)
        ext = attrs.pop("external_id")
        braze_sandbox.add_user(ext, **attrs)
        out[ext] = profile
    braze_sandbox.add_segment(SEGMENT)
    braze_sandbox.segment_exports.delay = 0.5
    braze_sandbox.segment_exports.users_per_file = 100
    return out


@pytest.fixture
def configured(meltano: Meltano, braze_sandbox, lytics_sandbox, profiles) -> Meltano:
    meltano.set(
        TAP_BRAZE_REST_EXPORT_REST_EXPORT_REST_ENDPOINT=braze_sandbox.url,
        TAP_BRAZE_REST_EXPORT_REST_EXPORT_API_KEY=braze_sandbox.api_key,
        TAP_BRAZE_REST_EXPORT_REST_EXPORT_POLL_INTERVAL="1",
        TAP_BRAZE_REST_EXPORT_REST_EXPORT_MIN_INTERVAL_HOURS="1",
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
    )
    return meltano


def test_triggered_url_export_to_lytics_then_nothing_new(
    configured: Meltano, braze_sandbox, lytics_sandbox, profiles
) -> None:
    proc = configured.run("run", "braze-to-lytics")
    assert proc.returncode == 0, proc.stderr[-4000:]
    output = proc.stdout + proc.stderr
    assert braze_sandbox.api_key not in output
    assert lytics_sandbox.api_token not in output
    assert "X-Amz-Signature" not in output

    assert braze_sandbox.stats["exports"] == 1
    users = lytics_sandbox.collected("braze_users")
    assert sorted(u["external_id"] for u in users) == sorted(profiles)
    for user in users:
        profile = profiles[user["external_id"]]
        assert user["email"] == profile["email"]
        assert user["phone_number"] == profile["phone"]
        assert user["city"] == profile["home_city"]
        assert user["time_zone"] == profile["time_zone"]
        assert user["custom_attributes"]["loyalty_tier"] == profile["loyalty_tier"]
        assert user["_braze_segment_id"] == SEGMENT

    engagement = lytics_sandbox.collected("braze_engagement")
    expected = sorted(
        (ext, c["api_campaign_id"], c["last_received"])
        for ext, p in profiles.items()
        for c in p["campaigns_received"]
    ) + sorted(
        (ext, c["api_canvas_id"], c["last_received_message"])
        for ext, p in profiles.items()
        for c in p["canvases_received"]
    )
    got = sorted(
        (e["external_id"], e["api_id"], e["last_received"])
        for e in engagement
        if e["kind"] == "campaign"
    ) + sorted(
        (e["external_id"], e["api_id"], e["last_received"])
        for e in engagement
        if e["kind"] == "canvas"
    )
    assert got == expected
    assert len(expected) > USERS / 2
    opened = {
        (ext, c["api_campaign_id"])
        for ext, p in profiles.items()
        for c in p["campaigns_received"]
        if c["engaged"].get("opened_email")
    }
    assert {(e["external_id"], e["api_id"]) for e in engagement if e.get("opened_email")} == opened

    state = configured.state(STATE_ID)
    bookmarks = state["singer_state"]["bookmarks"]
    assert bookmarks["braze_users"]["exports"][SEGMENT]["complete"] is True
    assert bookmarks["braze_engagement"]["exports"][SEGMENT]["complete"] is True

    # Second run: the export read is recent (min_interval_hours): nothing new is read or sent.
    collects = lytics_sandbox.stats["collect_requests"]
    proc = configured.run("run", "braze-to-lytics")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert braze_sandbox.stats["exports"] == 1
    assert lytics_sandbox.stats["collect_requests"] == collects
    assert len(lytics_sandbox.collected("braze_users")) == USERS


def test_export_not_ready_fails_the_job_clearly(
    configured: Meltano, braze_sandbox, lytics_sandbox
) -> None:
    braze_sandbox.segment_exports.delay = 600
    configured.set(TAP_BRAZE_REST_EXPORT_REST_EXPORT_WAIT_TIMEOUT="1")
    proc = configured.run("run", "braze-to-lytics")
    assert proc.returncode != 0
    assert "rest_export.wait_timeout" in proc.stdout + proc.stderr
    assert lytics_sandbox.collected("braze_users") == []


def _s3_server_module():
    import importlib.util
    import sys

    from e2e_helpers import ROOT

    path = ROOT / "tap-braze-csv" / "tests" / "s3_server.py"
    spec = importlib.util.spec_from_file_location("braze_csv_s3_server", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def s3_server():
    server = _s3_server_module().start_s3_server()
    try:
        yield server
    finally:
        server.stop()


def test_triggered_export_read_from_the_bucket(
    configured: Meltano, braze_sandbox, lytics_sandbox, profiles, s3_server
) -> None:
    bucket = s3_server.new_bucket("braze-exports")
    braze_sandbox.segment_exports.bucket = f"s3://{bucket}"
    braze_sandbox.segment_exports.storage_options = {
        "key": s3_server.access_key,
        "secret": s3_server.secret_key,
        "client_kwargs": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
    }
    # Credentials through the standard AWS environment (AWS_ENDPOINT_URL and keys).
    configured.set(TAP_BRAZE_REST_EXPORT_REST_EXPORT_BUCKET_URL=f"s3://{bucket}", **s3_server.env())
    proc = configured.run("run", "braze-to-lytics")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert s3_server.secret_key not in proc.stdout + proc.stderr
    assert not [r for r in braze_sandbox.requests if r.path.startswith("/_export_downloads")]
    users = lytics_sandbox.collected("braze_users")
    assert sorted(u["external_id"] for u in users) == sorted(profiles)
    assert all(u["_braze_segment_id"] == SEGMENT for u in users)
    expected = sum(
        len(p["campaigns_received"]) + len(p["canvases_received"]) for p in profiles.values()
    )
    assert len(lytics_sandbox.collected("braze_engagement")) == expected

    # Second run: nothing new (the export read is within min_interval_hours).
    proc = configured.run("run", "braze-to-lytics")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert braze_sandbox.stats["exports"] == 1
    assert len(lytics_sandbox.collected("braze_users")) == USERS
