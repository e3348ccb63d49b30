"""The SDK's standard target tests, run against the Lytics sandbox."""

from __future__ import annotations

import typing as t

import pytest
from singer_sdk.testing import get_target_test_class
from target_lytics_testkit import TOKEN
from target_lytics_users.target import TargetLyticsUsers

from sandbox import LyticsSandbox

# The runner keeps this dict by reference; the fixture below points it at a fresh sandbox.
SANDBOX_CONFIG: dict[str, t.Any] = {"api_token": TOKEN, "api_url": "http://127.0.0.1:9"}

# Suite tests that load records (the others check errors or the CLI).
LOADING_TESTS = {
    f"test_target_{name}"
    for name in [
        "array_data",
        "camelcase",
        "duplicate_records",
        "encoded_string_data",
        "no_primary_keys",
        "optional_attributes",
        "record_missing_fields",
        "schema_no_properties",
        "schema_updates",
        "pk_updates",
        "special_chars_in_attributes",
    ]
}

StandardTargetTests = get_target_test_class(TargetLyticsUsers, config=SANDBOX_CONFIG)


class TestTargetLyticsUsersStandard(StandardTargetTests):  # type: ignore[misc,valid-type]
    """Standard SDK target suite (array data, camelCase, schema updates, bad input...)."""

    @pytest.fixture(autouse=True)
    def _sandbox(
        self, lytics_sandbox: LyticsSandbox, request: pytest.FixtureRequest
    ) -> t.Iterator[None]:
        SANDBOX_CONFIG["api_url"] = lytics_sandbox.url
        self.sandbox = lytics_sandbox
        yield
        # whatever a test sent was accepted by the emulated Lytics: no failed collect request
        collect = [r for r in lytics_sandbox.requests if r.path.startswith("/collect/json/")]
        assert all(r.status == 200 for r in collect)
        if request.node.name in LOADING_TESTS:
            assert lytics_sandbox.stats["collected_records"] > 0
            assert lytics_sandbox.collected("braze_users")
