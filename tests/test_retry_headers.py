"""The waits a server asks for (`Retry-After`, Braze's `X-RateLimit-Reset`) are read the same
way by every plugin that honours them (common/retry_headers.py), through each plugin's own
code path: seconds (or an HTTP-date) from now, never negative, and a value that is not a finite
number falls back to the plugin's own backoff instead of a wait of forever or of nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from types import SimpleNamespace

import pytest
import requests
from singer_sdk.exceptions import RetriableAPIError
from tap_braze_csv.rest_export import ExportClient
from tap_lytics_audience import client as tap_lytics_client
from tap_lytics_audience.common import retries as lytics_tap_retries
from tap_lytics_audience.common.retries import RetryPolicy
from target_braze_audience import client as braze_client
from target_lytics_users import client as lytics_client

FALLBACK = 0.125  # the plugin's own backoff in these probes: "the header was not used"


def _response(status: int, headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


def _braze_csv_wait(status: int, headers: dict[str, str]) -> float | None:
    """The server wait tap-braze-csv's export client takes from a retried answer."""
    return ExportClient._answer_retryable("export", _response(status, headers), "p").server_wait


def _lytics_tap_wait(headers: dict[str, str]) -> float | None:
    """The first wait of tap-lytics-audience's backoff generator after a 429 with `headers`."""
    policy = RetryPolicy(backoff_base=FALLBACK, backoff_max=10_000.0)
    stream = SimpleNamespace(retry_policy=policy)
    waits = tap_lytics_client.LyticsStream.backoff_wait_generator(stream)  # type: ignore[arg-type]
    waits.send(None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lytics_tap_retries, "random", lambda: 1.0)  # backoff(1) = FALLBACK exactly
        wait = waits.send(RetriableAPIError("429", _response(429, headers)))
    return None if wait == FALLBACK else wait


RETRY_AFTER: dict[str, Callable[[str], float | None]] = {
    "tap-lytics-audience": lambda v: _lytics_tap_wait({"Retry-After": v}),
    "target-lytics-users": lambda v: lytics_client.server_wait({"Retry-After": v}),
    "tap-braze-csv": lambda v: _braze_csv_wait(503, {"Retry-After": v}),
}


RESET: dict[str, Callable[[str], float | None]] = {
    "tap-lytics-audience": lambda v: _lytics_tap_wait({"X-RateLimit-Reset": v}),
    "target-braze-audience": lambda v: braze_client.server_wait({"X-RateLimit-Reset": v}),
    "tap-braze-csv": lambda v: _braze_csv_wait(429, {"X-RateLimit-Reset": v}),
}


@pytest.mark.parametrize("plugin", list(RETRY_AFTER))
def test_retry_after_is_read_the_same_everywhere(plugin: str) -> None:
    read = RETRY_AFTER[plugin]
    assert read("12") == 12.0
    assert read(" 3.5 ") == 3.5
    assert read("-4") == 0.0
    ahead = read(formatdate(time.time() + 30, usegmt=True))  # the HTTP-date form
    assert ahead is not None
    assert 27 <= ahead <= 31
    assert read(formatdate(time.time() - 30, usegmt=True)) == 0.0
    for bad in ("inf", "Infinity", "nan", "soon", ""):
        assert read(bad) is None, bad


@pytest.mark.parametrize("plugin", list(RESET))
def test_rate_limit_reset_is_read_the_same_everywhere(plugin: str) -> None:
    read = RESET[plugin]
    ahead = read(str(int(time.time()) + 20))
    assert ahead is not None
    assert 18 <= ahead <= 20.5
    # A reset already past: no wait from the header.
    assert read(str(int(time.time()) - 20)) in {0.0, None}
    for bad in ("inf", "nan", "soon"):
        assert read(bad) is None, bad
