"""Streams: `audiences` (parent), `audience_members` and `audience_snapshots` (children)."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
import time
import typing as t
import uuid

import orjson
import requests
from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from singer_sdk.helpers._typing import TypeConformanceLevel
from singer_sdk.pagination import SinglePagePaginator

from tap_lytics_audience.client import (
    LyticsCursorPaginator,
    LyticsStream,
    ScanCursorExpired,
    response_json,
)
from tap_lytics_audience.scan import CompletedScan, PagePrefetcher, ScanLedger

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

    It is also the parent of the member scans. Lytics has no "updated since" filter, so
    the filter is client side: a run emits every audience updated after the bookmark, plus
    every configured audience (each one is the parent of its full member scan, which must
    run on every run). Re-emitted definitions are idempotent under the key `id`.
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

    @property
    def _tap_obj(self) -> TapLyticsAudience:
        return t.cast("TapLyticsAudience", self._tap)

    def resolve_audiences(self, segments: list[dict]) -> list[dict]:
        """Map the `audiences` setting (slugs or ids) to segments; unknown ones are an error."""
        wanted = [str(a).strip() for a in self.config.get("audiences") or [] if str(a).strip()]
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
                f"(slugs or ids of user audiences). Available slugs: "
                f"{', '.join(slugs) if slugs else '(none)'}"
            )
            raise ConfigValidationError(msg, errors=[msg])
        chosen: dict[str, dict] = {}
        for key in wanted:  # config order, duplicates (slug and id of one audience) merged
            seg = by_key[key]
            chosen.setdefault(str(seg["id"]), seg)
        return list(chosen.values())

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Emit changed audiences and every configured one; children scan the latter."""
        segments = list(self.request_records(context))
        configured = self.resolve_audiences(segments)
        configured_ids = {str(s["id"]) for s in configured}
        self._tap_obj.scan_audience_ids = configured_ids
        if not configured_ids:
            self.logger.info("Setting `audiences` is empty: no member scan this run.")
        start = _parse_ts(self.get_starting_replication_key_value(context))
        emitted = 0
        for seg in segments:
            record = {k: seg.get(k) for k in AUDIENCE_FIELDS}
            record["id"] = str(record["id"])
            updated = _parse_ts(record.get("updated"))
            changed = start is None or updated is None or updated > start
            if changed or record["id"] in configured_ids:
                emitted += 1
                yield record
        ledger = self._tap_obj.ledger
        self.logger.info(
            "Run summary: %d audiences listed, %d emitted, %d scanned, %d members emitted, "
            "%d skipped without `%s`, %d scan restarts",
            len(segments),
            emitted,
            ledger.audiences_scanned,
            ledger.members,
            ledger.skipped,
            self.config.get("external_id_field", "braze_id"),
            ledger.restarts,
        )

    def generate_child_contexts(
        self, record: dict, context: Context | None
    ) -> t.Iterable[Context | None]:
        """Only configured audiences get a member scan and a snapshot."""
        if record["id"] in self._tap_obj.scan_audience_ids:
            yield {"audience_id": record["id"], "audience_slug": record.get("slug_name") or ""}


class AudienceMembersStream(LyticsStream):
    """Members of one audience: a full scan per run, one record per (audience, user)."""

    name = "audience_members"
    parent_stream_type = AudiencesStream
    path = "/api/segment/{audience_id}/scan"
    primary_keys = ("audience_id", "external_id")
    replication_key = None
    state_partitioning_keys: t.Sequence[str] | None = []  # full snapshot: no per-audience state
    # Records are built here from JSON-native values; the SDK's recursive conformance pass
    # is a large share of per-record cost and has nothing to fix.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY

    @property
    def schema(self) -> dict:  # type: ignore[override]
        """Fixed member fields plus the configured profile `fields` (nullable strings).

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
        for name in self.extra_fields:
            props.append(th.Property(name, th.StringType))
        return props.to_dict()

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

    def fetch_pages(self, context: Context, session: requests.Session) -> t.Iterator[list[dict]]:
        """Fetch the pages of one scan pass, following the cursor to the end.

        Mirrors the SDK's `request_records` loop (paginator, retry decorator, request
        counter) but yields whole pages and uses a caller-owned session so it can run in the
        prefetch thread. Empty pages that still carry a cursor are followed.
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

    def _pages(self, context: Context) -> t.Iterator[list[dict]]:
        depth = int(self.config.get("prefetch_pages", 4))
        if depth <= 0:  # the SDK's one-page-at-a-time behaviour
            yield from self.fetch_pages(context, self.requests_session)
            return

        def pages() -> t.Iterator[list[dict]]:
            with requests.Session() as session:
                yield from self.fetch_pages(context, session)

        yield from PagePrefetcher(pages, depth)

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Scan the audience; restart with a new scan_id when the cursor expires."""
        if not context:
            msg = "audience_members is synced per audience by its parent stream `audiences`"
            raise FatalAPIError(msg)
        audience_id = str(context["audience_id"])
        slug = str(context.get("audience_slug") or "")
        id_field = str(self.config.get("external_id_field", "braze_id"))
        extra = [f for f in self.extra_fields]
        max_restarts = int(self.config.get("max_scan_restarts", 3))
        every = max(1, int(self.config.get("progress_every_pages", 100)))
        ledger: ScanLedger = self._tap_obj.ledger

        for attempt in itertools.count():
            scan_id = uuid.uuid4().hex
            started_at = utc_now()
            t0 = time.monotonic()
            members = skipped = pages = 0
            try:
                for page in self._pages(context):
                    pages += 1
                    for profile in page:
                        raw = profile.get(id_field)
                        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                            raw = str(raw)
                        if not isinstance(raw, str) or not raw.strip():
                            skipped += 1
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
                        members += 1
                        yield record
                    if pages % every == 0:
                        self.logger.info(
                            "Scanning audience %s: %d pages, %d members, %d skipped (%.0f/s)",
                            slug or audience_id,
                            pages,
                            members,
                            skipped,
                            (members + skipped) / max(time.monotonic() - t0, 1e-9),
                        )
            except ScanCursorExpired:
                ledger.restarts += 1
                if attempt >= max_restarts:
                    msg = (
                        f"Scan of audience {slug or audience_id} lost its cursor "
                        f"{attempt + 1} times (limit `max_scan_restarts`={max_restarts}); "
                        "no snapshot emitted for it"
                    )
                    raise FatalAPIError(msg) from None
                self.logger.warning(
                    "Scan cursor of audience %s expired after %d pages (scan_id %s); "
                    "restarting the scan from the start with a new scan_id",
                    slug or audience_id,
                    pages,
                    scan_id,
                )
                continue

            if skipped:
                self.logger.warning(
                    "Audience %s: %d members skipped because they have no `%s` "
                    "(setting `external_id_field`)",
                    slug or audience_id,
                    skipped,
                    id_field,
                )
            elapsed = time.monotonic() - t0
            self.logger.info(
                "Audience %s scanned: %d members, %d skipped without `%s`, %d pages, "
                "%.1fs (%.0f members/s), scan_id %s",
                slug or audience_id,
                members,
                skipped,
                id_field,
                pages,
                elapsed,
                members / max(elapsed, 1e-9),
                scan_id,
            )
            ledger.complete(
                CompletedScan(
                    audience_id=audience_id,
                    audience_slug=slug,
                    scan_id=scan_id,
                    member_count=members,
                    skipped_without_id=skipped,
                    started_at=started_at,
                    completed_at=utc_now(),
                )
            )
            return


class AudienceSnapshotsStream(Stream):
    """Completion signal: one record per audience whose scan finished in this run.

    Synced after `audience_members` for the same audience (children run in order) and
    emitted only if the ledger holds a finished scan, so a crashed, aborted or interrupted
    scan never yields one.
    """

    name = "audience_snapshots"
    parent_stream_type = AudiencesStream
    primary_keys = ("audience_id", "scan_id")
    replication_key = None
    state_partitioning_keys: t.Sequence[str] | None = []

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
        """Yield the finished scan of this audience, if there is one."""
        if not context:
            return
        tap = t.cast("TapLyticsAudience", self._tap)
        members_stream = tap.streams.get(AudienceMembersStream.name)
        if members_stream is not None and not members_stream.selected:
            self.logger.warning(
                "audience_snapshots needs audience_members selected (it counts its records); "
                "no snapshot for %s",
                context.get("audience_slug"),
            )
            return
        scan = tap.ledger.take(str(context["audience_id"]))
        if scan is None:
            self.logger.log(
                logging.WARNING,
                "No finished scan for audience %s: no snapshot emitted",
                context.get("audience_slug"),
            )
            return
        yield {
            "audience_id": scan.audience_id,
            "audience_slug": scan.audience_slug,
            "scan_id": scan.scan_id,
            "member_count": scan.member_count,
            "skipped_without_id": scan.skipped_without_id,
            "started_at": scan.started_at,
            "completed_at": scan.completed_at,
        }
