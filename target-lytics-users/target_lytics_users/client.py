"""HTTP client for Lytics' collect API: one POST per batch, bounded retries, clear errors."""

from __future__ import annotations

import logging
import socket
import threading
import time
import typing as t
from dataclasses import dataclass, field
from urllib.parse import quote

import orjson
import requests
from singer_sdk import metrics

from target_lytics_users.common.retries import RetryPolicy, server_wait
from target_lytics_users.common.retrying import RetriesExhausted, Retryable, retrying

USER_AGENT = "target-lytics-users"
DEFAULT_RETRY = RetryPolicy(max_retries=8)  # the defaults of the settings


class LyticsError(Exception):
    """A batch could not be delivered; the run must stop and exit non-zero."""


class LyticsConfigError(LyticsError):
    """Lytics refused the request because of a setting (token, URL, stream, sizes)."""


class LyticsRetriesExhaustedError(LyticsError):
    """Lytics kept answering 5xx (or failing) past `max_retries`, or 429 past its budget."""


class LyticsAbortedError(LyticsError):
    """A batch was not (re)sent because another batch already failed the run."""


class LyticsRejectedError(LyticsError):
    """Lytics rejected records of a batch and `fail_on_rejected` is set."""


@dataclass
class CollectResult:
    """What Lytics said about one accepted batch."""

    status: int
    message_count: int
    rejected_count: int
    attempts: int


@dataclass
class ClientStats:
    """Counters shared by every sending thread (guarded by `lock`)."""

    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, requests: int = 0, retries: int = 0, bytes_sent: int = 0) -> None:
        """Add to the counters."""
        with self.lock:
            self.requests += requests
            self.retries += retries
            self.bytes_sent += bytes_sent


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


class LyticsClient:
    """Posts JSON-array bodies to `{api_url}/collect/json/{stream}`.

    The token goes in the `Authorization` header only (raw, no "Bearer"), never in the
    URL, so it cannot reach logs, proxies or exception messages. One `requests.Session`
    per thread keeps connections alive.
    """

    def __init__(
        self,
        *,
        api_url: str,
        api_token: str,
        dry_run: bool = False,
        timestamp_field: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        logger: logging.Logger | None = None,
    ) -> None:
        """Configure the client (no connection is opened yet)."""
        self.api_url = api_url.rstrip("/")
        self._token = api_token
        self.timeout = timeout
        self.retry = retry
        self.logger = logger or logging.getLogger(__name__)
        self.params: dict[str, str] = {}
        if dry_run:
            self.params["dryrun"] = "true"
        if timestamp_field:
            self.params["timestamp_field"] = timestamp_field
        self.stats = ClientStats()
        self.abort = threading.Event()  # set by the target when the run fails: retries stop
        self._local = threading.local()
        self.contacted = False  # an HTTP answer came back once: network errors are transient

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(
                {
                    "Authorization": self._token,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": USER_AGENT,
                }
            )
            self._local.session = session
        return session

    def _sleep(self, seconds: float) -> bool:
        """Wait before a retry; False when the run failed meanwhile (stop retrying)."""
        return not self.abort.wait(seconds)

    def collect_url(self, stream: str) -> str:
        """URL of the collect endpoint for `stream` (no query string, no secret)."""
        return f"{self.api_url}/collect/json/{quote(stream, safe='')}"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _server_message(self, response: requests.Response) -> str:
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            text = response.text[:300]
        else:
            text = (
                str(payload.get("message", payload)) if isinstance(payload, dict) else str(payload)
            )
        return self._redact(text.strip() or response.reason or "")

    def _fatal(
        self, response: requests.Response, stream: str, label: str, size: int
    ) -> LyticsError:
        status = response.status_code
        server = self._server_message(response)
        url = self.collect_url(stream)
        if status in {401, 403}:
            return LyticsConfigError(
                f"Lytics refused the token (HTTP {status}) on POST {url} for {label}: check the "
                f"`api_token` setting (a valid, unexpired token whose role may write to stream "
                f"'{stream}', e.g. Data Manager). Server said: {server}"
            )
        if status == 404:
            return LyticsConfigError(
                f"Lytics answered 404 Not Found on POST {url} for {label}: check the `api_url` "
                f"setting ({self.api_url!r}) and the Lytics stream name {stream!r} (settings "
                f"`stream` / `lytics_stream_map`). Server said: {server}"
            )
        if status == 413:
            return LyticsConfigError(
                f"Lytics refused a request body of {size} bytes as too large (HTTP 413) on POST "
                f"{url} for {label}: lower the `max_batch_bytes` setting. Server said: {server}"
            )
        return LyticsError(
            f"Lytics rejected {label} with HTTP {status} on POST {url}; client errors are not "
            f"retried. Server said: {server}"
        )

    def collect(
        self, stream: str, body: bytes, *, label: str, dry_run: bool = False
    ) -> CollectResult:
        """POST one batch; retry 429/5xx/network errors; raise `LyticsError` when it cannot land.

        Args:
            stream: Lytics stream name.
            body: The serialized JSON array.
            label: Human description of the batch for messages (stream, number, input lines).
            dry_run: Send `dryrun=true` whatever the `dry_run` setting (Lytics stores nothing).

        Returns:
            The parsed response counts.

        """
        url = self.collect_url(stream)
        params = {**self.params, "dryrun": "true"} if dry_run else self.params
        attempts = 0
        started = time.monotonic()

        def attempt() -> CollectResult:
            nonlocal attempts
            attempts += 1
            return self._post_once(stream, url, params, body, label, attempts)

        def log(outcome: Retryable, count: int, budget: int, wait: float) -> None:
            self.stats.add(retries=1)
            self.logger.warning(
                "Lytics: %s for %s; retry %d/%d in %.2fs%s",
                outcome.reason,
                label,
                count,
                budget,
                wait,
                " (Retry-After)" if outcome.server_wait is not None else "",
            )

        def sleep(seconds: float) -> None:
            if not self._sleep(seconds):
                msg = f"{label} not sent: the run is stopping after an earlier failure"
                raise LyticsAbortedError(msg)

        try:
            return retrying(self.retry, sleep=sleep, log=log)(attempt)
        except RetriesExhausted as exc:
            msg = (
                f"Lytics did not accept {label} on POST {url} after {attempts} attempts over "
                f"{time.monotonic() - started:.1f}s (last: {exc.last.reason}); raise "
                f"`{exc.setting}` (now {exc.budget}) or `retry_backoff_max` to retry longer, "
                "or retry the run later."
            )
            raise LyticsRetriesExhaustedError(msg) from None

    def _post_once(
        self, stream: str, url: str, params: dict[str, str], body: bytes, label: str, attempt: int
    ) -> CollectResult:
        """One POST: the result, `Retryable` (429, 5xx, a transient network error) or an error."""
        if self.abort.is_set():
            msg = f"{label} not sent: the run is stopping after an earlier failure"
            raise LyticsAbortedError(msg)
        timer = metrics.Timer(
            metrics.Metric.HTTP_REQUEST_DURATION,
            tags={metrics.Tag.ENDPOINT: "/collect/json/{stream}", metrics.Tag.STREAM: stream},
        )
        try:
            with timer:
                response = self._session().post(url, params=params, data=body, timeout=self.timeout)
                timer.tags[metrics.Tag.HTTP_STATUS_CODE] = response.status_code
        except (requests.ConnectionError, requests.Timeout) as exc:
            self.stats.add(requests=1)
            why = None if self.contacted else unreachable_reason(exc)
            if why:
                msg = (
                    f"Cannot reach Lytics at {self.api_url} ({why}) for {label}: check the "
                    "`api_url` setting. Nothing was sent."
                )
                raise LyticsConfigError(msg) from None
            raise Retryable(f"{type(exc).__name__} talking to {self.api_url}") from None
        self.stats.add(requests=1)
        self.contacted = True
        status = response.status_code
        if 200 <= status < 300:
            self.stats.add(bytes_sent=len(body))
            return self._result(response, stream, label, attempt)
        if status != 429 and status < 500:
            raise self._fatal(response, stream, label, len(body))
        raise Retryable(
            f"HTTP {status} ({self._server_message(response)[:120]})",
            rate_limited=status == 429,
            server_wait=server_wait(response.headers, rate_limited=status == 429),
        )

    def _result(
        self, response: requests.Response, stream: str, label: str, attempts: int
    ) -> CollectResult:
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            msg = (
                f"Lytics answered HTTP {response.status_code} to {label} on POST "
                f"{self.collect_url(stream)} with a body that is not JSON; check `api_url`."
            )
            raise LyticsError(msg) from exc
        data: dict[str, t.Any] = {}
        if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
            data = payload["data"]
        return CollectResult(
            status=response.status_code,
            message_count=int(data.get("message_count") or 0),
            rejected_count=int(data.get("rejected_count") or 0),
            attempts=attempts,
        )

    def close(self) -> None:
        """Close this thread's session (other threads' sessions close with their threads)."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
