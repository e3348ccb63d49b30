"""The SDK's standard tap tests (get_tap_test_class) against a Lytics sandbox.

The standard test class runs one class-scoped sync with a config fixed when the class is
built, so this module starts its own LyticsSandbox at import (same emulator as the
`lytics_sandbox` fixture) and stops it when the module's tests are done.
"""

from __future__ import annotations

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class
from tap_lytics_audience.tap import TapLyticsAudience

from sandbox import LyticsSandbox

SANDBOX = LyticsSandbox().start()
SANDBOX.generate_members("std_generated", 120, prefix="g")  # < 150: the dry-run record cap
SANDBOX.add_audience(
    "std_listed",
    name="Listed",
    members=[
        {"_uid": "l1", "braze_id": "b1", "email": "a@x.io"},
        {"_uid": "l2", "email": "nobody@x.io"},
    ],
)
SANDBOX.add_audience("std_empty", members=[])

CONFIG = {
    "api_token": SANDBOX.api_token,
    "api_url": SANDBOX.url,
    "audiences": ["std_generated", "std_listed", "std_empty"],
    "fields": ["email"],
    "page_size": 50,
    "retry_backoff_base": 0.01,
}

_Base = get_tap_test_class(
    TapLyticsAudience,
    config=CONFIG,
    suite_config=SuiteConfig(max_records_limit=150),
)


class TestTapLyticsAudienceStandard(_Base):  # type: ignore[misc,valid-type]
    """SDK standard tap, stream and attribute tests."""

    @pytest.fixture(scope="class", autouse=True)
    def _stop_sandbox(self):
        yield
        SANDBOX.stop()
