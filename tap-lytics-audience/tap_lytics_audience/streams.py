"""Streams: `audiences`, `audience_members` and `audience_snapshots`."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import time
import typing as t
import uuid

import orjson
import requests
from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import SinglePagePaginator

from tap_lytics_audience.client import (
    LyticsCursorPaginator,
    LyticsStream,
    ScanCursorExpired,
    response_json,
)
from tap_lytics_audience.scan import (
    CompletedScan,
    ConcurrentScans,
    ScanEvent,
    ScanLedger,
    ScanSource,
    sequential_scans,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_lytics_audience.tap import TapLyticsAudience

MEMBER_BASE_FIELDS = ("audience_id", "audience_slug", "external_id", "lytics_uid", "scan_id")
AUDIENCE_FIELDS = (
    "id",
    "slug_name",
    "name",
    "description",
    "kind",
    "table",
    "tags",
    "is_public",
    "segment_ql",
    "created",
    "updated",
)


def utc_now() -> str:
    """Return the current UTC time, RFC 3339."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _parse_ts(value: t.Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _text(value: t.Any) -> str:
    """Render a non-string profile value as text (JSON for lists and maps)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(value, default=str).decode()


class AudiencesStream(LyticsStream):
    """Audience (segment) definitions, incremental on `updated`.

    Lytics has no "updated since" filter, so the filter is client side: a run emits the
    audiences whose `updated` is after the bookmark (all of them on the first run).
    """

    name = "audiences"
    path = "/api/segment"
    primary_keys = ("id",)
    replication_key = "updated"
    is_sorted = False

    schema = th.PropertiesList(
        th.Property("id", th.StringType, required=True),
        th.Property("slug_name", th.StringType),
        th.Property("name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("kind", th.StringType),
        th.Property("table", th.StringType),
        th.Property("tags", th.ArrayType(th.StringType)),
        th.Property("is_public", th.BooleanType),
        th.Property("segment_ql", th.StringType),
        th.Property("created", th.DateTimeType),
        th.Property("updated", th.DateTimeType),
    ).to_dict()

    def get_new_paginator(self) -> SinglePagePaginator:
        """Return a single-page paginator: the segment list is one response."""
        return SinglePagePaginator()

    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict[str, t.Any]:
        """User audiences only."""
        return {"table": "user"}

    def parse_response(self, response: requests.Response) -> t.Iterable[dict]:
        """Segments from the `data` envelope."""
        data = response_json(response).get("data") or []
        yield from (seg for seg in data if isinstance(seg, dict))

    def list_segments(self) -> list[dict]:
        """Every user segment (one request, cached on the tap for the run)."""
        tap = t.cast("TapLyticsAudience", self._tap)
        if tap.segments_cache is None:
            tap.segments_cache = list(self.request_records(None))
        return tap.segments_cache

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Emit the audiences updated after the bookmark."""
        start = _parse_ts(self.get_starting_replication_key_value(context))
        for seg in self.list_segments():
            record = {k: seg.get(k) for k in AUDIENCE_FIELDS}
            record["id"] = str(record["id"])
            updated = _parse_ts(record.get("updated"))
            if start is None or updated is None or updated > start:
                yield record


def resolve_audiences(config: t.Mapping[str, t.Any], segments: list[dict]) -> list[dict]:
    """Map the `audiences` setting (slugs or ids) to scan contexts; unknown ones are an error."""
    wanted = [str(a).strip() for a in config.get("audiences") or [] if str(a).strip()]
    by_key: dict[str, dict] = {}
    for seg in segments:
        by_key.setdefault(str(seg.get("id")), seg)
        if seg.get("slug_name"):
            by_key.setdefault(str(seg["slug_name"]), seg)
    unknown = [a for a in wanted if a not in by_key]
    if unknown:
        slugs = sorted(str(s.get("slug_name") or s.get("id")) for s in segments)
        msg = (
            f"Setting `audiences`: unknown audience(s) {', '.join(map(repr, unknown))} "
            "(slugs or ids of user audiences). Available slugs: "
            f"{', '.join(slugs) if slugs else '(none)'}"
        )
        raise ConfigValidationError(msg, errors=[msg])
    chosen: dict[str, dict] = {}
    for key in wanted:  # config order; the slug and the id of one audience are merged
        seg = by_key[key]
        audience_id = str(seg["id"])
        chosen.setdefault(
            audience_id,
            {"audience_id": audience_id, "audience_slug": str(seg.get("slug_name") or "")},
        )
    return list(chosen.values())


def member_schema(fields: list[str]) -> dict:
    """Build the member schema: fixed fields plus the profile `fields` (nullable strings).

    Lytics profile fields are free-form; scalars are sent as strings and lists/maps as
    JSON text, so one stable schema fits every profile.
    """
    props = th.PropertiesList(
        th.Property("audience_id", th.StringType, required=True),
        th.Property("audience_slug", th.StringType),
        th.Property("external_id", th.StringType, required=True),
        th.Property("lytics_uid", th.StringType),
        th.Property("scan_id", th.StringType, required=True),
    )
    for name in fields:
        props.append(th.Property(name, th.StringType))
    return props.to_dict()


class _ScanProgress:
    """Counters of one scan pass, kept by the consumer (what was actually emitted)."""

    __slots__ = ("members", "pages", "skipped", "t0")

    def __init__(self) -> None:
        self.members = 0
        self.skipped = 0
        self.pages = 0
        self.t0 = time.monotonic()


class AudienceMembersStream(LyticsStream):
    """Members of every configured audience: a full scan per audience on every run.

    Not a child of `audiences`: the SDK syncs child contexts one after the other, but a
    scan is a chain of slow cursor requests, so audiences are scanned concurrently
    (`scan_concurrency`) with a bounded look-ahead (`prefetch_pages`) and their records
    are emitted interleaved, each audience's records in scan order. The request loop
    mirrors the SDK's `request_records` (paginator, retry decorator, request counter).
    """

    name = "audience_members"
    path = "/api/segment/{audience_id}/scan"
    primary_keys = ("audience_id", "external_id")
    replication_key = None
    # Records are built here from strings and None only, with exactly the schema's keys;
    # the SDK's conformance pass is a large share of per-record cost and has nothing to fix.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: TapLyticsAudience) -> None:
        # The schema depends on the `fields` setting: built once here (a `schema` property
        # would be rebuilt twice per record by the SDK).
        fields = list(dict.fromkeys(str(f) for f in tap.config.get("fields") or []))
        super().__init__(tap, schema=member_schema(fields))

    @functools.cached_property
    def extra_fields(self) -> list[str]:
        """Configured profile fields, in order, without duplicates."""
        return list(dict.fromkeys(str(f) for f in self.config.get("fields") or []))

    @property
    def _tap_obj(self) -> TapLyticsAudience:
        return t.cast("TapLyticsAudience", self._tap)

    def get_new_paginator(self) -> LyticsCursorPaginator:
        """Opaque cursor from `_next` or `next`."""
        return LyticsCursorPaginator()

    def get_url_params(
        self, context: Context | None, next_page_token: str | None
    ) -> dict[str, t.Any]:
        """Page size, cursor and the profile fields we need."""
        id_field = self.config.get("external_id_field", "braze_id")
        wanted = dict.fromkeys([id_field, "_uid", *self.extra_fields])
        return {
            "limit": min(100, max(1, int(self.config.get("page_size", 100)))),
            "start": next_page_token,
            "fields": ",".join(wanted),
        }

    # --- fetching (runs in scan worker threads) -----------------------------------------

    def fetch_pages(self, context: Context, session: requests.Session) -> t.Iterator[list[dict]]:
        """Fetch the pages of one scan pass, following the cursor to the end.

        Empty pages that still carry a cursor are followed (the SDK would stop).
        """
        paginator = self.get_new_paginator()

        def send_scan_request(
            prepared: requests.PreparedRequest, context: Context | None
        ) -> requests.Response:
            return self.send_on(session, prepared, context)

        decorated = self.request_decorator(send_scan_request)
        with self.get_http_request_counter() as counter:
            counter.with_context(context)
            while not paginator.finished:
                prepared = self._prepare_request(context=context, page=paginator)
                response = decorated(prepared, context)
                counter.increment()
                body = response_json(response)
                data = body.get("data") if isinstance(body, dict) else None
                yield [p for p in data or [] if isinstance(p, dict)]
                paginator.advance(response)

    def scan_events(self, audience: dict, session: requests.Session) -> t.Iterator[ScanEvent]:
        """Scan one audience to the end; restart with a new scan_id when the cursor expires."""
        max_restarts = int(self.config.get("max_scan_restarts", 3))
        for attempt in itertools.count():
            scan_id = uuid.uuid4().hex
            started_at = utc_now()
            pages = 0
            try:
                for page in self.fetch_pages(audience, session):
                    pages += 1
                    yield ("page", audience, scan_id, page)
            except ScanCursorExpired:
                if attempt >= max_restarts:
                    msg = (
                        f"Scan of audience {audience['audience_slug'] or audience['audience_id']} "
                        f"lost its cursor {attempt + 1} times (limit `max_scan_restarts`="
                        f"{max_restarts}); no snapshot emitted for it"
                    )
                    raise FatalAPIError(msg) from None
                yield ("restart", audience, scan_id, pages)
                continue
            yield ("done", audience, scan_id, started_at)
            return

    def _events(self, audiences: list[dict]) -> t.Iterator[ScanEvent]:
        sources: list[ScanSource] = [functools.partial(self.scan_events, a) for a in audiences]
        concurrency = max(1, int(self.config.get("scan_concurrency", 3)))
        depth = max(0, int(self.config.get("prefetch_pages", 4)))
        if concurrency == 1 and depth == 0:  # the plain SDK pattern, in this thread
            return sequential_scans(sources, self.requests_session)
        return iter(ConcurrentScans(sources, concurrency, depth))

    # --- emitting (main thread) ---------------------------------------------------------

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Emit the members of every configured audience; record finished scans."""
        tap = self._tap_obj
        audiences_stream = t.cast("AudiencesStream", tap.streams[AudiencesStream.name])
        audiences = resolve_audiences(self.config, audiences_stream.list_segments())
        if not audiences:
            self.logger.info("Setting `audiences` is empty: no member scan this run.")
            return
        self.logger.info(
            "Scanning %d audiences: %s",
            len(audiences),
            ", ".join(a["audience_slug"] or a["audience_id"] for a in audiences),
        )
        id_field = str(self.config.get("external_id_field", "braze_id"))
        extra = self.extra_fields
        every = max(1, int(self.config.get("progress_every_pages", 100)))
        ledger: ScanLedger = tap.ledger
        progress: dict[str, _ScanProgress] = {}

        for kind, audience, scan_id, payload in self._events(audiences):
            audience_id = audience["audience_id"]
            slug = audience["audience_slug"]
            label = slug or audience_id
            prog = progress.get(scan_id)
            if prog is None:
                prog = progress[scan_id] = _ScanProgress()
            if kind == "page":
                prog.pages += 1
                for profile in payload:
                    raw = profile.get(id_field)
                    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                        raw = str(raw)
                    if not isinstance(raw, str) or not raw.strip():
                        prog.skipped += 1
                        continue
                    uid = profile.get("_uid")
                    record = {
                        "audience_id": audience_id,
                        "audience_slug": slug,
                        "external_id": raw.strip(),
                        "lytics_uid": None if uid is None else str(uid),
                        "scan_id": scan_id,
                    }
                    for name in extra:
                        value = profile.get(name)
                        record[name] = (
                            value if value is None or isinstance(value, str) else _text(value)
                        )
                    prog.members += 1
                    yield record
                if prog.pages % every == 0:
                    self.logger.info(
                        "Scanning audience %s: %d pages, %d members, %d skipped (%.0f/s)",
                        label,
                        prog.pages,
                        prog.members,
                        prog.skipped,
                        (prog.members + prog.skipped) / max(time.monotonic() - prog.t0, 1e-9),
                    )
            elif kind == "restart":
                del progress[scan_id]
                ledger.restarts += 1
                self.logger.warning(
                    "Scan cursor of audience %s expired after %d pages (scan_id %s); "
                    "restarting the scan from the start with a new scan_id",
                    label,
                    payload,
                    scan_id,
                )
            else:  # done: every record of this pass has been emitted
                del progress[scan_id]
                self._finish(ledger, audience, scan_id, payload, prog, id_field)
        self.logger.info(
            "Run summary: %d audiences scanned, %d members emitted, %d skipped without `%s`, "
            "%d scan restarts",
            ledger.audiences_scanned,
            ledger.members,
            ledger.skipped,
            id_field,
            ledger.restarts,
        )

    def _finish(
        self,
        ledger: ScanLedger,
        audience: dict,
        scan_id: str,
        started_at: str,
        prog: _ScanProgress,
        id_field: str,
    ) -> None:
        label = audience["audience_slug"] or audience["audience_id"]
        if prog.skipped:
            self.logger.warning(
                "Audience %s: %d members skipped because they have no `%s` "
                "(setting `external_id_field`)",
                label,
                prog.skipped,
                id_field,
            )
        elapsed = time.monotonic() - prog.t0
        self.logger.info(
            "Audience %s scanned: %d members, %d skipped without `%s`, %d pages, "
            "%.1fs (%.0f members/s), scan_id %s",
            label,
            prog.members,
            prog.skipped,
            id_field,
            prog.pages,
            elapsed,
            prog.members / max(elapsed, 1e-9),
            scan_id,
        )
        ledger.complete(
            CompletedScan(
                audience_id=audience["audience_id"],
                audience_slug=audience["audience_slug"],
                scan_id=scan_id,
                member_count=prog.members,
                skipped_without_id=prog.skipped,
                started_at=started_at,
                completed_at=utc_now(),
            )
        )


class AudienceSnapshotsStream(Stream):
    """Completion signal: one record per audience whose scan finished in this run.

    Synced after `audience_members` (stream order) from the scans it recorded as finished,
    so a crashed, aborted or interrupted scan never yields one.
    """

    name = "audience_snapshots"
    primary_keys = ("audience_id", "scan_id")
    replication_key = None

    schema = th.PropertiesList(
        th.Property("audience_id", th.StringType, required=True),
        th.Property("audience_slug", th.StringType),
        th.Property("scan_id", th.StringType, required=True),
        th.Property("member_count", th.IntegerType, required=True),
        th.Property("skipped_without_id", th.IntegerType, required=True),
        th.Property("started_at", th.DateTimeType, required=True),
        th.Property("completed_at", th.DateTimeType, required=True),
    ).to_dict()

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Yield the finished scans recorded by `audience_members` in this run."""
        tap = t.cast("TapLyticsAudience", self._tap)
        members_stream = tap.streams[AudienceMembersStream.name]
        if not members_stream.selected and tap.config.get("audiences"):
            self.logger.warning(
                "audience_snapshots needs audience_members selected (it counts the records "
                "emitted): no snapshot emitted"
            )
        for scan in tap.ledger.take_all():
            yield {
                "audience_id": scan.audience_id,
                "audience_slug": scan.audience_slug,
                "scan_id": scan.scan_id,
                "member_count": scan.member_count,
                "skipped_without_id": scan.skipped_without_id,
                "started_at": scan.started_at,
                "completed_at": scan.completed_at,
            }
