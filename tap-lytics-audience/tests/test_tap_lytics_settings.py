"""Settings errors are clear and early: unknown audiences, bad values, auth failures without the
token, an unreachable or wrong `api_url`."""

from __future__ import annotations

import logging

import pytest
from singer_sdk.exceptions import ConfigValidationError
from tap_lytics_audience.client import LyticsAuthError
from tap_lytics_audience.tap import TapLyticsAudience
from tap_lytics_testkit import members, scan_requests


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


def test_request_timeout_accepts_fractional_seconds(make_config):
    tap = TapLyticsAudience(config=make_config("http://127.0.0.1:9", request_timeout=2.5))
    assert tap.streams["audience_members"].timeout == 2.5


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
