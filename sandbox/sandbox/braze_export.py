"""Braze ``POST /users/export/segment`` for the Braze sandbox (see README, "Segment export").

Contract (Braze docs ``_docs/_api/endpoints/export/user_data/post_users_segment.md``; project
fact sheet §B8): request ``{segment_id, fields_to_export, custom_attributes_to_export?,
callback_endpoint?, output_format?}``; answer ``{message, object_prefix, url?}``; one JSON
object per user per line, about one file per 5,000 users; without cloud storage ``url`` points
to one ZIP of all files, valid only once the export is ready and for a few hours; with a bucket
the files go to ``segment-export/SEGMENT_ID/YYYY-MM-dd/<object_prefix>/<file>.zip`` (``.gz``
for gzip) and there is no ``url``; a second export of a segment while one runs gets 429; at
most 100 concurrent exports. The emulator keeps archives in memory.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sandbox.server import RecordedRequest, Response, json_response

EXPORT_PATH = "/users/export/segment"
DOWNLOAD_PREFIX = "/_export_downloads/"
MAX_CONCURRENT_EXPORTS = 100
MAX_CUSTOM_ATTRIBUTES = 500
#: Braze "TIMESTAMP_WHEN_EXPORT_STARTED": seconds since 2017-01-01T00:00:00Z.
_BRAZE_EPOCH = dt.datetime(2017, 1, 1, tzinfo=dt.timezone.utc).timestamp()

#: Standard profile fields of the export object (docs' "Fields to export" table).
STANDARD_FIELDS = frozenset(
    {
        "apps",
        "attributed_campaign",
        "attributed_source",
        "attributed_adgroup",
        "attributed_ad",
        "braze_id",
        "campaigns_received",
        "canvases_received",
        "cards_clicked",
        "country",
        "created_at",
        "custom_events",
        "devices",
        "dob",
        "email",
        "email_subscribe",
        "external_id",
        "first_name",
        "gender",
        "home_city",
        "language",
        "last_coordinates",
        "last_name",
        "phone",
        "purchases",
        "push_subscribe",
        "push_tokens",
        "random_bucket",
        "time_zone",
        "total_revenue",
        "uninstalled_at",
        "user_aliases",
    }
)
_ALWAYS = frozenset({"braze_id", "external_id", "user_aliases"})
#: Attribute names kept as profile data, never reported as custom attributes.
_INTERNAL = frozenset({"_update_existing_only"})


@dataclass
class _Export:
    segment_id: str
    object_prefix: str
    token: str
    ready_at: float
    expires_at: float
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, JSON lines)
    output_format: str = "zip"
    archive: bytes = b""
    written: bool = False


def _braze_id(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:24]  # noqa: S324 - an id, not security


class SegmentExports:
    """State and handlers of the export endpoint; owned by :class:`BrazeSandbox`.

    ``segments``: segment id -> list of user keys, or None for "every user". ``delay``:
    seconds before an export is ready. ``bucket``: None (answer with a download URL), a local
    directory, or an fsspec URL such as ``s3://braze-exports`` (with ``storage_options``),
    where files are written under Braze's key layout when the export is ready.
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.segments: dict[str, list[str] | None] = {}
        self.delay = 0.0
        self.url_ttl = 4 * 3600.0
        self.users_per_file = 5000
        self.bucket: str | None = None
        self.storage_options: dict[str, Any] = {}
        self.exports: list[_Export] = []
        self.callbacks: list[tuple[str, dict[str, Any]]] = []
        self._timers: list[threading.Timer] = []

    # ---- Python API ------------------------------------------------------------------
    def add_segment(self, segment_id: str, user_keys: Iterable[str] | None = None) -> None:
        """Define a segment: these users (keys as in ``users()``), or every user (None)."""
        self.segments[segment_id] = None if user_keys is None else list(user_keys)

    def running(self, segment_id: str, now: float | None = None) -> bool:
        """Whether an export of this segment is still being built."""
        now = time.time() if now is None else now
        return any(e.segment_id == segment_id and e.ready_at > now for e in self.exports)

    def stop(self) -> None:
        """Cancel pending bucket writes (the server is stopping)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # ---- HTTP --------------------------------------------------------------------------
    def handle_export(self, req: RecordedRequest) -> Response:
        """``POST /users/export/segment``."""
        body = req.json
        if not isinstance(body, dict):
            return self.owner.error(400, "Request body must be a JSON object")
        segment_id = body.get("segment_id")
        if not isinstance(segment_id, str) or not segment_id:
            return self.owner.error(400, "segment_id is required")
        fields = body.get("fields_to_export")
        if (
            not isinstance(fields, list)
            or not fields
            or not all(isinstance(f, str) for f in fields)
        ):
            return self.owner.error(400, "fields_to_export is required (an array of field names)")
        unknown = [f for f in fields if f not in STANDARD_FIELDS and f != "custom_attributes"]
        if unknown:
            return self.owner.error(400, f"Invalid fields_to_export: {', '.join(unknown)}")
        custom = body.get("custom_attributes_to_export")
        if custom is not None and (
            not isinstance(custom, list) or not all(isinstance(c, str) for c in custom)
        ):
            return self.owner.error(400, "custom_attributes_to_export must be an array of strings")
        if custom is not None and len(custom) > MAX_CUSTOM_ATTRIBUTES:
            return self.owner.error(400, "custom_attributes_to_export: at most 500 attributes")
        output_format = body.get("output_format", "zip")
        if output_format not in ("zip", "gzip"):
            return self.owner.error(400, "output_format must be 'zip' or 'gzip'")
        if segment_id not in self.segments:
            return self.owner.error(400, f"Invalid segment_id: {segment_id}")
        now = time.time()
        if self.running(segment_id, now):
            return self.owner.error(
                429, "An export of this segment is already in progress; wait for it to finish"
            )
        if sum(1 for e in self.exports if e.ready_at > now) >= MAX_CONCURRENT_EXPORTS:
            return self.owner.error(429, "Too many concurrent segment exports")
        export = self._build(segment_id, fields, custom, output_format, now)
        self.exports.append(export)
        self.owner.stats["exports"] = self.owner.stats.get("exports", 0) + 1
        out: dict[str, Any] = {"message": "success", "object_prefix": export.object_prefix}
        if self.bucket is None:
            out["url"] = (
                f"{self.owner.url}{DOWNLOAD_PREFIX}{export.token}.zip?X-Amz-Signature={export.token}"
            )
        else:
            self._schedule_write(export)
        callback = body.get("callback_endpoint")
        if isinstance(callback, str) and callback:
            payload: dict[str, Any] = {"success": True}
            if "url" in out:
                payload["url"] = out["url"]
            self.callbacks.append((callback, payload))  # recorded, not posted (loopback only)
        return json_response(201, out)

    def handle_download(self, req: RecordedRequest) -> Response:
        """``GET`` of a download URL: 404 until ready, 403 after expiry or a bad signature."""
        if req.method not in ("GET", "HEAD"):
            return _s3_error(405, "MethodNotAllowed")
        token = req.path[len(DOWNLOAD_PREFIX) :].removesuffix(".zip")
        export = next((e for e in self.exports if e.token == token), None)
        if export is None or req.query.get("X-Amz-Signature") != token:
            return _s3_error(403, "AccessDenied")
        now = time.time()
        if now < export.ready_at:
            return _s3_error(404, "NoSuchKey")
        if now > export.expires_at:
            return _s3_error(403, "AccessDenied", "Request has expired")
        if not export.archive:
            export.archive = _zip_of(export)
        self.owner.stats["export_downloads"] = self.owner.stats.get("export_downloads", 0) + 1
        return 200, export.archive, {"Content-Type": "application/zip"}

    # ---- building --------------------------------------------------------------------
    def _build(
        self,
        segment_id: str,
        fields: list[str],
        custom: list[str] | None,
        output_format: str,
        now: float,
    ) -> _Export:
        started = int(now - _BRAZE_EPOCH)
        prefix = f"{uuid.uuid4()}-{started}"
        token = uuid.uuid4().hex
        users = self.owner._users
        keys = self.segments[segment_id]
        chosen = list(users) if keys is None else [k for k in keys if k in users]
        wanted = set(fields) | _ALWAYS
        all_custom = "custom_attributes" in fields
        named = set(custom or ())
        files: list[tuple[str, bytes]] = []
        per_file = max(1, int(self.users_per_file))
        for start in range(0, len(chosen), per_file) or [0]:
            lines = []
            for key in chosen[start : start + per_file]:
                obj = _export_object(key, users[key], wanted, all_custom, named)
                lines.append(orjson.dumps(obj))
            if lines or not files:
                files.append((uuid.uuid4().hex, b"\n".join(lines) + (b"\n" if lines else b"")))
        return _Export(
            segment_id=segment_id,
            object_prefix=prefix,
            token=token,
            ready_at=now + max(0.0, float(self.delay)),
            expires_at=now + max(0.0, float(self.delay)) + self.url_ttl,
            files=files,
            output_format=output_format,
        )

    def _schedule_write(self, export: _Export) -> None:
        wait = max(0.0, export.ready_at - time.time())
        timer = threading.Timer(wait, self._write_bucket, args=(export,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _write_bucket(self, export: _Export) -> None:
        day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        base = f"segment-export/{export.segment_id}/{day}/{export.object_prefix}"
        writer = _bucket_writer(str(self.bucket), self.storage_options)
        for name, data in export.files:
            if export.output_format == "gzip":
                writer(f"{base}/{name}.gz", gzip.compress(data, compresslevel=1))
            else:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr(f"{name}.json", data)
                writer(f"{base}/{name}.zip", buf.getvalue())
        export.written = True


def _zip_of(export: _Export) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in export.files:
            zf.writestr(f"{export.object_prefix}/{name}.json", data)
    return buf.getvalue()


def _bucket_writer(bucket: str, options: dict[str, Any]) -> Callable[[str, bytes], None]:
    if "://" not in bucket or bucket.startswith("file://"):
        root = Path(bucket.removeprefix("file://"))

        def write_local(key: str, data: bytes) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)

        return write_local
    import fsspec  # optional: object storage needs fsspec plus s3fs/gcsfs/adlfs

    fs, root_path = fsspec.core.url_to_fs(bucket, **options)

    def write_remote(key: str, data: bytes) -> None:
        with fs.open(f"{root_path.rstrip('/')}/{key}", "wb") as out:
            out.write(data)

    return write_remote


def _export_object(
    key: str, attrs: dict[str, Any], wanted: set[str], all_custom: bool, named: set[str]
) -> dict[str, Any]:
    """Return a user as the export writes it: requested standard fields, custom attributes."""
    obj: dict[str, Any] = {}
    if "external_id" in wanted and not key.startswith(("braze_id:", "email:", "phone:", "alias:")):
        obj["external_id"] = key
    obj["braze_id"] = attrs.get("braze_id") or _braze_id(key)
    custom: dict[str, Any] = {}
    for name, value in attrs.items():
        if name in ("external_id", "braze_id") or name in _INTERNAL:
            continue
        if name in STANDARD_FIELDS:
            if name in wanted and value is not None:
                obj[name] = value
        elif all_custom or name in named:
            custom[name] = value
    if custom:
        obj["custom_attributes"] = custom
    return obj


def _s3_error(status: int, code: str, message: str = "") -> Response:
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message or code}</Message></Error>"
    return status, body.encode(), {"Content-Type": "application/xml"}
