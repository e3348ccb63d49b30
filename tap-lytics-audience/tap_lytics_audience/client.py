"""Lytics REST plumbing shared by the streams: auth, errors, retries, cursor paging."""

from __future__ import annotations

import functools
import logging
import socket
import typing as t
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse

import backoff  # the retry library of singer-sdk (request_decorator below)
import orjson
import requests
from singer_sdk import RESTStream
from singer_sdk.authenticators import APIKeyAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator

from tap_lytics_audience.common.retries import RetryPolicy, retry_message, server_wait

if t.TYPE_CHECKING:
    from backoff.types import Details
    from singer_sdk.helpers.types import Context

EXPIRED_CURSOR_MESSAGE = "invalid or expired scan cursor"
RETRY_COUNT = "lytics_retry_count"
"""Attribute the wait generator sets on each exception it answers: (count, budget) for the log."""
CURSOR_KEYS = ("_next", "next")


class LyticsAuthError(FatalAPIError):
    """Lytics refused the token (401/403): fail fast, never retried."""


class ScanCursorExpired(FatalAPIError):
    """Lytics answered 400 "invalid or expired scan cursor": the scan must restart."""


class MalformedScanPage(RetriableAPIError):
    """A scan answer that is not a page of profiles (e.g. 200 without a `data` list): retried.

    Counting such a page as empty would undercount the snapshot and remove the members it
    should have carried, so it is retried like a 5xx and, when retries run out, the
    audience gets no snapshot and the run fails.
    """


class AudienceScanFailed(FatalAPIError):
    """One or more audiences could not be scanned into a trustworthy snapshot."""


def response_json(response: requests.Response) -> t.Any:
    """Decode a response body once (orjson) and cache it on the response object.

    Both the record parser and the paginator need the body; the SDK would decode it twice.
    """
    cached = getattr(response, "_lytics_json", None)
    if cached is None:
        cached = orjson.loads(response.content) if response.content else {}
        response._lytics_json = cached  # type: ignore[attr-defined]
    return cached


def lytics_message(response: requests.Response) -> str:
    """Return the `message` of a Lytics error envelope, or a short excerpt of the body."""
    try:
        body = response_json(response)
    except orjson.JSONDecodeError:
        return response.text[:200]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:500]
    return ""


def unreachable_reason(exc: BaseException) -> str | None:
    """Why a connection error can never succeed by retrying, or None when it may be transient.

    A host name that does not resolve or a refused connection on the first request means a
    wrong `api_url` (or a server that is not there): retrying only delays the error.
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


class LyticsUnreachableError(FatalAPIError):
    """The first request could not connect (DNS failure, refused): `api_url` is wrong."""


class LyticsCursorPaginator(BaseAPIPaginator[t.Optional[str]]):  # noqa: UP045
    """Opaque scan cursor read from `_next` (go-lytics) or `next` (doc text).

    An absent, empty or null cursor ends the scan.
    """

    def __init__(self) -> None:
        super().__init__(None)

    def get_next(self, response: requests.Response) -> str | None:
        """Return the cursor for the next page, or None on the last page."""
        body = response_json(response)
        if not isinstance(body, dict):
            return None
        for key in CURSOR_KEYS:
            value = body.get(key)
            if value:
                return str(value)
        return None


class LyticsStream(RESTStream):
    """Base stream: raw-token auth, safe error messages, the retry contract (common/retries.py)."""

    records_jsonpath = "$.data[*]"
    extra_retry_statuses: t.Sequence[int] = [HTTPStatus.TOO_MANY_REQUESTS]

    @property
    def url_base(self) -> str:
        """Lytics API base URL from `api_url`."""
        return str(self.config.get("api_url") or "https://api.lytics.io").rstrip("/")

    @property
    def authenticator(self) -> APIKeyAuthenticator:
        """Raw token in the `Authorization` header (no "Bearer"), as Lytics expects."""
        return APIKeyAuthenticator(
            key="Authorization", value=str(self.config["api_token"]), location="header"
        )

    @property
    def timeout(self) -> float:  # type: ignore[override]
        """Per-request timeout in seconds (`request_timeout`).

        The SDK types this as int; requests takes any number, and the setting is a number
        like the other plugins' `request_timeout`.
        """
        return float(self.config.get("request_timeout", 60))

    # --- errors -------------------------------------------------------------------------

    @property
    def _contacted(self) -> bool:
        return bool(getattr(self._tap, "lytics_contacted", False))

    def validate_response(self, response: requests.Response) -> None:
        """Classify a response: auth errors and expired cursors get their own exceptions."""
        self._tap.lytics_contacted = True  # type: ignore[attr-defined]
        status = response.status_code
        if status == HTTPStatus.NOT_FOUND and self.path == "/api/segment":
            msg = (
                f"Lytics answered 404 Not Found on {urlparse(response.url).path}, the audience "
                f"list: check the `api_url` setting ({self.url_base!r}; the base URL only, "
                "e.g. https://api.lytics.io, without /api or /v2)."
            )
            raise FatalAPIError(msg)
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            msg = (
                f"Lytics refused the `api_token` setting (HTTP {status} on "
                f"{urlparse(response.url).path}: {self._redact(lytics_message(response))}). "
                "Check that `api_token` is a valid, unexpired Lytics API token with read access "
                "to segments."
            )
            raise LyticsAuthError(msg)
        if status == HTTPStatus.BAD_REQUEST and self._is_cursor_error(response):
            raise ScanCursorExpired(self.response_error_message(response))
        super().validate_response(response)
        if not response.content:
            problem = "an empty body"
        else:
            try:
                response_json(response)
                return
            except orjson.JSONDecodeError as exc:
                problem = f"a truncated or malformed JSON body ({exc})"
        # A body cut short on the way is transient: retried like a 5xx, within `max_retries`.
        msg = f"Lytics answered HTTP {status} on {urlparse(response.url).path} with {problem}"
        raise RetriableAPIError(msg, response)

    @staticmethod
    def _is_cursor_error(response: requests.Response) -> bool:
        """Tell whether a 400 means "restart the scan".

        Lytics documents no error for a stale `start` cursor ("must be recent"), so besides the
        message we know, any 400 on a request that carried a cursor, or whose message speaks of
        the cursor, restarts the audience's scan (bounded by `max_scan_restarts`).
        """
        message = lytics_message(response).lower()
        if EXPIRED_CURSOR_MESSAGE in message or "cursor" in message:
            return True
        query = parse_qs(urlparse(response.request.url or "").query) if response.request else {}
        return bool(query.get("start"))

    def _redact(self, text: str) -> str:
        token = str(self.config.get("api_token") or "")
        return text.replace(token, "***") if token else text

    def response_error_message(self, response: requests.Response) -> str:
        """Status, path (no query) and the Lytics message, with the token redacted.

        The SDK default appends the raw body and header names; we keep only what is safe.
        """
        kind = "Client" if response.status_code < HTTPStatus.INTERNAL_SERVER_ERROR else "Server"
        path = urlparse(response.url).path or self.path
        msg = f"{response.status_code} {kind} Error: {response.reason} for path: {path}"
        detail = lytics_message(response)
        if detail:
            msg += f": {detail}"
        return self._redact(msg)

    # --- retries ------------------------------------------------------------------------

    def request_decorator(self, func: t.Callable) -> t.Callable:
        """Retry like the SDK, except that an unreachable host fails at once.

        Replaces the SDK's because a DNS failure or a refused connection on the first request
        would otherwise be retried `max_retries` times (minutes) before a raw ConnectionError;
        later network errors (the API was reachable) are retried as before.
        """
        retried = backoff.on_exception(
            self.backoff_wait_generator,
            (
                ConnectionResetError,
                RetriableAPIError,
                requests.exceptions.Timeout,
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ),
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=self.logger,
            giveup=lambda exc: not self._contacted and unreachable_reason(exc) is not None,
        )(func)

        @functools.wraps(func)
        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            try:
                return retried(*args, **kwargs)
            except requests.exceptions.ConnectionError as exc:
                why = None if self._contacted else unreachable_reason(exc)
                if why is None:
                    raise
                msg = (
                    f"Cannot reach Lytics at {self.url_base} ({why}): check the `api_url` setting."
                )
                raise LyticsUnreachableError(msg) from None

        return call

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry settings (`max_retries`, `max_rate_limit_retries`, `retry_backoff_*`)."""
        return RetryPolicy.from_config(self.config)

    def backoff_max_tries(self) -> int:
        """Return the attempts per request at most: 1 + both retry budgets.

        The wait generator ends the retrying earlier, when one of the two budgets is used up.
        """
        policy = self.retry_policy
        return 1 + policy.max_retries + policy.max_rate_limit_retries

    def backoff_wait_generator(self) -> t.Generator[float, t.Any, None]:
        """Yield the waits of the retry contract (common/retries.py), one generator per request.

        backoff sends each raised exception into the generator, so the answer is in scope: a
        429 counts against `max_rate_limit_retries`, anything else against `max_retries`.
        When a budget is used up, an API error is raised again saying so (same class: callers
        catch subclasses); a network error ends the generator and backoff raises it as it came.
        """
        policy = self.retry_policy

        def waits() -> t.Generator[float, t.Any, None]:
            exc = yield 0.0  # priming send(None)
            failures = rate_limited = 0
            while True:
                response = getattr(exc, "response", None)
                limited = response is not None and response.status_code == 429
                rate_limited += limited
                failures += not limited
                if policy.exhausted(failures, rate_limited):
                    if isinstance(exc, RetriableAPIError):
                        raise _gave_up(exc, policy, failures + rate_limited, limited=limited)
                    return
                asked = (
                    None
                    if response is None
                    else server_wait(response.headers, rate_limited=limited)
                )
                # For `backoff_handler`, which backoff calls next with this same exception (a
                # new one per attempt, so concurrent scans never share a count).
                count = (
                    (rate_limited, policy.max_rate_limit_retries)
                    if limited
                    else (failures, policy.max_retries)
                )
                setattr(exc, RETRY_COUNT, count)
                exc = yield policy.wait(failures + rate_limited, asked)

        return waits()

    def backoff_jitter(self, value: float) -> float:
        """No jitter here: the policy's backoff has it, and a server-given wait gets none."""
        return value

    def backoff_handler(self, details: Details) -> None:
        """Warn before a retry like every plugin: 'Lytics answered 503 on <path>; retry 2/5 in 3.1 s'.

        The count and budget are this request's, per kind (429s against
        `max_rate_limit_retries`, the rest against `max_retries`), as the wait generator set
        them on the exception. Only the URL's path is named (no query, no headers, no token).
        """
        exc = details.get("exception")
        count, budget = getattr(exc, RETRY_COUNT, (details.get("tries") or 0, 0))
        message = retry_message(self._retry_reason(exc), count, budget, details.get("wait") or 0.0)
        self.log("%s", message, level=logging.WARNING)

    def _retry_reason(self, exc: BaseException | None) -> str:
        """Say what failed, for the retry warning: the status and path, or the network error."""
        response = getattr(exc, "response", None)
        if response is not None:
            path = urlparse(response.url).path or self.path
            if response.status_code >= HTTPStatus.BAD_REQUEST:
                return f"Lytics answered {response.status_code} on {path}"
            return self._redact(str(exc))  # a 200 that is not a page (truncated, malformed)
        request = getattr(exc, "request", None)
        path = urlparse(getattr(request, "url", None) or "").path or self.path
        return f"{type(exc).__name__} talking to Lytics ({path})"

    # --- sending on a given session (used by the prefetch thread) -------------------------

    def send_on(
        self,
        session: requests.Session,
        prepared: requests.PreparedRequest,
        context: Context | None,
    ) -> requests.Response:
        """Send like the SDK's `_request`, but on a caller-owned session (one per thread)."""
        response = session.send(prepared, timeout=self.timeout, allow_redirects=True)
        self._write_request_duration_log(
            endpoint=self.path or "",
            response=response,
            context=context,
            extra_tags=None,
        )
        self.validate_response(response)
        return response


def _gave_up(
    exc: RetriableAPIError, policy: RetryPolicy, attempts: int, *, limited: bool
) -> RetriableAPIError:
    """`exc` again (same class), saying how many attempts were made and which budget ran out."""
    setting = "max_rate_limit_retries" if limited else "max_retries"
    budget = policy.max_rate_limit_retries if limited else policy.max_retries
    msg = f"{exc}; gave up after {attempts} attempts: raise `{setting}` (now {budget}) to retry longer"
    error = type(exc)(msg, exc.response)
    error.__cause__ = exc
    return error
