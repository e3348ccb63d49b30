"""HTTP client for Braze `POST /users/track`: rate limit, retries, partial errors.

The SDK's REST retry machinery exists for streams only (taps), so the sink side retries with
tenacity on the schedule every plugin shares (common/retries.py, common/retrying.py): 5xx,
timeouts and transient connection errors within `max_retries`, 429 within
`max_rate_limit_retries`, each waiting the server's `Retry-After`/`X-RateLimit-Reset` (at most
`retry_backoff_max`) or the backoff. A shared client-side rate limiter spaces requests and
pauses every sender when Braze says the window is spent; 401/403/404 fail fast naming the
setting.

Braze's other answers are reported, not retried here (the delta engine decides):
`202 {"message": "queued"}` is an accepted request; a 400 (or a 2xx whose message is
not "success") naming objects in `errors` rejects those objects and applied nothing
else; a 400/413 without per-object detail is a refusal the engine splits.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
import typing as t
from dataclasses import dataclass, field

import orjson
import requests
from singer_sdk import metrics

from target_braze_audience.common.retries import RetryPolicy, server_wait
from target_braze_audience.common.retrying import (
    RetriesExhausted,
    Retryable,
    describe,
    retrying,
)

TRACK_PATH = "/users/track"


class BrazeSettingError(Exception):
    """Braze refused the credentials or the endpoint: fail fast, naming the setting."""


@dataclass
class TrackResult:
    """Outcome of one `/users/track` request (after retries)."""

    ok: bool
    """True when Braze accepted the request: 2xx "success", or 202 "queued"."""
    rejected: dict[int, str] = field(default_factory=dict)
    """Index in `attributes` -> Braze's reason, for objects named in `errors`."""
    error: str | None = None
    """Why the request finally failed (ok is False and `refused` is None)."""
    refused: str | None = None
    """Braze refused the whole request (400/413, or a 2xx fatal message): its message.

    Objects named in `rejected` are rejected; the others were not applied.
    """
    queued: bool = False
    """Braze answered 202 {"message": "queued"}: received, to be processed later."""
    status: int = 0
    attempts: int = 0
    rate_limited: int = 0
    stopped: bool = False
    """The run was stopping (SIGTERM): not sent, or not retried. Not a failure of Braze's."""


class RateLimiter:
    """Spaces requests to at most `per_second` and honours server-imposed pauses."""

    def __init__(self, per_second: float, stop: threading.Event) -> None:
        """Create a limiter; `stop` interrupts any wait."""
        self.interval = 1.0 / per_second if per_second and per_second > 0 else 0.0
        self._lock = threading.Lock()
        self._next = 0.0
        self._blocked_until = 0.0
        self._stop = stop

    def acquire(self) -> bool:
        """Wait for the next slot. Returns False when the run is stopping."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next, self._blocked_until)
            self._next = slot + self.interval
        delay = slot - time.monotonic()
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()

    def block_for(self, seconds: float) -> None:
        """Pause every sender for `seconds` (Braze said the window is spent)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)


def _json_object(resp: requests.Response) -> dict[str, t.Any]:
    """Return the answer's JSON object, or {} when it is not one."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _text_or(message: t.Any, text: str) -> str:
    """Braze's `message` when it is a non-empty string, else the answer's text."""
    return message if isinstance(message, str) and message else text


class _Stopping(Exception):
    """The run is stopping: the request is not sent, or not retried (`message` says which)."""


@dataclass
class _Request:
    """One `/users/track` request across its attempts."""

    body: bytes
    result: TrackResult = field(default_factory=lambda: TrackResult(ok=False))
    started: float = field(default_factory=time.monotonic)
    reason: str = ""
    """Why the last attempt is being retried (for the stopping message)."""


def unreachable_reason(exc: BaseException) -> str | None:
    """Why a connection error can never succeed by retrying, or None when it may be transient.

    A host name that does not resolve or a refused connection on the first request means a
    wrong URL setting (or a server that is not there): retrying only delays the error.
    """
    seen: set[int] = set()
    todo: list[t.Any] = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(err, ConnectionRefusedError):
            return "the connection was refused"
        todo += [err.__cause__, err.__context__, getattr(err, "reason", None), *err.args]
    return None


class BrazeClient:
    """Sends attribute batches to `/users/track` from several threads."""

    def __init__(
        self,
        *,
        api_key: str,
        rest_endpoint: str,
        rate_limit_per_second: float,
        max_retries: int,
        max_rate_limit_retries: int,
        request_timeout: float,
        retry_backoff_base: float,
        retry_backoff_max: float,
        stop: threading.Event,
        logger: logging.Logger,
    ) -> None:
        """Configure the client; nothing is sent until `track`."""
        self._api_key = api_key
        self.endpoint = rest_endpoint.rstrip("/")
        self.url = self.endpoint + TRACK_PATH
        self.policy = RetryPolicy(
            max_retries, max_rate_limit_retries, retry_backoff_base, retry_backoff_max
        )
        self.timeout = request_timeout
        self.stop = stop
        self.logger = logger
        self.limiter = RateLimiter(rate_limit_per_second, stop)
        self._local = threading.local()
        self.request_counter = metrics.http_request_counter(
            "braze_users_track", TRACK_PATH, log_interval=10.0
        )
        self._metric_lock = threading.Lock()
        self.contacted = False  # an HTTP answer came back once: network errors are transient

    def _session(self) -> requests.Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = requests.Session()
            sess.headers.update(
                {
                    "Authorization": f"Bearer {self._api_key}",
                    "Content-Type": "application/json",
                    "User-Agent": "target-braze-audience",
                }
            )
            self._local.session = sess
        return sess

    def _scrub(self, text: str) -> str:
        """Never let the key into a log line or exception."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _sleep(self, seconds: float) -> bool:
        return not self.stop.wait(seconds)

    def _pause(self, request: _Request, seconds: float) -> None:
        """Wait before a retry (tenacity's sleep); raise `_Stopping` when the run stops."""
        if not self._sleep(seconds):
            raise _Stopping(f"{request.reason}; not retried: the run is stopping")

    def _log_retry(
        self, request: _Request, outcome: Retryable, count: int, budget: int, wait: float
    ) -> None:
        """Say what is retried and when (tenacity's before_sleep); a 429 pauses every sender."""
        request.reason = outcome.reason
        if outcome.rate_limited:
            self.limiter.block_for(wait)  # the window is Braze-wide, not this thread's
            self.logger.info("%s", describe(outcome, count, budget, wait))
        else:
            self.logger.warning("%s", describe(outcome, count, budget, wait))

    def _gave_up(
        self, result: TrackResult, started: float, last: str, setting: str, value: int
    ) -> str:
        """Say how many attempts, over how long, the last answer, and the setting to raise."""
        return (
            f"gave up after {result.attempts} attempt(s) over "
            f"{time.monotonic() - started:.1f}s; last: {last}; raise `{setting}` "
            f"(now {value}) to retry longer"
        )

    def _setting_error(self, status: int, body: str) -> BrazeSettingError:
        if status == 401:
            hint = (
                "check the `api_key` setting (a Braze REST API key of this workspace) and "
                "that `rest_endpoint` is your instance's REST URL"
            )
        elif status == 403:
            hint = (
                "the `api_key` lacks the users.track permission, the key's IP allowlist "
                "refuses this host, or the account is inactive"
            )
        else:
            # Braze documents 404 for an unknown REST API key as well as for a wrong URL.
            hint = (
                f"either the `api_key` is unknown to this instance (Braze answers 404 for an "
                f"unknown REST API key) or {self.url} is not a Braze REST endpoint: check "
                "`api_key` and that `rest_endpoint` is your instance's REST URL"
            )
        msg = f"Braze answered {status} to POST {TRACK_PATH}: {hint}. Braze said: {body}"
        return BrazeSettingError(self._scrub(msg))

    def check_connection(self) -> str:
        """Make an authenticated request that changes nothing: `/users/track` with no objects.

        Braze checks the key (401/403) and the URL (404) first; a body with no objects is then
        refused with 400 "Valid data must be provided..." (or accepted, had Braze relaxed the
        rule): either way the key and `rest_endpoint` work and nothing was written. Used by
        `meltano config target-braze-audience test` instead of loading Meltano's test record.
        """
        result = self.track({"attributes": []})
        if result.ok or result.status == 400:
            return (
                f"Braze accepted the API key at {self.url} (HTTP {result.status}; nothing written)"
            )
        msg = f"Connection test against {self.url} failed: {result.error}"
        raise BrazeSettingError(self._scrub(msg))

    def track(self, payload: dict[str, t.Any]) -> TrackResult:
        """POST one batch; retries 5xx/timeouts/429 within bounds. Thread-safe."""
        request = _Request(orjson.dumps(payload))
        result = request.result
        loop = retrying(
            self.policy,
            sleep=functools.partial(self._pause, request),
            log=functools.partial(self._log_retry, request),
        )
        try:
            return t.cast("TrackResult", loop(self._attempt, request))
        except _Stopping as exc:
            result.stopped = True
            result.error = str(exc)
        except RetriesExhausted as exc:
            last = exc.last.reason
            if exc.last.rate_limited:
                last = f"429 rate limited ({result.rate_limited} times)"
            result.error = self._gave_up(result, request.started, last, exc.setting, exc.budget)
        return result

    def _attempt(self, request: _Request) -> TrackResult:
        """One POST: the result, `Retryable` (429, 5xx, a transient network error) or an error."""
        result = request.result
        if not self.limiter.acquire():
            raise _Stopping("not sent: the run is stopping")
        result.attempts += 1
        try:
            with metrics.Timer(
                metrics.Metric.HTTP_REQUEST_DURATION, {metrics.Tag.ENDPOINT: TRACK_PATH}
            ) as timer:
                resp = self._session().post(self.url, data=request.body, timeout=self.timeout)
                timer.tags[metrics.Tag.HTTP_STATUS_CODE] = resp.status_code
            with self._metric_lock:
                self.request_counter.increment()
        except (requests.Timeout, requests.ConnectionError) as exc:
            why = None if self.contacted else unreachable_reason(exc)
            if why:
                msg = f"Cannot reach Braze at {self.endpoint} ({why}): check the `rest_endpoint` setting"
                raise BrazeSettingError(msg) from None
            raise Retryable(f"{type(exc).__name__} talking to {self.url}") from None
        self.contacted = True
        return self._read_answer(result, resp)

    def _read_answer(self, result: TrackResult, resp: requests.Response) -> TrackResult:
        """Braze's answer: retryable (429, 5xx), fail-fast (401/403/404), or the result."""
        status = resp.status_code
        text = self._scrub(resp.text[:300])
        wait = server_wait(resp.headers, rate_limited=status == 429)
        if status == 429:
            result.rate_limited += 1
            raise Retryable(
                "Braze answered 429 (rate limited)", rate_limited=True, server_wait=wait
            )
        remaining = resp.headers.get("X-RateLimit-Remaining")
        if remaining is not None and remaining.strip() == "0":
            # The window is spent: pause every sender until it resets (or a second).
            reset = server_wait(resp.headers)
            self.limiter.block_for(1.0 if reset is None else min(reset, self.policy.backoff_max))
        if status in {401, 403, 404}:
            raise self._setting_error(status, text)
        if status >= 500:
            raise Retryable(f"Braze answered {status}: {text}", server_wait=wait)
        result.status = status
        return self._final(result, resp, status, text)

    def _final(
        self, result: TrackResult, resp: requests.Response, status: int, text: str
    ) -> TrackResult:
        """Read a 2xx/4xx answer into `result`: accepted, queued, refused, or an error."""
        data = _json_object(resp)
        message = data.get("message")
        if status >= 400 and status not in {400, 413}:
            result.error = f"Braze answered {status}: {text}"
            return result
        self._read_errors(result, data.get("errors"))
        if status == 202 and message == "queued":
            # Braze during maintenance: received and queued, processed later.
            result.queued = result.ok = True
            return result
        if status < 300 and message == "success":
            result.ok = True
            return result
        if status >= 400 or result.rejected:
            # 400/413, or a 2xx carrying a fatal message with per-object errors.
            result.refused = self._scrub(f"{status} {_text_or(message, text)}"[:300])
            return result
        result.error = f"Braze answered {status} with message {message!r}: {text}"
        return result

    def _read_errors(self, result: TrackResult, errors: t.Any) -> None:
        """Collect `errors` items naming an attributes object into `result.rejected`."""
        if not isinstance(errors, list):
            return
        for item in errors:
            if not isinstance(item, dict):
                continue
            idx = item.get("index")
            if (
                item.get("input_array", "attributes") == "attributes"
                and isinstance(idx, int)
                and idx >= 0
                and idx not in result.rejected
            ):
                reason = item.get("type") or item.get("message") or "rejected"
                result.rejected[idx] = self._scrub(str(reason))[:300]
