"""Every plugin retries one request on the same schedule (issue 15; common/retries.py).

Each plugin's REAL HTTP client sends one request to a loopback HTTP server that answers from a
script, with jitter fixed (`random()` = 0.5 in the plugin's copy of common/retries.py) and the
plugin's waits recorded instead of slept. Every plugin must make the same number of requests
and record the same waits, and stop after exactly `max_retries` + 1 requests when the server
keeps failing, `max_rate_limit_retries` + 1 when it keeps rate limiting, with its own error
naming the setting.

A plugin joins by adding a driver to DRIVERS: a function that sends one request with the real
client against `url` under POLICY, records its waits into `waits`, and returns None when the
request got through or the plugin's error text when it gave up.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import backoff._sync
import pytest
import tap_braze_csv.common.retries as braze_csv_retries
import tap_lytics_audience.common.retries as lytics_tap_retries
import target_braze_audience.common.retries as braze_retries
import target_lytics_users.common.retries as lytics_retries
from singer_sdk.exceptions import RetriableAPIError
from tap_braze_csv.rest_export import BrazeExportError, ExportClient, RestExportSettings
from tap_lytics_audience.tap import TapLyticsAudience
from target_braze_audience.client import BrazeClient
from target_lytics_users.client import LyticsClient, LyticsError

# The settings every driver applies (same names in every plugin).
POLICY = {
    "max_retries": 3,
    "max_rate_limit_retries": 2,
    "retry_backoff_base": 2.0,
    "retry_backoff_max": 30.0,
}
RANDOM = 0.5  # jitter factor 0.5 + 0.5 * 0.5 = 0.75


class Answer(t.NamedTuple):
    status: int
    headers: Callable[[], dict[str, str]] = dict  # built when sent ("now + 500" is then)


class ScriptedServer:
    """Answers each request with the next scripted answer (the last one repeats); counts them."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.requests = 0
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    owner.requests += 1
                    answer = owner.answers.pop(0) if len(owner.answers) > 1 else owner.answers[0]
                ok = 200 <= answer.status < 300
                body = (
                    {"message": "success", "data": {"message_count": 1}, "object_prefix": "p"}
                    if ok
                    else {}
                )
                payload = json.dumps(body or {"message": f"scripted {answer.status}"}).encode()
                self.send_response(answer.status)
                for name, value in answer.headers().items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # the taps' GETs (segment list, export download)

            def log_message(self, *args: t.Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


Driver = Callable[[str, list[float], pytest.MonkeyPatch], "str | None"]


def drive_target_braze_audience(url: str, waits: list[float], mp: pytest.MonkeyPatch) -> str | None:
    mp.setattr(braze_retries, "random", lambda: RANDOM)
    client = BrazeClient(
        api_key="k",
        rest_endpoint=url,
        rate_limit_per_second=0,
        request_timeout=5,
        max_retries=POLICY["max_retries"],
        max_rate_limit_retries=POLICY["max_rate_limit_retries"],
        retry_backoff_base=POLICY["retry_backoff_base"],
        retry_backoff_max=POLICY["retry_backoff_max"],
        stop=threading.Event(),
        logger=logging.getLogger("test"),
    )
    mp.setattr(client, "_sleep", lambda seconds: waits.append(seconds) or True)
    # After a 429 every sender pauses through the shared limiter: not this thread's wait.
    mp.setattr(client.limiter, "block_for", lambda seconds: None)
    result = client.track({"attributes": [{"external_id": "u1", "a": 1}]})
    return None if result.ok else result.error


def drive_target_lytics_users(url: str, waits: list[float], mp: pytest.MonkeyPatch) -> str | None:
    mp.setattr(lytics_retries, "random", lambda: RANDOM)
    client = LyticsClient(
        api_url=url,
        api_token="t",
        timeout=5,
        retry=lytics_retries.RetryPolicy.from_config(POLICY),
        logger=logging.getLogger("test"),
    )
    mp.setattr(client, "_sleep", lambda seconds: waits.append(seconds) or True)
    try:
        client.collect("braze_users", b'[{"id": 1}]', label="batch #1")
    except LyticsError as exc:
        return str(exc)
    return None


def drive_tap_lytics_audience(url: str, waits: list[float], mp: pytest.MonkeyPatch) -> str | None:
    """The SDK's request loop (RESTStream.request_records, backoff) listing the audiences."""
    mp.setattr(lytics_tap_retries, "random", lambda: RANDOM)
    # backoff sleeps with `time.sleep` of its _sync module (a private module of the library):
    # recorded here instead.
    mp.setattr(backoff._sync, "time", SimpleNamespace(sleep=waits.append))
    tap = TapLyticsAudience(
        config={"api_token": "t", "api_url": url, "request_timeout": 5, **POLICY}
    )
    try:
        list(tap.streams["audiences"].request_records(None))
    except RetriableAPIError as exc:
        return str(exc)
    return None


def _braze_export_client(url: str, waits: list[float], mp: pytest.MonkeyPatch) -> ExportClient:
    mp.setattr(braze_csv_retries, "random", lambda: RANDOM)
    config = {"api_key": "k", "rest_endpoint": url, "segment_ids": ["s"], **POLICY}
    settings = RestExportSettings.from_config({"rest_export": {**config, "request_timeout": 5}})
    assert settings is not None
    return ExportClient(settings, logging.getLogger("test"), sleep=waits.append)


def drive_tap_braze_csv_trigger(url: str, waits: list[float], mp: pytest.MonkeyPatch) -> str | None:
    """tap-braze-csv's POST /users/export/segment."""
    try:
        _braze_export_client(url, waits, mp).trigger("s")
    except BrazeExportError as exc:
        return str(exc)
    return None


def drive_tap_braze_csv_download(
    url: str, waits: list[float], mp: pytest.MonkeyPatch
) -> str | None:
    """tap-braze-csv's GET of the export's download URL (one poll: the export is ready)."""
    with tempfile.TemporaryDirectory() as tmp:
        client = _braze_export_client(url, waits, mp)
        try:
            client.download("s", f"{url}/export.zip", str(Path(tmp, "a")), time.monotonic() + 60)
        except BrazeExportError as exc:
            return str(exc)
    return None


DRIVERS: dict[str, Driver] = {
    "target-braze-audience": drive_target_braze_audience,
    "target-lytics-users": drive_target_lytics_users,
    "tap-lytics-audience": drive_tap_lytics_audience,
    "tap-braze-csv (export trigger)": drive_tap_braze_csv_trigger,
    "tap-braze-csv (export download)": drive_tap_braze_csv_download,
}


def _run(
    driver: Driver, answers: list[Answer], mp: pytest.MonkeyPatch
) -> tuple[list[float], int, str | None]:
    waits: list[float] = []
    with ScriptedServer(answers) as server:
        error = driver(server.url, waits, mp)
    return waits, server.requests, error


def _reset_in_500s() -> dict[str, str]:
    return {"X-RateLimit-Reset": str(int(time.time()) + 500)}


MIXED = [
    Answer(503, _reset_in_500s),  # Braze's window reset on a 5xx: no wait, the backoff applies
    Answer(503),
    Answer(429, lambda: {"Retry-After": "7"}),
    Answer(429, _reset_in_500s),
    Answer(500),
    Answer(200),
]
# Retry n (both kinds counted) waits the server's wait capped at 30, else
# min(2 * 2**(n-1), 30) * 0.75: 1.5, 3, then 7 (Retry-After), 30 (the reset, capped), then 22.5.
MIXED_WAITS = [1.5, 3.0, 7.0, 30.0, 22.5]


@pytest.fixture
def mp() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("plugin", list(DRIVERS))
def test_every_plugin_waits_the_same_schedule(plugin: str, mp: pytest.MonkeyPatch) -> None:
    waits, requests, error = _run(DRIVERS[plugin], MIXED, mp)
    assert error is None
    assert requests == 6
    assert waits == pytest.approx(MIXED_WAITS, abs=1e-9)


def test_the_plugins_agree_with_each_other() -> None:
    """The same waits and requests in every plugin, side by side (not only each against the
    table above)."""
    seen = {}
    for plugin, driver in DRIVERS.items():
        with pytest.MonkeyPatch.context() as patch:
            waits, requests, error = _run(driver, MIXED, patch)
        seen[plugin] = (waits, requests, error)
    assert len({repr(v) for v in seen.values()}) == 1, seen


@pytest.mark.parametrize("plugin", list(DRIVERS))
@pytest.mark.parametrize(
    ("status", "setting"), [(503, "max_retries"), (429, "max_rate_limit_retries")]
)
def test_a_server_that_keeps_failing_gets_one_request_plus_the_budget(
    plugin: str, status: int, setting: str, mp: pytest.MonkeyPatch
) -> None:
    waits, requests, error = _run(DRIVERS[plugin], [Answer(status)], mp)
    budget = POLICY[setting]
    assert requests == budget + 1
    assert error is not None
    # The setting named as the plugin spells it (tap-braze-csv: `rest_export.max_retries`).
    assert re.search(rf"`(rest_export\.)?{setting}` \(now {budget}\)", error), error
    # No server wait: the backoff, doubling from 2 s, jitter fixed at 0.75.
    assert waits == pytest.approx([2 * 2**n * 0.75 for n in range(budget)], abs=1e-9)
