"""429 storms, 5xx bursts, persistent failures, auth/URL errors and secret hygiene."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
from pathlib import Path

import pytest
from target_lytics_testkit import TOKEN, braze_user, run_target, singer_lines
from target_lytics_users.client import (
    LyticsConfigError,
    LyticsError,
    LyticsRetriesExhaustedError,
)

from sandbox import LyticsSandbox

TARGET_EXE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "target-lytics-users"


def by_session(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: r["sessions"])


def test_429_storm_ends_with_every_record_delivered_once(lytics_sandbox, config):
    lytics_sandbox.rate_limit = 1
    lytics_sandbox.rate_limit_window = 0.05
    records = [braze_user(i) for i in range(30)]
    cfg = {**config, "max_batch_records": 2, "max_retries": 60, "retry_backoff_max": 0.05}
    result = run_target(cfg, singer_lines(records, state_every=10))

    assert result.error is None
    assert by_session(lytics_sandbox.collected("braze_users")) == records  # no loss, no dupes
    assert lytics_sandbox.stats["rate_limited"] > 0
    summary = result.target.summary()
    assert summary["retries"] == lytics_sandbox.stats["rate_limited"]
    assert summary["batches"] == 15
    assert summary["requests"] == 15 + summary["retries"]
    assert result.states == [{"n": 30, "done": True}]


def test_5xx_burst_is_retried_and_everything_lands(lytics_sandbox, config, caplog):
    lytics_sandbox.fail_next(4, status=503, path_prefix="/collect")
    records = [braze_user(i) for i in range(9)]
    result = run_target({**config, "max_batch_records": 3}, singer_lines(records))

    assert result.error is None
    assert by_session(lytics_sandbox.collected("braze_users")) == records
    assert result.target.summary()["retries"] == 4
    assert "HTTP 503" in caplog.text
    assert result.states == [{"n": 9, "done": True}]


class RetryAfterSandbox(LyticsSandbox):
    """Lytics emulator whose 429s carry `Retry-After: 0`."""

    def decorate(self, req, resp):
        status, body, headers = resp
        if status == 429:
            headers = {**headers, "Retry-After": "0"}
        return status, body, headers


def test_retry_after_header_is_honoured(caplog):
    with RetryAfterSandbox() as sandbox:
        sandbox.fail_next(2, status=429)
        cfg = {"api_token": TOKEN, "api_url": sandbox.url, "retry_backoff_base": 0.01}
        result = run_target(cfg, singer_lines([braze_user(1)]))
        assert result.error is None
        assert sandbox.collected("braze_users") == [braze_user(1)]
    assert caplog.text.count("(Retry-After)") == 2


def test_persistent_failure_stops_without_state_past_the_failed_batch(poison_sandbox):
    records = [braze_user(i, poison=(i in {3, 4, 5})) for i in range(9)]
    schema = {"type": "object", "properties": {}, "additionalProperties": True}
    cfg = {
        "api_token": TOKEN,
        "api_url": poison_sandbox.url,
        "max_batch_records": 3,
        "max_concurrency": 1,
        "max_retries": 2,
        "retry_backoff_base": 0.01,
    }
    result = run_target(cfg, singer_lines(records, schema=schema, state_every=3))

    assert isinstance(result.error, LyticsRetriesExhaustedError)
    message = str(result.error)
    assert "batch #2" in message
    assert "input lines 6-8" in message  # line 1 is SCHEMA, STATE lines interleave
    # Attempts, over how long, the last answer, and the settings that retry longer.
    assert re.search(r"after 3 attempts over \d+\.\ds \(last: HTTP 5\d\d", message), message
    assert "raise `max_retries` (now 2) or `retry_backoff_max`" in message
    assert result.states == []
    assert poison_sandbox.collected("braze_users") == records[:3]


def test_persistent_failure_exits_non_zero_as_a_subprocess(lytics_sandbox, tmp_path):
    lytics_sandbox.fail_next(1000, status=500)
    config_path = tmp_path / "config.json"
    config_path.write_text(
        json.dumps(
            {
                "api_token": TOKEN,
                "api_url": lytics_sandbox.url,
                "max_retries": 2,
                "retry_backoff_base": 0.01,
            }
        )
    )
    assert TARGET_EXE.exists(), f"{TARGET_EXE} missing: run `uv sync` at the workspace root"
    proc = subprocess.run(
        [str(TARGET_EXE), "--config", str(config_path)],
        input="\n".join(singer_lines([braze_user(i) for i in range(5)])) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stdout.strip() == ""  # no STATE
    assert "did not accept batch #1" in proc.stderr
    assert "Lytics load summary (run FAILED)" in proc.stderr
    assert TOKEN not in proc.stderr
    assert lytics_sandbox.collected("braze_users") == []
    assert lytics_sandbox.stats["faults"] == 3


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_name_the_setting_never_the_token(lytics_sandbox, config, status):
    if status == 401:
        cfg = {**config, "api_token": "wrong-token-XYZ"}
        secret = "wrong-token-XYZ"
    else:
        lytics_sandbox.fail_next(1, status=403)
        cfg, secret = config, TOKEN
    result = run_target(cfg, singer_lines([braze_user(1)]))

    assert isinstance(result.error, LyticsConfigError)
    message = str(result.error)
    assert f"HTTP {status}" in message
    assert "`api_token`" in message
    assert secret not in message
    assert result.target.summary()["requests"] == 1  # failed fast, no retries
    assert result.states == []


def test_404_names_api_url_and_stream(lytics_sandbox, config):
    result = run_target({**config, "api_url": lytics_sandbox.url + "/v9"}, singer_lines([]))
    assert result.error is None  # no records: nothing sent
    result = run_target(
        {**config, "api_url": lytics_sandbox.url + "/v9"}, singer_lines([braze_user(1)])
    )
    assert isinstance(result.error, LyticsConfigError)
    message = str(result.error)
    assert "404" in message
    assert "`api_url`" in message
    assert "'braze_users'" in message
    assert result.target.summary()["requests"] == 1


def test_other_4xx_fail_fast(lytics_sandbox, config):
    lytics_sandbox.fail_next(1, status=400)
    result = run_target(config, singer_lines([braze_user(1)]))
    assert isinstance(result.error, LyticsError)
    assert "HTTP 400" in str(result.error)
    assert "not retried" in str(result.error)
    assert result.target.summary()["retries"] == 0


def test_413_points_at_max_batch_bytes(lytics_sandbox, config):
    lytics_sandbox.max_collect_bytes = 2000
    result = run_target(config, singer_lines([braze_user(i) for i in range(10)]))
    assert isinstance(result.error, LyticsConfigError)
    assert "`max_batch_bytes`" in str(result.error)


@pytest.mark.parametrize("where", ["refused", "dns"])
def test_unreachable_api_url_fails_at_once_naming_the_setting(config, where):
    if where == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
    else:
        url = "http://lytics-api.invalid"
    cfg = {**config, "api_url": url, "max_retries": 8, "retry_backoff_base": 1.0}
    result = run_target(cfg, singer_lines([braze_user(1)]))
    assert isinstance(result.error, LyticsConfigError)
    assert "`api_url`" in str(result.error)
    assert url in str(result.error)
    assert result.target.summary()["retries"] == 0
    assert result.states == []


def test_network_errors_after_first_contact_are_retried(lytics_sandbox, config, monkeypatch):
    """Once Lytics answered, a refused connection is transient (a restart): retried."""
    import requests

    real_post = requests.Session.post
    calls = {"n": 0}

    def flaky(self, url, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch: refused once
            raise requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
        return real_post(self, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "post", flaky)
    cfg = {**config, "max_batch_records": 1, "max_concurrency": 1}
    result = run_target(cfg, singer_lines([braze_user(1), braze_user(2)]))
    assert result.error is None
    assert len(lytics_sandbox.collected("braze_users")) == 2
    assert result.target.summary()["retries"] == 1


def test_network_errors_are_retried_then_reported(lytics_sandbox, config, monkeypatch):
    import requests

    real_post = requests.Session.post
    calls = {"n": 0}

    def dying(self, url, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise requests.ConnectionError("Connection reset by peer")
        return real_post(self, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "post", dying)
    cfg = {**config, "max_batch_records": 1, "max_concurrency": 1, "max_retries": 1}
    result = run_target(cfg, singer_lines([braze_user(1), braze_user(2)]))
    assert isinstance(result.error, LyticsRetriesExhaustedError)
    assert "ConnectionError" in str(result.error)
    assert result.target.summary()["retries"] == 1


def test_token_never_in_urls_or_logs(lytics_sandbox, config, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    lytics_sandbox.fail_next(1, status=500)
    cfg = {**config, "dry_run": True, "timestamp_field": "last_used_app_date"}
    result = run_target(cfg, singer_lines([braze_user(i) for i in range(3)]))
    assert result.error is None
    assert TOKEN not in caplog.text
    for req in lytics_sandbox.requests:
        assert TOKEN not in req.path
        assert TOKEN not in json.dumps(req.query)
        assert req.headers["authorization"] == TOKEN
    # and a debug-level subprocess run (urllib3 logs every URL)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(cfg))
    proc = subprocess.run(
        [str(TARGET_EXE), "--config", str(config_path)],
        input="\n".join(singer_lines([braze_user(1)])) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"TARGET_LYTICS_USERS_LOGLEVEL": "DEBUG", "LOGLEVEL": "DEBUG", "PATH": "/usr/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "/collect/json/braze_users" in proc.stderr  # debug logs do show the URL...
    assert TOKEN not in proc.stderr + proc.stdout  # ...but never the token


# What `meltano config target-lytics-users test` pipes into the loader (meltano 4.4,
# core/plugin_test_service.py LoaderTestService._generate_test_messages).
MELTANO_TEST_LINES = [
    json.dumps(
        {
            "type": "SCHEMA",
            "stream": "meltano_test_stream",
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                },
            },
            "key_properties": ["id"],
        }
    ),
    json.dumps(
        {
            "type": "RECORD",
            "stream": "meltano_test_stream",
            "record": {
                "id": 1,
                "name": "Meltano Test Record",
                "created_at": "2025-09-29T00:00:00Z",
            },
        }
    ),
    json.dumps(
        {"type": "STATE", "value": {"bookmarks": {"meltano_test_stream": {"last_record": 1}}}}
    ),
]


def test_meltano_config_test_checks_the_connection_and_stores_nothing(lytics_sandbox, config):
    result = run_target(config, MELTANO_TEST_LINES)
    assert result.error is None
    assert lytics_sandbox.streams() == []  # nothing collected into any stream
    (req,) = lytics_sandbox.requests_snapshot()
    assert (req.method, req.path) == ("POST", "/collect/json/braze_users")
    assert req.query.get("dryrun") == "true"
    assert b"Meltano Test Record" not in req.body


@pytest.mark.parametrize("bad", ["api_token", "api_url"])
def test_meltano_config_test_fails_naming_the_setting(lytics_sandbox, config, bad):
    cfg = (
        {**config, "api_token": "wrong-token"}
        if bad == "api_token"
        else {
            **config,
            "api_url": lytics_sandbox.url + "/v2",
        }
    )
    result = run_target(cfg, MELTANO_TEST_LINES)
    assert isinstance(result.error, LyticsConfigError)
    assert f"`{bad}`" in str(result.error)
    assert lytics_sandbox.streams() == []
