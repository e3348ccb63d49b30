"""Configuration checked at first contact: a wrong key or endpoint fails fast naming the setting,
`meltano config test` writes nothing, the default store file and `require_store_url`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from target_braze_audience.client import BrazeSettingError
from target_braze_audience.store import MembershipStore


@pytest.mark.parametrize(
    ("status", "setting"), [(401, "api_key"), (403, "api_key"), (404, "rest_endpoint")]
)
def test_auth_errors_fail_fast_naming_setting(
    braze_sandbox: Any,
    tmp_path: Path,
    h: Any,
    status: int,
    setting: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = braze_sandbox
    secret = "very-secret-rest-key-9f8e7d"
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), api_key=secret)
    if status == 404:
        cfg["rest_endpoint"] = b.url + "/wrong-prefix"
        cfg["api_key"] = h.API_KEY
    elif status == 403:
        b.fail_next(1, status=403)
        cfg["api_key"] = h.API_KEY
    users = [f"u{i}" for i in range(400)]
    with caplog.at_level(logging.DEBUG), pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, h.audience_msgs({"a": users}))
    assert setting in str(err.value)
    assert secret not in str(err.value)
    assert secret not in caplog.text
    assert len(h.track_requests(b)) <= 8  # fail fast: no retry storm
    # Requests already in flight may have succeeded: the store holds exactly those.
    st = MembershipStore(cfg["store_url"])
    held = {u for (_a, u), present in st.memberships().items() if present}
    assert held == set(h.segments(b))
    if status != 403:
        assert held == set()
    st.close()


@pytest.mark.parametrize("where", ["refused", "dns"])
def test_unreachable_rest_endpoint_fails_at_once_naming_the_setting(
    tmp_path: Path, h: Any, where: str
) -> None:
    import socket
    import time

    if where == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
    else:
        url = "http://rest.braze.invalid"
    cfg = {
        "api_key": h.API_KEY,
        "rest_endpoint": url,
        "store_url": str(tmp_path / "s.sqlite"),
        "retry_backoff_base": 1.0,  # 5 retries from 1 s: half a minute if it retried
    }
    started = time.monotonic()
    with pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert time.monotonic() - started < 15
    assert "`rest_endpoint`" in str(err.value)
    assert url in str(err.value)
    st = MembershipStore(cfg["store_url"])
    assert not any(st.memberships().values())  # nothing recorded as sent
    st.close()


# What `meltano config target-braze-audience test` pipes into the loader (meltano 4.4,
# core/plugin_test_service.py LoaderTestService._generate_test_messages).
MELTANO_TEST_MSGS: list[dict[str, Any]] = [
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
    },
    {
        "type": "RECORD",
        "stream": "meltano_test_stream",
        "record": {"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"},
    },
    {"type": "STATE", "value": {"bookmarks": {"meltano_test_stream": {"last_record": 1}}}},
]


def test_meltano_config_test_checks_the_key_and_writes_nothing(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    store = tmp_path / "store.sqlite"
    cfg = h.braze_config(b, str(store))
    h.run_target(cfg, MELTANO_TEST_MSGS)
    assert b.users() == {}
    (req,) = h.track_requests(b)
    assert req.json == {"attributes": []}  # authenticated, nothing to write
    assert not store.exists()  # no membership store created by a connection test


@pytest.mark.parametrize("bad", ["api_key", "rest_endpoint"])
def test_meltano_config_test_fails_naming_the_setting(
    braze_sandbox: Any, tmp_path: Path, h: Any, bad: str
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "store.sqlite"))
    if bad == "api_key":
        cfg["api_key"] = "wrong-key"
    else:
        cfg["rest_endpoint"] = b.url + "/v2"
    with pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, MELTANO_TEST_MSGS)
    assert f"`{bad}`" in str(err.value)
    assert b.users() == {}


def test_default_store_file_is_announced_loudly_once(
    braze_sandbox: Any,
    tmp_path: Path,
    h: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = h.braze_config(braze_sandbox, "")
    del cfg["store_url"]
    with caplog.at_level(logging.WARNING):
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    default = tmp_path / ".braze_audience_store.sqlite"
    assert default.exists()
    warnings = [r.getMessage() for r in caplog.records if "NO store_url SET" in r.getMessage()]
    assert len(warnings) == 1
    assert str(default) in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    assert "NO store_url SET" not in caplog.text  # the file exists now: no more warning


def test_require_store_url_refuses_the_default_file(
    braze_sandbox: Any, tmp_path: Path, h: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from target_braze_audience.target import StoreUrlRequiredError

    monkeypatch.chdir(tmp_path)
    cfg = {**h.braze_config(braze_sandbox, ""), "require_store_url": True}
    del cfg["store_url"]
    with pytest.raises(StoreUrlRequiredError) as err:
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    assert "store_url" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no SQLite file created
    assert h.track_requests(braze_sandbox) == []
    # a connection test (meltano config test) still works: it opens no store
    h.run_target(cfg, MELTANO_TEST_MSGS)
    assert list(tmp_path.iterdir()) == []
