"""Streams: `audiences`, `audience_members` and `audience_snapshots`."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import time
import typing as t
import uuid
from http import HTTPStatus
from urllib.parse import urlparse

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
    MalformedScanPage,
    ScanCursorExpired,
    response_json,
)
from tap_lytics_audience.scan import (
    CompletedScan,
    ConcurrentScans,
    PassCheck,
    ScanDone,
    ScanEvent,
    ScanFailed,
    ScanLedger,
    ScanPage,
    ScanRestart,
    ScanSource,
    sequential_scans,
)

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context

MEMBER_BASE_FIELDS = (
    "audience_id",
    "audience_slug",
    "member_key",
    "external_id",
    "lytics_uid",
    "scan_id",
)
#: `_uid` values that are no uid.
_NO_UID = (None, "")
#: Profile field values emitted as they are (others as text, see `_text`).
_AS_IS = (str, type(None))
#: `member_key` of a member without an id: its Lytics uid, prefixed.
UID_KEY_PREFIX = "lytics_uid:"
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


class RunShared(t.Protocol):
    """What the streams of one run share through the tap (`TapLyticsAudience` sets it up).

    A protocol, so that this module does not import the tap module that imports it.
    """

    ledger: ScanLedger
    segments_cache: list[dict] | None

    @property
    def streams(self) -> dict[str, Stream]:
        """The tap's streams by name."""
        ...


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
        tap = t.cast("RunShared", self._tap)
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
    by_key = _segments_by_key(segments)
    unknown = [a for a in wanted if a not in by_key]
    if unknown:
        raise _unknown_audiences(unknown, segments)
    chosen: dict[str, dict] = {}
    for key in wanted:  # config order; the slug and the id of one audience are merged
        seg = by_key[key]
        audience_id = str(seg["id"])
        chosen.setdefault(
            audience_id,
            {"audience_id": audience_id, "audience_slug": str(seg.get("slug_name") or "") or None},
        )
    return list(chosen.values())


def _unknown_audiences(unknown: list[str], segments: list[dict]) -> ConfigValidationError:
    """Build the error naming audiences of the setting that Lytics does not have."""
    slugs = sorted(str(s.get("slug_name") or s.get("id")) for s in segments)
    msg = (
        f"Setting `audiences`: unknown audience(s) {', '.join(map(repr, unknown))} "
        "(slugs or ids of user audiences). Available slugs: "
        f"{', '.join(slugs) if slugs else '(none)'}"
    )
    return ConfigValidationError(msg, errors=[msg])


def _segments_by_key(segments: list[dict]) -> dict[str, dict]:
    """Index segments by id and by slug (the first segment holding a key wins)."""
    by_key: dict[str, dict] = {}
    for seg in segments:
        by_key.setdefault(str(seg.get("id")), seg)
        if seg.get("slug_name"):
            by_key.setdefault(str(seg["slug_name"]), seg)
    return by_key


def member_schema(fields: list[str]) -> dict:
    """Build the member schema: fixed fields plus the profile `fields` (nullable strings).

    Lytics profile fields are free-form; scalars are sent as strings and lists/maps as
    JSON text, so one stable schema fits every profile.
    """
    props = th.PropertiesList(
        th.Property("audience_id", th.StringType, required=True),
        th.Property("audience_slug", th.StringType),
        # The primary key with audience_id, never null: the external id, else
        # "lytics_uid:<uid>" (a loader keyed on a nullable external_id could not merge rows).
        th.Property("member_key", th.StringType, required=True),
        # null for a member without a usable `external_id_field` value (kept, see README)
        th.Property("external_id", th.StringType),
        th.Property("lytics_uid", th.StringType),
        th.Property("scan_id", th.StringType, required=True),
    )
    for name in fields:
        props.append(th.Property(name, th.StringType))
    return props.to_dict()


def _as_total(value: t.Any) -> int | None:
    """Lytics' `total` as an int (None when absent or not a whole number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def normalize_id(raw: t.Any) -> str | None:
    """Return the Braze id a profile value stands for, or None ("no id").

    Rule (documented in the README): strings are stripped; integers and integral floats
    are written without a fraction (`1500.0` -> `"1500"`), other finite floats as Python
    prints them; booleans, maps and empty values are no id; a list (a merged profile,
    `["u1", "u1-old"]`) gives its first usable value. Memberships Braze holds under the
    other values stay, because the target keeps whatever it stored for the same
    `lytics_uid`.
    """
    if isinstance(raw, list):
        return _first_id(raw)
    if isinstance(raw, str):
        return raw.strip() or None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and math.isfinite(raw):
        return str(int(raw)) if raw.is_integer() else repr(raw)
    return None


def _first_id(values: list) -> str | None:
    """Return the first usable id of a merged profile's list (nested lists are no id)."""
    for value in values:
        found = normalize_id(value) if not isinstance(value, list) else None
        if found is not None:
            return found
    return None


class _ScanProgress:
    """Counters of one scan pass, kept by the consumer (what was actually emitted)."""

    __slots__ = ("members", "multi", "pages", "skipped", "t0", "unusable")

    def __init__(self) -> None:
        self.members = 0
        self.multi = 0
        self.skipped = 0  # emitted without an id (with their uid)
        self.unusable = 0  # neither an id nor a uid: not emitted
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
    primary_keys = ("audience_id", "member_key")
    replication_key = None
    # Records are built here from strings and None only, with exactly the schema's keys;
    # the SDK's conformance pass is a large share of per-record cost and has nothing to fix.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: Tap) -> None:
        # The schema depends on the `fields` setting: built once here (a `schema` property
        # would be rebuilt twice per record by the SDK).
        fields = list(dict.fromkeys(str(f) for f in tap.config.get("fields") or []))
        super().__init__(tap, schema=member_schema(fields))

    @functools.cached_property
    def extra_fields(self) -> list[str]:
        """Configured profile fields, in order, without duplicates."""
        return list(dict.fromkeys(str(f) for f in self.config.get("fields") or []))

    @property
    def _tap_obj(self) -> RunShared:
        return t.cast("RunShared", self._tap)

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

    def validate_response(self, response: requests.Response) -> None:
        """Also check that a successful answer is a page of profiles (else retried)."""
        super().validate_response(response)
        try:
            body = response_json(response)
        except orjson.JSONDecodeError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(p, dict) for p in data):
            what = (
                "no `data`"
                if not isinstance(body, dict) or "data" not in body
                else f"`data` of type {type(data).__name__}"
                if not isinstance(data, list)
                else "a `data` entry that is not a profile object"
            )
            msg = (
                f"Malformed scan page (HTTP {response.status_code} with {what}) for path: "
                f"{urlparse(response.url).path}"
            )
            raise MalformedScanPage(msg, response)

    def fetch_pages(
        self, context: Context, session: requests.Session
    ) -> t.Iterator[tuple[list[dict], int | None]]:
        """Fetch the pages of one scan pass, following the cursor to the end.

        Yields (profiles, Lytics' `total` or None). Every page was validated (see
        :meth:`validate_response`). Empty pages that still carry a cursor are followed (the
        SDK would stop).
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
                yield body["data"], _as_total(body.get("total"))
                paginator.advance(response)

    def scan_events(self, audience: dict, session: requests.Session) -> t.Iterator[ScanEvent]:
        """Scan one audience to the end, checking the pass against Lytics' `total`.

        An expired cursor or a pass that disagrees with `total` restarts the scan with a new
        scan_id (at most `max_scan_restarts` times); a page still malformed after retries, or
        a pass that never agrees, ends this audience with a `ScanFailed` event (no snapshot).
        """
        max_restarts = int(self.config.get("max_scan_restarts", 3))
        id_field = str(self.config.get("external_id_field", "braze_id"))
        label = audience["audience_slug"] or audience["audience_id"]
        for attempt in itertools.count():
            scan_id = uuid.uuid4().hex
            check = PassCheck(utc_now())
            try:
                for page, total in self.fetch_pages(audience, session):
                    yield ScanPage(audience, scan_id, check.page(page, total, id_field))
            except ScanCursorExpired:
                if attempt >= max_restarts:
                    msg = (
                        f"Scan of audience {label} lost its cursor {attempt + 1} times (limit "
                        f"`max_scan_restarts`={max_restarts}); no snapshot emitted for it"
                    )
                    raise FatalAPIError(msg) from None
                yield ScanRestart(audience, scan_id, f"cursor expired after {check.pages} pages")
                continue
            except MalformedScanPage as exc:
                msg = f"Audience {label}: {exc}; no snapshot emitted for it, nobody is removed"
                yield ScanFailed(audience, scan_id, msg)
                return
            problem = check.problem()
            if problem is None:
                yield ScanDone(audience, scan_id, check)
                return
            if attempt >= max_restarts:
                msg = (
                    f"Audience {label}: {problem}, on {attempt + 1} scans (limit "
                    f"`max_scan_restarts`={max_restarts}); no snapshot emitted for it, nobody "
                    "is removed"
                )
                yield ScanFailed(audience, scan_id, msg)
                return
            yield ScanRestart(audience, scan_id, problem)

    def _events(self, audiences: list[dict]) -> t.Iterator[ScanEvent]:
        sources: list[ScanSource] = [functools.partial(self.scan_events, a) for a in audiences]
        concurrency = max(1, int(self.config.get("scan_concurrency", 3)))
        depth = max(0, int(self.config.get("prefetch_pages", 4)))
        if concurrency == 1 and depth == 0:  # the plain SDK pattern, in this thread
            return sequential_scans(sources, self.requests_session)
        return iter(ConcurrentScans(sources, concurrency, depth))

    def profile_fields(self, audience: dict) -> str:
        """Fields the audience's profiles have (one small scan page without `fields`).

        Only used to explain a missing `external_id_field`; best effort.
        """
        try:
            response = self.requests_session.get(
                self.get_url(audience),
                params={"limit": 10},
                headers={"Authorization": str(self.config["api_token"])},
                timeout=self.timeout,
            )
            body = response_json(response) if response.status_code == HTTPStatus.OK else None
            data = body.get("data") if isinstance(body, dict) else None
        except (requests.RequestException, orjson.JSONDecodeError):
            data = None
        if not isinstance(data, list):
            return "(could not list them)"
        names = sorted({str(k) for p in data if isinstance(p, dict) for k in p})
        shown = ", ".join(names[:40]) + (f" and {len(names) - 40} more" if len(names) > 40 else "")
        return shown or "(none)"

    # --- emitting (main thread) ---------------------------------------------------------

    @functools.cached_property
    def id_field(self) -> str:
        """The profile field holding the Braze id (setting `external_id_field`)."""
        return str(self.config.get("external_id_field", "braze_id"))

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Emit the members of every configured audience; record finished scans.

        A profile without a usable `external_id_field` value is emitted with `external_id`
        null and its `lytics_uid`, so that a target keeps what it sent for that person
        (see README "Removal safeguards"); its `member_key` is "lytics_uid:<uid>". A profile
        with neither is of no use to anyone (nothing to send, nothing to keep memberships
        by): it is counted and logged, not emitted (so not in the snapshot's member_count;
        the completeness check against Lytics' `total` still counts it as served).
        """
        audiences = self._audiences_to_scan()
        if not audiences:
            return
        ledger: ScanLedger = self._tap_obj.ledger
        every = max(1, int(self.config.get("progress_every_pages", 100)))
        progress: dict[str, _ScanProgress] = {}
        for event in self._events(audiences):
            prog = progress.get(event.scan_id)
            if prog is None:
                prog = progress[event.scan_id] = _ScanProgress()
            if isinstance(event, ScanPage):
                yield from self._page_records(event, prog)
                if prog.pages % every == 0:
                    self._log_progress(event.audience, prog)
                continue
            del progress[event.scan_id]  # the pass ended: every record of it was emitted
            if isinstance(event, ScanRestart):
                self._restarted(ledger, event)
            elif isinstance(event, ScanFailed):
                ledger.fail(event.message)
                self.logger.error("%s", event.message)
            else:
                self._finish(ledger, event, prog)
        self._log_run_summary(ledger)

    def _audiences_to_scan(self) -> list[dict]:
        """Resolve the configured audiences to scan contexts and announce them in the log."""
        audiences_stream = t.cast("AudiencesStream", self._tap_obj.streams[AudiencesStream.name])
        audiences = resolve_audiences(self.config, audiences_stream.list_segments())
        if not audiences:
            self.logger.info("Setting `audiences` is empty: no member scan this run.")
            return audiences
        self.logger.info(
            "Scanning %d audiences: %s",
            len(audiences),
            ", ".join(a["audience_slug"] or a["audience_id"] for a in audiences),
        )
        for audience in audiences:
            if not audience["audience_slug"]:
                self.logger.warning(
                    "Audience %s has no slug in Lytics: its records carry audience_slug null "
                    "(target-braze-audience skips them; give the audience a slug to sync it)",
                    audience["audience_id"],
                )
        return audiences

    def _page_records(self, event: ScanPage, prog: _ScanProgress) -> t.Iterator[dict[str, t.Any]]:
        """Build the member records of one page, counted in `prog` (the per-record hot path)."""
        audience_id = event.audience["audience_id"]
        slug = event.audience["audience_slug"]
        scan_id = event.scan_id
        id_field = self.id_field
        extra = self.extra_fields
        prog.pages += 1
        for profile in event.profiles:
            raw = profile.get(id_field)
            external_id = normalize_id(raw)
            uid = profile.get("_uid")
            lytics_uid = None if uid in _NO_UID else str(uid)
            if external_id is not None:
                member_key = external_id
                prog.members += 1
                if isinstance(raw, list):
                    prog.multi += 1
            elif lytics_uid is not None:
                member_key = UID_KEY_PREFIX + lytics_uid
                prog.skipped += 1
            else:
                prog.unusable += 1
                continue
            record = {
                "audience_id": audience_id,
                "audience_slug": slug,
                "member_key": member_key,
                "external_id": external_id,
                "lytics_uid": lytics_uid,
                "scan_id": scan_id,
            }
            for name in extra:
                value = profile.get(name)
                record[name] = value if isinstance(value, _AS_IS) else _text(value)
            yield record

    def _log_progress(self, audience: dict, prog: _ScanProgress) -> None:
        id_field = self.id_field
        self.logger.info(
            "Scanning audience %s: %d pages, %d members, %d without `%s`, %d without "
            "`%s` or `_uid` (not emitted) (%.0f/s)",
            audience["audience_slug"] or audience["audience_id"],
            prog.pages,
            prog.members,
            prog.skipped,
            id_field,
            prog.unusable,
            id_field,
            (prog.members + prog.skipped + prog.unusable) / max(time.monotonic() - prog.t0, 1e-9),
        )

    def _restarted(self, ledger: ScanLedger, event: ScanRestart) -> None:
        ledger.restarts += 1
        self.logger.warning(
            "Scan of audience %s (scan_id %s): %s; restarting the scan from the start "
            "with a new scan_id",
            event.audience["audience_slug"] or event.audience["audience_id"],
            event.scan_id,
            event.reason,
        )

    def _log_run_summary(self, ledger: ScanLedger) -> None:
        id_field = self.id_field
        self.logger.info(
            "Run summary: %d audiences scanned, %d members emitted, %d of them without `%s` "
            "(kept), %d profiles without `%s` or `_uid` not emitted, %d scan restarts, "
            "%d audiences failed",
            ledger.audiences_scanned,
            ledger.members,
            ledger.without_id,
            id_field,
            ledger.unusable,
            id_field,
            ledger.restarts,
            len(ledger.failures),
        )

    def _finish(self, ledger: ScanLedger, event: ScanDone, prog: _ScanProgress) -> None:
        """Record a finished pass in the ledger, unless none of its members has an id."""
        audience, check = event.audience, event.check
        label = audience["audience_slug"] or audience["audience_id"]
        if not self._ids_usable(ledger, audience, prog):
            return
        if prog.multi:
            self.logger.info(
                "Audience %s: %d members have several `%s` values (merged profiles): the "
                "first is sent, memberships of the others are kept through `lytics_uid`",
                label,
                prog.multi,
                self.id_field,
            )
        if check.total is None:
            self.logger.info(
                "Audience %s: Lytics sent no `total`, so the scan's completeness is not "
                "checked against it",
                label,
            )
        self._log_scanned(label, event, prog)
        ledger.complete(
            CompletedScan(
                audience_id=audience["audience_id"],
                audience_slug=audience["audience_slug"],
                scan_id=event.scan_id,
                member_count=prog.members + prog.skipped,
                members_without_id=prog.skipped,
                members_unusable=prog.unusable,
                started_at=check.started_at,
                completed_at=utc_now(),
            )
        )

    def _ids_usable(self, ledger: ScanLedger, audience: dict, prog: _ScanProgress) -> bool:
        """Return False (the audience failed) when none of its members has the id field."""
        label = audience["audience_slug"] or audience["audience_id"]
        id_field = self.id_field
        scanned = prog.members + prog.skipped + prog.unusable
        no_id = prog.skipped + prog.unusable
        if no_id and not prog.members:
            msg = (
                f"Audience {label}: none of its {scanned} members has the field `{id_field}` "
                f"(setting `external_id_field`); its profiles have: {self.profile_fields(audience)}. "
                "No snapshot emitted for it, nobody is removed: check `external_id_field`."
            )
            ledger.fail(msg)
            self.logger.error("%s", msg)
            return False
        if no_id * 2 > scanned:
            self.logger.warning(
                "Audience %s: %d of its %d members have no `%s` (setting `external_id_field`); "
                "its profiles have: %s. They are kept in Braze as they are.",
                label,
                no_id,
                scanned,
                id_field,
                self.profile_fields(audience),
            )
        return True

    def _log_scanned(self, label: str, event: ScanDone, prog: _ScanProgress) -> None:
        elapsed = time.monotonic() - prog.t0
        scanned = prog.members + prog.skipped + prog.unusable
        self.logger.info(
            "Audience %s scanned: %d members, kept: %d members without `%s`, %d duplicates "
            "skipped, %d without `%s` or `_uid` not emitted, %d pages, %.1fs (%.0f members/s), "
            "scan_id %s",
            label,
            prog.members + prog.skipped,
            prog.skipped,
            self.id_field,
            event.check.duplicates,
            prog.unusable,
            self.id_field,
            prog.pages,
            elapsed,
            scanned / max(elapsed, 1e-9),
            event.scan_id,
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
        th.Property("members_without_id", th.IntegerType, required=True),
        th.Property("started_at", th.DateTimeType, required=True),
        th.Property("completed_at", th.DateTimeType, required=True),
    ).to_dict()

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """Yield the finished scans recorded by `audience_members` in this run."""
        tap = t.cast("RunShared", self._tap)
        members_stream = tap.streams[AudienceMembersStream.name]
        if not members_stream.selected and self.config.get("audiences"):
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
                "members_without_id": scan.members_without_id,
                "started_at": scan.started_at,
                "completed_at": scan.completed_at,
            }
