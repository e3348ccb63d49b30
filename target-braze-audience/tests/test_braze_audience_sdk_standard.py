"""The SDK's standard target tests, run against the Braze sandbox."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from singer_sdk.testing import get_target_test_class
from target_braze_audience.target import TargetBrazeAudience

from sandbox import BrazeSandbox

API_KEY = "sandbox-braze-key"

# The runner keeps this dict by reference; the fixture below points it at a fresh sandbox
# and a fresh store. The suite's streams carry `id`; with no audience field the stream
# name is the audience, so each loaded record adds its stream's slug to user `id`.
SANDBOX_CONFIG: dict[str, t.Any] = {
    "api_key": API_KEY,
    "rest_endpoint": "http://127.0.0.1:9",
    "external_id_field": "id",
    "retry_backoff_base": 0.01,
    "rate_limit_per_second": 0,
}

# Suite tests whose records carry an `id` the target sends to Braze.
LOADING_TESTS = {
    f"test_target_{name}": stream
    for name, stream in [
        ("array_data", "test_array_data"),
        ("duplicate_records", "test_duplicate_records"),
        ("encoded_string_data", "test_strings"),
        ("record_missing_fields", "record_missing_fields"),
    ]
}

# The SDK raises MissingKeyPropertiesError for a record without its key property; this
# target skips a record without its identifier instead (counted as invalid in the run
# summary, logged naming the stream and record) and delivers the rest: one bad record does
# not hold back an audience. Strict: the suite fails here if the target starts raising.
SKIPS_RECORDS_WITHOUT_ID = pytest.mark.xfail(
    strict=True, reason="records without their identifier are skipped and counted, not fatal"
)

StandardTargetTests = get_target_test_class(TargetBrazeAudience, config=SANDBOX_CONFIG)


class TestTargetBrazeAudienceStandard(StandardTargetTests):  # type: ignore[misc,valid-type]
    """Standard SDK target suite (array data, camelCase, schema updates, bad input...)."""

    @pytest.fixture(autouse=True)
    def _sandbox(
        self, braze_sandbox: BrazeSandbox, tmp_path: Path, request: pytest.FixtureRequest
    ) -> t.Iterator[None]:
        if request.node.name == "test_target_record_missing_key_property":
            request.applymarker(SKIPS_RECORDS_WITHOUT_ID)
        SANDBOX_CONFIG["rest_endpoint"] = braze_sandbox.url
        SANDBOX_CONFIG["store_url"] = str(tmp_path / "store.sqlite")
        yield
        track = [r for r in braze_sandbox.requests if r.path == "/users/track"]
        # whatever a test sent was accepted by the emulated Braze
        assert all(r.status == 201 for r in track), [r.status for r in track]
        stream = LOADING_TESTS.get(request.node.name)
        if stream is not None:
            assert track
            members = [
                u
                for u, a in braze_sandbox.users().items()
                if stream in (a.get("lytics_segments") or [])
            ]
            assert members, (stream, braze_sandbox.users())
