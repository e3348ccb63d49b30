"""The SDK's standard tap tests on a small committed Braze-like export."""

from __future__ import annotations

from pathlib import Path

from singer_sdk.testing import SuiteConfig, get_tap_test_class
from tap_braze_csv.tap import TapBrazeCsv

DATA = Path(__file__).parent / "data"

TestTapBrazeCsvStandard = get_tap_test_class(
    tap_class=TapBrazeCsv,
    config={"paths": [str(DATA / "*.csv")]},
    suite_config=SuiteConfig(max_records_limit=25),
)
