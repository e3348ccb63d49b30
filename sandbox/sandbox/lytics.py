"""LyticsSandbox: a stateful emulator of the Lytics segment, scan and collect APIs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from sandbox.server import EmulatorServer, RecordedRequest, Response, json_response

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
CURSOR_ERROR = "invalid or expired scan cursor"
TRUE_VALUES = frozenset({"true", "1", "yes", "t"})
MALFORMED_KINDS = ("no_data", "null_data", "object_data")


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 timestamp with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def generated_member(i: int, prefix: str, slug: str) -> dict[str, Any]:
    """Synthetic member ``i`` of a generated audience (computed, never stored)."""
    return {
        "_uid": f"lu{i}",
        "braze_id": f"{prefix}{i}",
        "email": f"{prefix}{i}@example.com",
        "first_name": f"First{i}",
        "last_name": f"Last{i}",
        "segments": [slug],
    }


@dataclass
class Audience:
    """One audience (Lytics segment) and its membership."""

    id: str
    slug: str
    name: str
    description: str
    kind: str
    created: float
    updated: float
    members: list[dict[str, Any]] | None = None
    generate: tuple[int, str, int] | None = None  # (n, prefix, start)
    epoch: int = 0
    tags: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of members."""
        if self.generate is not None:
            return self.generate[0]
        return len(self.members or [])

    def member(self, position: int) -> dict[str, Any]:
        """Member at ``position`` in the stable scan order."""
        if self.generate is not None:
            _, prefix, start = self.generate
            return generated_member(start + position, prefix, self.slug)
        assert self.members is not None
        return self.members[position]

    def members_iter(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Members in ``[start, stop)``."""
        for pos in range(start, min(stop, self.total)):
            yield self.member(pos)

    def to_api(self) -> dict[str, Any]:
        """Segment object as ``/api/segment`` returns it."""
        return {
            "id": self.id,
            "slug_name": self.slug,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "table": "user",
            "tags": list(self.tags),
            "is_public": True,
            "segment_ql": f"FILTER AND (INCLUDE {self.slug}) FROM user ALIAS {self.slug}",
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated),
        }


class LyticsSandbox(EmulatorServer):
    """Emulates Lytics ``/api/segment``, ``/api/segment/{id}/scan`` and ``/collect/json``."""

    name = "lytics-sandbox"

    def __init__(
        self,
        api_token: str = "sandbox-lytics-token",  # noqa: S107
        cursor_key: str = "_next",
        cursor_ttl: float = 300.0,
        max_collect_bytes: int = 10 * 1024 * 1024,
        max_record_bytes: int | None = 16 * 1024,
        scan_page_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_token = api_token
        self.cursor_key = cursor_key
        self.cursor_ttl = cursor_ttl
        self.max_collect_bytes = max_collect_bytes
        #: Lytics' "Max size in batch: 16 KB, byte size of a single input record within a
        #: batch" (platform limits); None disables the check. See README for the reading.
        self.max_record_bytes = max_record_bytes
        #: Seconds each scan answer is held back (benchmark-only latency knob; 0 = none).
        #: Slept outside the server lock, so concurrent scans overlap as they do on Lytics.
        self.scan_page_delay = float(scan_page_delay)
        self._audiences: dict[str, Audience] = {}  # by slug
        self._by_id: dict[str, str] = {}  # id -> slug
        self._collected: dict[str, list[dict[str, Any]]] = {}
        self._cursor_generation = 0
        self._epoch_counter = 0
        # Scan faults (see README "Scan faults"): malformed 200 pages still to serve, silent
        # truncation per audience slug, and membership edits applied after a given scan page.
        self._malformed: list[str] = []
        self._truncated: dict[str, tuple[int, bool]] = {}
        self._scan_edits: dict[str, list[tuple[int, list[dict[str, Any]], list[str], int]]] = {}
        self._pages_served: dict[str, int] = {}
        self.stats.update(
            {
                "scan_pages": 0,
                "members_served": 0,
                "collect_requests": 0,
                "collected_records": 0,
                "rejected": 0,
                "rejected_too_large": 0,
                "malformed_pages": 0,
            }
        )
        self.add_admin_route("GET", "collected", self._admin_collected)
        self.add_admin_route("GET", "audiences", self._admin_list_audiences)
        self.add_admin_route("POST", "audiences", self._admin_add_audience)
        self.add_admin_route("DELETE", "audiences", self._admin_remove_audience)
        self.add_admin_route("POST", "expire_cursors", self._admin_expire_cursors)
        self.add_admin_route("POST", "cursor_key", self._admin_cursor_key)
        self.add_admin_route("POST", "malformed_scan", self._admin_malformed_scan)
        self.add_admin_route("POST", "truncate_scan", self._admin_truncate_scan)
        self.add_admin_route("POST", "edit_members", self._admin_edit_members)
        self.add_admin_route("POST", "scan_page_delay", self._admin_scan_page_delay)

    # ---- Python API ------------------------------------------------------------------
    def _now_after(self, previous: float) -> float:
        now = time.time()
        # keep `updated` strictly increasing at the millisecond resolution it is shown in
        return now if now >= previous + 0.001 else previous + 0.001

    def _next_epoch(self) -> int:
        self._epoch_counter += 1
        return self._epoch_counter

    def add_audience(
        self,
        slug: str,
        name: str | None = None,
        members: list[dict[str, Any]] | None = None,
        description: str = "",
        kind: str = "segment",
    ) -> str:
        """Create an audience (or replace an existing one's details); returns its 32-hex id."""
        with self.lock:
            existing = self._audiences.get(slug)
            if existing is not None:
                existing.name = name or existing.name
                existing.description = description or existing.description
                existing.kind = kind
                self._replace(existing, list(members or []), None)
                return existing.id
            aid = hashlib.sha256(slug.encode()).hexdigest()[:32]
            now = time.time()
            aud = Audience(
                id=aid,
                slug=slug,
                name=name or slug,
                description=description,
                kind=kind,
                created=now,
                updated=now,
                members=list(members or []),
                epoch=self._next_epoch(),
            )
            self._audiences[slug] = aud
            self._by_id[aid] = slug
            return aid

    def _replace(
        self,
        aud: Audience,
        members: list[dict[str, Any]] | None,
        generate: tuple[int, str, int] | None,
    ) -> None:
        aud.members = members
        aud.generate = generate
        aud.epoch = self._next_epoch()
        aud.updated = self._now_after(aud.updated)

    def _get(self, slug_or_id: str) -> Audience:
        aud = self._audiences.get(slug_or_id) or self._audiences.get(
            self._by_id.get(slug_or_id, "")
        )
        if aud is None:
            raise KeyError(f"no audience {slug_or_id!r}")
        return aud

    def set_members(self, slug_or_id: str, members: list[dict[str, Any]]) -> None:
        """Replace an audience's membership (bumps ``updated``; open scans become invalid)."""
        with self.lock:
            self._replace(self._get(slug_or_id), list(members), None)

    def generate_members(self, slug: str, n: int, prefix: str = "user", start: int = 0) -> str:
        """Give ``slug`` ``n`` synthetic members computed on demand; creates it if needed."""
        with self.lock:
            if slug not in self._audiences and slug not in self._by_id:
                self.add_audience(slug)
            aud = self._get(slug)
            self._replace(aud, None, (int(n), prefix, int(start)))
            return aud.id

    def remove_audience(self, slug_or_id: str) -> None:
        """Delete an audience."""
        with self.lock:
            aud = self._get(slug_or_id)
            del self._audiences[aud.slug]
            self._by_id.pop(aud.id, None)

    def audience(self, slug_or_id: str) -> dict[str, Any]:
        """Return the segment object the API would return."""
        with self.lock:
            return self._get(slug_or_id).to_api()

    def members(self, slug_or_id: str) -> list[dict[str, Any]]:
        """Every member (materialised; avoid on huge generated audiences)."""
        with self.lock:
            aud = self._get(slug_or_id)
            return [dict(m) for m in aud.members_iter(0, aud.total)]

    # ---- scan faults -------------------------------------------------------------------
    def malformed_scan_pages(self, n: int = 1, kind: str = "no_data") -> None:
        """Answer the next ``n`` scan requests ``200`` with a malformed body.

        ``kind``: ``no_data`` (envelope without ``data``), ``null_data`` (``"data": null``)
        or ``object_data`` (``"data": {}``). The cursor is not advanced.
        """
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MALFORMED_KINDS)}")
        with self.lock:
            self._malformed.extend([kind] * int(n))

    def truncate_scan(
        self, slug_or_id: str, serve: int | None, *, report_total: bool = True
    ) -> None:
        """Make every scan of an audience end silently after ``serve`` members (None: stop).

        The last page carries no cursor, as if the audience ended there. ``report_total``
        True keeps ``total`` at the audience's real size (a detectable glitch); False
        reports the truncated size (an undetectable one, like a definition edited by
        mistake).
        """
        with self.lock:
            slug = self._get(slug_or_id).slug
            if serve is None:
                self._truncated.pop(slug, None)
            else:
                self._truncated[slug] = (max(0, int(serve)), bool(report_total))

    def edit_members(
        self,
        slug_or_id: str,
        add: list[dict[str, Any]] | None = None,
        remove: list[str] | None = None,
        at: int = 0,
    ) -> None:
        """Change a live audience without invalidating open scan cursors.

        ``add`` profiles are inserted at position ``at`` (0: the front), profiles whose
        ``_uid`` is in ``remove`` leave. Open cursors keep their position, so a scan running
        meanwhile serves some members twice (after an insert before its position) or never
        (after a removal before it); ``total`` follows the new size.
        """
        with self.lock:
            aud = self._get(slug_or_id)
            if aud.members is None:
                raise ValueError("edit_members works on explicit member lists, not generated ones")
            gone = set(remove or [])
            kept = [m for m in aud.members if m.get("_uid") not in gone]
            pos = max(0, min(int(at), len(kept)))
            aud.members = kept[:pos] + list(add or []) + kept[pos:]

    def edit_members_during_scan(
        self,
        slug_or_id: str,
        after_pages: int,
        add: list[dict[str, Any]] | None = None,
        remove: list[str] | None = None,
        at: int = 0,
    ) -> None:
        """Schedule :meth:`edit_members` right after the audience's ``after_pages``-th scan page."""
        with self.lock:
            slug = self._get(slug_or_id).slug
            self._scan_edits.setdefault(slug, []).append(
                (
                    self._pages_served.get(slug, 0) + int(after_pages),
                    list(add or []),
                    list(remove or []),
                    int(at),
                )
            )

    def clear_scan_faults(self) -> None:
        """Forget malformed pages, truncations and scheduled edits."""
        with self.lock:
            self._malformed.clear()
            self._truncated.clear()
            self._scan_edits.clear()

    def expire_cursors(self) -> None:
        """Invalidate every cursor issued so far."""
        with self.lock:
            self._cursor_generation += 1

    def collected(self, stream: str) -> list[dict[str, Any]]:
        """Return records accepted by ``/collect/json/{stream}`` (dry runs excluded)."""
        with self.lock:
            return list(self._collected.get(stream, []))

    def streams(self) -> list[str]:
        """Streams that received records."""
        with self.lock:
            return sorted(self._collected)

    # ---- cursors ---------------------------------------------------------------------
    def _encode_cursor(self, aud: Audience, position: int) -> str:
        raw = orjson.dumps([aud.id, aud.epoch, position, time.time(), self._cursor_generation])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode_cursor(self, cursor: str, aud: Audience) -> int | None:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            aid, epoch, position, issued, generation = orjson.loads(raw)
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            return None
        if (
            aid != aud.id
            or epoch != aud.epoch
            or generation != self._cursor_generation
            or not isinstance(position, int)
            or not 0 <= position <= aud.total
            or not isinstance(issued, (int, float))
            or time.time() - issued > self.cursor_ttl
        ):
            return None
        return position

    # ---- HTTP ------------------------------------------------------------------------
    def error(self, status: int, message: str) -> Response:
        """Lytics error envelope."""
        return json_response(status, {"status": status, "message": message, "data": None})

    @staticmethod
    def ok(data: Any, **extra: Any) -> Response:
        """Lytics success envelope."""
        body = {"status": 200, "message": "success", "data": data}
        body.update(extra)
        return json_response(200, body)

    def authenticate(self, req: RecordedRequest) -> Response | None:
        """Require the raw token in ``Authorization`` (no "Bearer" prefix)."""
        if req.headers.get("authorization") != self.api_token:
            return self.error(401, "Unauthorized: missing or invalid API token")
        return None

    def route(self, req: RecordedRequest) -> Response:
        """Dispatch the segment, scan and collect routes."""
        parts = [p for p in req.path.split("/") if p]
        if parts[:2] == ["collect", "json"] and len(parts) == 3:
            if req.method != "POST":
                return self.error(405, "method not allowed")
            return self._collect(req, parts[2])
        if parts[:2] != ["api", "segment"] or req.method != "GET":
            return self.error(404, "not found")
        if len(parts) == 2:
            return self._list(req)
        if len(parts) == 3 and parts[2] == "scan":
            return self._scan(req, req.query.get("id", ""))
        if len(parts) == 3:
            try:
                return self.ok(self._get(parts[2]).to_api())
            except KeyError:
                return self.error(404, f"segment not found: {parts[2]}")
        if len(parts) == 4 and parts[3] == "scan":
            return self._scan(req, parts[2])
        return self.error(404, "not found")

    def response_delay(self, req: RecordedRequest) -> float:
        """Hold every scan answer back by ``scan_page_delay`` seconds (emulated latency)."""
        if (
            self.scan_page_delay > 0
            and req.method == "GET"
            and req.path.rstrip("/").endswith("/scan")
        ):
            return self.scan_page_delay
        return 0.0

    def _list(self, req: RecordedRequest) -> Response:
        if req.query.get("table", "user") != "user":
            return self.ok([])
        return self.ok([a.to_api() for a in self._audiences.values()])

    def _scan(self, req: RecordedRequest, slug_or_id: str) -> Response:
        try:
            aud = self._get(slug_or_id)
        except KeyError:
            return self.error(404, f"segment not found: {slug_or_id}")
        raw_limit = req.query.get("limit", "")
        try:
            limit = int(raw_limit) if raw_limit else DEFAULT_LIMIT
        except ValueError:
            return self.error(400, f"invalid limit: {raw_limit!r}")
        limit = max(1, min(MAX_LIMIT, limit))
        start = req.query.get("start", "")
        position = 0
        if start:
            decoded = self._decode_cursor(start, aud)
            if decoded is None:
                return self.error(400, CURSOR_ERROR)
            position = decoded
        if self._malformed:
            kind = self._malformed.pop(0)
            self.stats["malformed_pages"] += 1
            body: dict[str, Any] = {"status": 200, "message": "success"}
            if kind != "no_data":
                body["data"] = None if kind == "null_data" else {}
            return json_response(200, body)
        fields = [f for f in req.query.get("fields", "").split(",") if f]
        total = aud.total
        servable = total
        truncated = self._truncated.get(aud.slug)
        if truncated is not None:
            servable = min(total, truncated[0])
            if not truncated[1]:
                total = servable
        end = min(servable, position + limit)
        page = []
        for member in aud.members_iter(position, end):
            if fields:
                member = {k: member[k] for k in fields if k in member}
            page.append(member)
        self.stats["scan_pages"] += 1
        self.stats["members_served"] += len(page)
        extra: dict[str, Any] = {"total": total}
        if end < servable:
            extra[self.cursor_key] = self._encode_cursor(aud, end)
        served = self._pages_served[aud.slug] = self._pages_served.get(aud.slug, 0) + 1
        edits = self._scan_edits.get(aud.slug)
        if edits:
            for edit in [e for e in edits if e[0] <= served]:
                edits.remove(edit)
                self.edit_members(aud.slug, add=edit[1], remove=edit[2], at=edit[3])
        return self.ok(page, **extra)

    def _collect(self, req: RecordedRequest, stream: str) -> Response:
        if len(req.body) > self.max_collect_bytes:
            return self.error(
                413, f"request body exceeds the {self.max_collect_bytes} byte upload limit"
            )
        records = self._parse_collect_body(req.body)
        if records is None:
            return self.error(400, "body must be a JSON object, a JSON array or NDJSON")
        accepted = [r for r in records if isinstance(r, dict)]
        limit = self.max_record_bytes
        if limit is not None:
            fitting = [r for r in accepted if len(orjson.dumps(r)) <= limit]
            self.stats["rejected_too_large"] += len(accepted) - len(fitting)
            accepted = fitting
        rejected = len(records) - len(accepted)
        dryrun = req.query.get("dryrun", "").lower() in TRUE_VALUES
        self.stats["collect_requests"] += 1
        self.stats["rejected"] += rejected
        if not dryrun:
            self._collected.setdefault(stream, []).extend(accepted)
            self.stats["collected_records"] += len(accepted)
        return self.ok(
            {
                "message_count": len(accepted),
                "rejected_count": rejected,
                "content-type": "application/json",
                "droperrors": False,
                "dryrun": dryrun,
                "timestamp_field": req.query.get("timestamp_field", ""),
                "filename": req.query.get("filename", ""),
            }
        )

    @staticmethod
    def _parse_collect_body(body: bytes) -> list[Any] | None:
        """Parse an object, an array or NDJSON; unparsable NDJSON lines count as rejected."""
        text = body.strip()
        if not text:
            return None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = _MISSING
        if data is not _MISSING:
            return data if isinstance(data, list) else [data]
        records: list[Any] = []
        parsed_any = False
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                records.append(orjson.loads(line))
                parsed_any = True
            except orjson.JSONDecodeError:
                records.append(_UNPARSABLE)
        return records if parsed_any else None

    # ---- admin routes ----------------------------------------------------------------
    def _admin_collected(self, req: RecordedRequest) -> Response:
        stream = req.query.get("stream")
        if stream:
            return json_response(200, self.collected(stream))
        return json_response(200, {s: list(r) for s, r in self._collected.items()})

    def _admin_list_audiences(self, req: RecordedRequest) -> Response:
        return json_response(
            200, [{**a.to_api(), "total": a.total} for a in self._audiences.values()]
        )

    def _admin_add_audience(self, req: RecordedRequest) -> Response:
        spec = self.admin_body(req)
        aid = self.load_audience(spec)
        return json_response(200, {"ok": True, "id": aid})

    def load_audience(self, spec: dict[str, Any]) -> str:
        """Create or update an audience from ``{slug, name, description, kind, members|generate}``."""
        slug = str(spec["slug"])
        aid = self.add_audience(
            slug,
            name=spec.get("name"),
            members=spec.get("members") or [],
            description=str(spec.get("description", "")),
            kind=str(spec.get("kind", "segment")),
        )
        gen = spec.get("generate")
        if gen:
            self.generate_members(
                slug, int(gen["n"]), str(gen.get("prefix", "user")), int(gen.get("start", 0))
            )
        return aid

    def _admin_remove_audience(self, req: RecordedRequest) -> Response:
        slug = req.query.get("slug") or str(self.admin_body(req).get("slug", ""))
        self.remove_audience(slug)
        return json_response(200, {"ok": True})

    def _admin_expire_cursors(self, req: RecordedRequest) -> Response:
        self.expire_cursors()
        return json_response(200, {"ok": True})

    def _admin_cursor_key(self, req: RecordedRequest) -> Response:
        key = str(self.admin_body(req)["cursor_key"])
        if key not in ("_next", "next"):
            raise ValueError("cursor_key must be '_next' or 'next'")
        self.cursor_key = key
        return json_response(200, {"ok": True, "cursor_key": key})

    def _admin_malformed_scan(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        self.malformed_scan_pages(int(data.get("n", 1)), str(data.get("kind", "no_data")))
        return json_response(200, {"ok": True})

    def _admin_truncate_scan(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        serve = data.get("serve")
        self.truncate_scan(
            str(data["slug"]),
            None if serve is None else int(serve),
            report_total=bool(data.get("report_total", True)),
        )
        return json_response(200, {"ok": True})

    def _admin_scan_page_delay(self, req: RecordedRequest) -> Response:
        seconds = float(self.admin_body(req).get("seconds", 0))
        if not 0 <= seconds <= 60:
            raise ValueError("seconds must be between 0 and 60")
        self.scan_page_delay = seconds
        return json_response(200, {"ok": True, "seconds": seconds})

    def _admin_edit_members(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        slug = str(data["slug"])
        add = list(data.get("add") or [])
        remove = [str(u) for u in data.get("remove") or []]
        at = int(data.get("at", 0))
        if data.get("after_pages") is not None:
            self.edit_members_during_scan(slug, int(data["after_pages"]), add, remove, at)
        else:
            self.edit_members(slug, add, remove, at)
        return json_response(200, {"ok": True})


_MISSING = object()
_UNPARSABLE = object()
