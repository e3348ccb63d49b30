"""Triggered Braze segment exports: ``POST /users/export/segment``, wait, download, read.

Braze's documented contract (fact sheet §B8; Braze docs ``post_users_segment.md``):

- request ``{"segment_id", "fields_to_export", "custom_attributes_to_export"?,
  "output_format": "zip"|"gzip"}`` with ``Authorization: Bearer <key>`` (permission
  ``users.export.segment``); answer ``{"message": "success", "object_prefix": ..., "url"?}``;
- without cloud storage the ``url`` points to one archive holding every JSON-lines file; it
  "will only become a valid location after the export is ready" and stays valid "a few hours";
- with the workspace's own S3/Azure/GCS bucket there is no ``url``: files appear under
  ``segment-export/SEGMENT_ID/YYYY-MM-dd/<object_prefix>/<random>.zip`` (``.gz`` with gzip);
- one export per segment at a time: a second request while one runs gets 429.

What the docs leave open, and what this module does about it:

- what the URL answers before the export is ready: S3 presigned URLs answer 403 or 404 for an
  object that does not exist yet, so 403/404 mean "not ready" until ``wait_timeout`` runs out;
- when a bucket export is complete: files only ever appear, so the export is taken as complete
  when at least one file is there and the listing (names and sizes) did not change over
  ``settle_seconds``;
- member names inside the archive: any member is read, by content (zip, gzip or plain lines).

The download URL grants access to the export without the API key, so it is treated as a
secret: never logged, never in an error message, a record or the state (only its host is
shown). Exports are downloaded once per run into a private temporary directory shared by the
``braze_users`` and ``braze_engagement`` streams, and removed when the tap ends.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import posixpath
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import requests
import urllib3

from tap_braze_csv.common.retries import RetryPolicy, server_wait
from tap_braze_csv.common.retrying import DeadlinePassed, RetriesExhausted, Retryable, describe
from tap_braze_csv.common.retrying import retrying as retrying_for
from tap_braze_csv.errors import BrazeCsvError

#: Fields asked for when ``rest_export.fields_to_export`` is not set: the webhook's profile
#: fields, custom attributes and the campaign/Canvas engagement (names from Braze's docs).
DEFAULT_FIELDS: tuple[str, ...] = (
    "braze_id",
    "external_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "country",
    "home_city",
    "language",
    "gender",
    "dob",
    "time_zone",
    "created_at",
    "user_aliases",
    "custom_attributes",
    "campaigns_received",
    "canvases_received",
)
#: Always exported: engagement records are keyed by these.
REQUIRED_FIELDS = ("braze_id", "external_id")

T = TypeVar("T")
DOWNLOAD_CHUNK = 1024 * 1024
READ_BUFFER = 1024 * 1024
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"


class BrazeExportError(BrazeCsvError):
    """A triggered export failed; the message names the segment and the setting to check."""


def _setting_number(
    cfg: Mapping[str, Any], key: str, default: float, *, minimum: float, integer: bool = False
) -> float:
    value = cfg.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum or (integer and not number.is_integer()):
        kind = "a whole number" if integer else "a number"
        msg = f"rest_export.{key} must be {kind} >= {minimum:g}, got {value!r}"
        raise BrazeCsvError(msg)
    return number


def _string_list(cfg: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = cfg.get(key)
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        msg = f"rest_export.{key} must be a list of strings, got {value!r}"
        raise BrazeCsvError(msg)
    return tuple(v for v in value if v)


@dataclass(frozen=True)
class RestExportSettings:
    """The ``rest_export`` setting, validated (the key is kept out of ``repr``)."""

    rest_endpoint: str
    segment_ids: tuple[str, ...]
    api_key: str = field(repr=False)
    fields_to_export: tuple[str, ...] = DEFAULT_FIELDS
    custom_attributes_to_export: tuple[str, ...] = ()
    output_format: str = "zip"
    bucket_url: str | None = None
    wait_timeout: float = 3600.0
    poll_interval: float = 15.0
    settle_seconds: float = 30.0
    request_timeout: float = 60.0
    max_retries: int = 5
    max_rate_limit_retries: int = 30
    retry_backoff_base: float = 2.0
    retry_backoff_max: float = 60.0
    min_interval_hours: float = 0.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RestExportSettings | None:
        """Validate ``rest_export``; None when it is absent or has no segment ids."""
        cfg = _rest_export_object(config)
        segments = _segment_ids(cfg) if cfg is not None else ()
        if cfg is None or not segments:
            return None
        api_key = _required_string(
            cfg, "api_key", "a Braze REST API key with the users.export.segment permission"
        )
        endpoint = _rest_endpoint(cfg)
        fields, custom = _export_fields(cfg)
        output_format = _output_format(cfg)
        bucket_url = _bucket_url(cfg)
        return cls(
            rest_endpoint=endpoint,
            segment_ids=segments,
            api_key=api_key,
            fields_to_export=fields,
            custom_attributes_to_export=custom,
            output_format=output_format,
            bucket_url=bucket_url,
            wait_timeout=_setting_number(cfg, "wait_timeout", 3600.0, minimum=0, integer=True),
            poll_interval=_setting_number(cfg, "poll_interval", 15.0, minimum=1, integer=True),
            settle_seconds=_setting_number(cfg, "settle_seconds", 30.0, minimum=0, integer=True),
            request_timeout=_setting_number(cfg, "request_timeout", 60.0, minimum=1, integer=True),
            max_retries=int(_setting_number(cfg, "max_retries", 5, minimum=0, integer=True)),
            max_rate_limit_retries=int(
                _setting_number(cfg, "max_rate_limit_retries", 30, minimum=0, integer=True)
            ),
            retry_backoff_base=_setting_number(
                cfg, "retry_backoff_base", 2.0, minimum=0, integer=True
            ),
            retry_backoff_max=_setting_number(
                cfg, "retry_backoff_max", 60.0, minimum=0, integer=True
            ),
            min_interval_hours=_setting_number(
                cfg, "min_interval_hours", 0.0, minimum=0, integer=True
            ),
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry schedule of the export's HTTP requests (common/retries.py)."""
        return RetryPolicy(
            max_retries=self.max_retries,
            max_rate_limit_retries=self.max_rate_limit_retries,
            backoff_base=self.retry_backoff_base,
            backoff_max=self.retry_backoff_max,
        )


def _rest_export_object(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return the ``rest_export`` object, or None when it is not set."""
    cfg = config.get("rest_export")
    if not cfg:
        return None
    if not isinstance(cfg, Mapping):
        raise BrazeCsvError("rest_export must be an object: {api_key, rest_endpoint, ...}")
    return cfg


def _segment_ids(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """Return the segment ids; () when none is listed and no api_key says REST was meant."""
    segments = _string_list(cfg, "segment_ids")
    if not segments:
        if cfg.get("api_key") not in (None, "", []):
            raise BrazeCsvError("rest_export.segment_ids: list the Braze segment ids to export")
        return ()
    if len(set(segments)) != len(segments):
        raise BrazeCsvError("rest_export.segment_ids: a segment id is listed twice")
    return segments


def _required_string(cfg: Mapping[str, Any], key: str, what: str) -> str:
    """Return the non-empty string setting ``key``, stripped; ``what`` says what it is."""
    value = cfg.get(key)
    if not value or not isinstance(value, str):
        raise BrazeCsvError(f"rest_export.{key} is required ({what})")
    return value.strip()


def _rest_endpoint(cfg: Mapping[str, Any]) -> str:
    """Return the http(s) REST URL without trailing slash."""
    endpoint = _required_string(
        cfg, "rest_endpoint", "your instance's REST URL, e.g. https://rest.iad-01.braze.com"
    )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"rest_export.rest_endpoint must be an http(s) URL, got {cfg['rest_endpoint']!r}"
        raise BrazeCsvError(msg)
    return endpoint.rstrip("/")


def _export_fields(cfg: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return (fields_to_export, required ones first; custom_attributes_to_export)."""
    fields = _string_list(cfg, "fields_to_export") or DEFAULT_FIELDS
    fields = tuple(dict.fromkeys((*REQUIRED_FIELDS, *fields)))
    custom = _string_list(cfg, "custom_attributes_to_export")
    if len(custom) > 500:
        raise BrazeCsvError(
            "rest_export.custom_attributes_to_export: Braze exports at most 500 custom "
            f"attributes by name, got {len(custom)} (or add custom_attributes to "
            "fields_to_export for all of them)"
        )
    return fields, custom


def _output_format(cfg: Mapping[str, Any]) -> str:
    output_format = str(cfg.get("output_format") or "zip").lower()
    if output_format not in ("zip", "gzip"):
        raise BrazeCsvError(
            f"rest_export.output_format must be zip or gzip, got {cfg.get('output_format')!r}"
        )
    return output_format


def _bucket_url(cfg: Mapping[str, Any]) -> str | None:
    """Return the bucket Braze writes exports to (no trailing slash), or None."""
    bucket_url = cfg.get("bucket_url") or None
    if bucket_url is None:
        return None
    if not isinstance(bucket_url, str) or "://" not in bucket_url:
        raise BrazeCsvError(
            "rest_export.bucket_url must be the URL of the bucket Braze writes exports to, "
            f"e.g. s3://my-braze-exports, got {bucket_url!r}"
        )
    return bucket_url.rstrip("/")


@dataclass
class ReadyExport:
    """One export whose files can be read: local archive(s) or files in the bucket."""

    segment_id: str
    object_prefix: str
    requested_at: str
    #: Opens each file of the export: (label used in messages, binary stream).
    files: list[tuple[str, Callable[[], BinaryIO]]] = field(default_factory=list)

    def members(self) -> Iterator[tuple[str, str, BinaryIO]]:
        """Yield (state key, label, binary JSON-lines stream) for each file in the export.

        The key (file and member names within the export) is what the state keeps; the label
        (``braze-export://<segment>/<object_prefix>/<key>``) names it in messages and records.
        """
        base = f"braze-export://{self.segment_id}/{self.object_prefix}"
        for name, opener in self.files:
            with contextlib.closing(opener()) as raw:
                for member, stream in iter_jsonl_members(name, raw):
                    yield member, f"{base}/{member}", stream


def _peek(raw: BinaryIO, n: int) -> tuple[bytes, BinaryIO]:
    if not hasattr(raw, "peek"):
        raw = cast(BinaryIO, io.BufferedReader(cast(Any, raw), READ_BUFFER))
    return bytes(cast(Any, raw).peek(n)[:n]), raw


def iter_jsonl_members(label: str, raw: BinaryIO) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (``label!member``, stream) for each JSON-lines file inside ``raw``.

    A zip yields each member (nested zips and gzips opened too), a gzip its content, anything
    else itself; the kind is decided by content, not by name.
    """
    head, raw = _peek(raw, 4)
    if head[:4] in _ZIP_MAGIC:
        seekable = raw if raw.seekable() else _spool(raw)
        try:
            archive = zipfile.ZipFile(seekable)
        except zipfile.BadZipFile as exc:
            raise BrazeExportError(f"{label}: not a readable zip archive ({exc})") from None
        with archive:
            for info in archive.infolist():
                name = info.filename
                base = posixpath.basename(name)
                if info.is_dir() or name.startswith("__MACOSX/") or base.startswith("."):
                    continue
                with archive.open(info) as member:
                    yield from iter_jsonl_members(f"{label}!{name}", member)  # type: ignore[arg-type]
    elif head[:2] == _GZIP_MAGIC:
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield label, gz  # type: ignore[misc]
    else:
        yield label, raw


def _spool(raw: BinaryIO) -> BinaryIO:
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned, closed with its zip
    shutil.copyfileobj(raw, spool, DOWNLOAD_CHUNK)
    spool.seek(0)
    return spool  # type: ignore[return-value]


READ_ERRORS = (zlib.error, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, OSError)


class ExportClient:
    """Calls ``/users/export/segment`` and downloads what it produced (bounded retries)."""

    def __init__(
        self,
        settings: RestExportSettings,
        logger: logging.Logger,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {settings.api_key}"
        self.session.headers["Content-Type"] = "application/json"
        self.session.headers["User-Agent"] = "tap-braze-csv"
        # The download URL is presigned: it must never get the API key.
        self.download_session = requests.Session()
        self.download_session.headers["User-Agent"] = "tap-braze-csv"

    def close(self) -> None:
        """Close HTTP connections."""
        self.session.close()
        self.download_session.close()

    # -- retries -----------------------------------------------------------------------------

    def _retried(self, attempt: Callable[[], T], deadline: float | None = None) -> T:
        """Run ``attempt`` on the retry contract (common/retrying.py).

        A `Retryable` it raises is retried (429 within ``max_rate_limit_retries``, the rest
        within ``max_retries``), sleeping with this client's ``sleep`` (interrupted when a
        signal stops the run); a used-up budget stops the run naming the setting. With a
        ``deadline`` (``time.monotonic()``), a retry whose wait would end past it is not made:
        `DeadlinePassed` is raised for the caller to name its timeout.
        """
        retrying = retrying_for(
            self.settings.retry_policy, sleep=self.sleep, log=self._log_retry, deadline=deadline
        )
        try:
            return retrying(attempt)
        except RetriesExhausted as exc:
            msg = (
                f"{exc.last.reason}; gave up after {exc.count.attempts} attempt(s): raise "
                f"`rest_export.{exc.setting}` (now {exc.budget}) to retry longer"
            )
            raise BrazeExportError(msg) from None

    def _log_retry(self, outcome: Retryable, count: int, budget: int, wait: float) -> None:
        self.logger.warning("%s", describe(outcome, count, budget, wait))

    @staticmethod
    def _answer_retryable(where: str, response: requests.Response, problem: str) -> Retryable:
        """Wrap a 429 or 5xx answer as a `Retryable`, with the wait the server asked for."""
        return Retryable(
            f"{where}: {problem}",
            rate_limited=response.status_code == 429,
            server_wait=server_wait(response.headers, rate_limited=response.status_code == 429),
        )

    # -- trigger ---------------------------------------------------------------------------

    def trigger(self, segment_id: str) -> dict[str, Any]:
        """Start an export of one segment; return Braze's answer (object_prefix, url?)."""
        s = self.settings
        url = f"{s.rest_endpoint}/users/export/segment"
        body: dict[str, Any] = {
            "segment_id": segment_id,
            "fields_to_export": list(s.fields_to_export),
            "output_format": s.output_format,
        }
        if s.custom_attributes_to_export:
            body["custom_attributes_to_export"] = list(s.custom_attributes_to_export)
        where = f"Braze export of segment {segment_id} (POST {url})"

        def attempt() -> dict[str, Any]:
            try:
                response = self.session.post(url, json=body, timeout=s.request_timeout)
            except requests.RequestException as exc:
                raise Retryable(f"{where}: network error ({type(exc).__name__})") from None
            status = response.status_code
            if 200 <= status < 300:
                return self._parse_trigger(where, response)
            message = _braze_message(response)
            if status == 429:
                problem = (
                    f"429 {message}: rate limited, or an export of this segment is still "
                    "running (Braze runs one export per segment at a time)"
                )
                raise self._answer_retryable(where, response, problem)
            if status >= 500:
                raise self._answer_retryable(where, response, f"{status} {message}")
            raise BrazeExportError(_client_error(where, status, message))

        return self._retried(attempt)

    @staticmethod
    def _parse_trigger(where: str, response: requests.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise BrazeExportError(f"{where}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise BrazeExportError(f"{where}: unexpected answer (not a JSON object)")
        prefix = data.get("object_prefix")
        if (
            data.get("message") not in (None, "success")
            or not isinstance(prefix, str)
            or not prefix
        ):
            raise BrazeExportError(
                f"{where}: Braze did not start an export (message {data.get('message')!r}, "
                f"object_prefix {prefix!r})"
            )
        url = data.get("url")
        return {"object_prefix": prefix, "url": url if isinstance(url, str) and url else None}

    # -- download ----------------------------------------------------------------------------

    def download(self, segment_id: str, url: str, dest: str, deadline: float) -> None:
        """Wait until ``url`` serves the archive (403/404 = not ready yet), save it to ``dest``.

        Polled every ``poll_interval`` until ``deadline``; each poll is one request, retried on
        the retry contract after a 429, a 5xx, a network error or an interrupted download, as
        long as the retry's wait ends by ``deadline`` (``wait_timeout`` bounds retries too).
        """
        s = self.settings
        host = urlsplit(url).netloc or "?"
        where = f"Braze export of segment {segment_id} (download from {host})"
        waited_logged = False
        while True:
            try:
                status = self._retried(lambda: self._fetch(where, url, dest), deadline)
            except DeadlinePassed as exc:
                raise BrazeExportError(
                    f"{where}: not downloaded within rest_export.wait_timeout "
                    f"({s.wait_timeout:g}s): {exc.last.reason} after {exc.count.attempts} "
                    f"attempt(s), and the next retry's wait ({exc.wait:.1f} s) would pass it: "
                    "raise wait_timeout or run again later"
                ) from None
            if status is None:
                return
            if not waited_logged:
                self.logger.info("%s: not ready yet (HTTP %d); waiting", where, status)
                waited_logged = True
            if time.monotonic() + s.poll_interval > deadline:
                raise BrazeExportError(
                    f"{where}: the export was not ready within rest_export.wait_timeout "
                    f"({s.wait_timeout:g}s); Braze may still be building it (large segments take "
                    "an hour or more): raise wait_timeout or run again later"
                )
            self.sleep(s.poll_interval)

    def _fetch(self, where: str, url: str, dest: str) -> int | None:
        """GET the download URL once: None once saved to ``dest``, 403/404 while not ready."""
        try:
            response = self.download_session.get(
                url, stream=True, timeout=self.settings.request_timeout
            )
        except requests.RequestException as exc:
            raise Retryable(f"{where}: network error ({type(exc).__name__})") from None
        with response:
            status = response.status_code
            if status in (403, 404):
                return status
            if status == 429 or status >= 500:
                raise self._answer_retryable(where, response, f"HTTP {status}")
            if status != 200:
                raise BrazeExportError(f"{where}: unexpected HTTP {status}")
            try:
                self._save(where, response, dest)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                problem = f"download interrupted ({type(exc).__name__})"
                raise Retryable(f"{where}: {problem}") from None
        return None

    @staticmethod
    def _save(where: str, response: requests.Response, dest: str) -> None:
        expected = response.headers.get("Content-Length")
        size = 0
        with open(dest, "wb") as out:
            # The bytes as served (no Content-Encoding decoding): Content-Length counts them, and
            # the archive's kind is read from its content.
            for chunk in response.raw.stream(DOWNLOAD_CHUNK, decode_content=False):
                out.write(chunk)
                size += len(chunk)
        if expected is not None and expected.isdigit() and int(expected) != size:
            msg = f"{where}: download truncated ({size} of {expected} bytes)"
            raise requests.ConnectionError(msg)


def _braze_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return (response.reason or "").strip()
    if isinstance(data, dict):
        msg = data.get("message") or data.get("errors") or ""
        return str(msg)[:300]
    return ""


def _client_error(where: str, status: int, message: str) -> str:
    if status == 401:
        hint = (
            "Braze refused rest_export.api_key: check the key, and that "
            "rest_export.rest_endpoint is your workspace's instance"
        )
    elif status == 403:
        hint = "the key lacks the users.export.segment permission (rest_export.api_key)"
    elif status == 404:
        hint = "no such endpoint: check rest_export.rest_endpoint"
    else:
        hint = "check rest_export.segment_ids and rest_export.fields_to_export"
    return f"{where}: HTTP {status} {message!s}: {hint}".replace("  ", " ")
