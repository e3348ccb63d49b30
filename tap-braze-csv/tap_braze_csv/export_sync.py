"""Reading triggered exports into a stream, with state so nothing is emitted twice.

Stream state (under ``bookmarks.<stream>``, beside the CSV ``files``)::

    {"exports": {"<segment_id>": {"object_prefix": "...", "requested_at": "2026-...Z",
                                  "complete": false, "members": ["archive.zip!a.json"],
                                  "member": "archive.zip!b.json", "line": 5000}}}

An export is read once: ``members`` lists the files done, ``member``/``line`` the last line whose
records were written to stdout (advanced only after a flush, as for CSV files). A run that stops
mid-export resumes that export where it stopped when it can be read again (bucket mode, by its
``object_prefix``). A download URL is a credential and is not kept, so in URL mode the next run
starts a new export instead and says so. A complete export is followed by a new one on the next
run, or only once ``rest_export.min_interval_hours`` have passed since it was requested.
Only strings and integers are stored (no floats: stock targets choke on Decimal state).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from typing import Any, NamedTuple

import orjson

from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.jsonl import UserConverter, engagement_records
from tap_braze_csv.rest_export import READ_ERRORS, BrazeExportError, ReadyExport
from tap_braze_csv.sdk_compat import stream_tap

MAX_BAD_LINE_LOGS = 10


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def sync_rest_exports(stream: Any, kind: str, writer: Any) -> Generator[dict, Any, None]:
    """Read every configured segment's export into ``stream`` (``kind``: users|engagement)."""
    coordinator = stream_tap(stream).export_coordinator
    if coordinator is None:
        return
    settings = coordinator.settings
    exports = stream.stream_state.setdefault("exports", {})
    for segment_id in list(exports):
        if segment_id not in settings.segment_ids:
            del exports[segment_id]
    now = dt.datetime.now(dt.timezone.utc)
    todo = [seg for seg in settings.segment_ids if _due(stream, settings, seg, exports, now)]
    resume = _resumable(exports, todo)
    coordinator.trigger_all(todo, resume)
    for segment_id in todo:
        entry = exports.get(segment_id)
        export = coordinator.export_for(
            segment_id, resume.get(segment_id), str((entry or {}).get("requested_at") or "")
        )
        entry = _entry_for(stream, exports, segment_id, export)
        yield from _read_export(stream, kind, export, entry, writer)
        writer.flush()
        entry["complete"] = True
        entry.pop("member", None)
        entry.pop("line", None)
        stream.exports_read += 1
        stream.emit_state()


def _resumable(exports: dict[str, Any], todo: list[str]) -> dict[str, str]:
    """Return the segments whose last export stopped midway, with its object prefix."""
    return {
        seg: str(exports[seg]["object_prefix"])
        for seg in todo
        if seg in exports and not exports[seg].get("complete") and exports[seg].get("object_prefix")
    }


def _due(
    stream: Any, settings: Any, segment_id: str, exports: dict[str, Any], now: dt.datetime
) -> bool:
    """Whether a segment's export is due: not read yet, or read over min_interval_hours ago."""
    entry = exports.get(segment_id)
    if not (entry and entry.get("complete") and settings.min_interval_hours > 0):
        return True
    last = _parse_time(entry.get("requested_at"))
    if last is None or now - last >= dt.timedelta(hours=settings.min_interval_hours):
        return True
    stream.logger.info(
        "Segment %s: export %s requested at %s was read; the next one is due "
        "%g hour(s) after it (rest_export.min_interval_hours)",
        segment_id,
        entry.get("object_prefix"),
        entry.get("requested_at"),
        settings.min_interval_hours,
    )
    stream.exports_skipped += 1
    return False


def _entry_for(
    stream: Any, exports: dict[str, Any], segment_id: str, export: ReadyExport
) -> dict[str, Any]:
    """Return the state entry of ``export``: the resumed one, or a new one replacing the last."""
    entry = exports.get(segment_id)
    if (
        entry is not None
        and not entry.get("complete")
        and entry.get("object_prefix") == export.object_prefix
    ):
        return entry
    if entry is not None and not entry.get("complete"):
        stream.logger.warning(
            "Segment %s: the previous run stopped inside export %s, which cannot be "
            "downloaded again (its URL is not kept); reading the new export %s from its "
            "start, so users read before the interruption are sent again",
            segment_id,
            entry.get("object_prefix"),
            export.object_prefix,
        )
    entry = {
        "object_prefix": export.object_prefix,
        "requested_at": export.requested_at,
        "complete": False,
        "members": [],
    }
    exports[segment_id] = entry
    return entry


def _selected(stream: Any) -> tuple[dict[str, Any], bool]:
    schema = stream.effective_schema
    props = schema.get("properties", {})
    mask = stream.mask
    selected = {k: v for k, v in props.items() if mask.get(("properties", k), True)}
    extra_ok = schema.get("additionalProperties", True) is not False
    return selected, extra_ok


class _MemberReading(NamedTuple):
    """What every member of one export is read with."""

    converter: UserConverter | None  # None: engagement records
    allowed: frozenset[str] | None  # engagement fields kept (None: all)
    skip_bad: bool
    segment: str


def _read_export(
    stream: Any, kind: str, export: ReadyExport, entry: dict[str, Any], writer: Any
) -> Generator[dict, Any, None]:
    selected, extra_ok = _selected(stream)
    how = _MemberReading(
        converter=UserConverter(selected, extra_ok=extra_ok) if kind == "users" else None,
        allowed=None if extra_ok else frozenset(selected),
        # A JSON line that does not parse cannot be emitted: `keep` and `skip` skip it (counted).
        skip_bad=(stream.config.get("on_bad_row") or "keep") != "fail",
        segment=export.segment_id,
    )
    done = set(entry.get("members") or [])
    for key, label, raw in export.members():
        if key in done:
            stream.logger.info("Skipping %s: already read (state)", label)
            continue
        resume = int(entry.get("line", 0)) if entry.get("member") == key else 0
        if resume:
            stream.logger.info("Resuming %s after line %d", label, resume)
        entry["member"] = key
        entry["line"] = resume
        writer.cursor = entry
        stream.logger.info("Reading %s", label)
        emitted = yield from _read_member(stream, how, label, raw, resume, writer)
        writer.flush()
        entry.setdefault("members", []).append(key)
        entry.pop("member", None)
        entry.pop("line", None)
        stream.rows_read += emitted
        _report_unparsed(stream, label, how.converter)
        stream.logger.info("Finished %s: %d record(s)", label, emitted)
        stream.emit_state()


def _report_unparsed(stream: Any, label: str, converter: UserConverter | None) -> None:
    """Log (then forget) the values of a member that were emitted as null."""
    if converter is not None and converter.unparsed:
        stream.logger.warning(
            "%s: values that do not fit their field's type were emitted as null: %s",
            label,
            ", ".join(f"{k} ({n})" for k, n in sorted(converter.unparsed.items())),
        )
        converter.unparsed.clear()


def _read_member(
    stream: Any, how: _MemberReading, label: str, raw: Any, resume: int, writer: Any
) -> Generator[dict, Any, int]:
    """Emit the records of one JSON-lines member after line ``resume``; return their count."""
    converter = how.converter
    add = writer.add
    lineno = 0
    emitted = 0
    bad = 0
    try:
        for line in raw:
            lineno += 1
            if lineno <= resume or not line.strip():
                continue
            user = _parse_user(line)
            if isinstance(user, str):
                bad += 1
                _bad_line(stream, how, writer, f"{label}: line {lineno}: {user}", bad)
                continue
            constants = {
                "_braze_segment_id": how.segment,
                "_sdc_source_file": label,
                "_sdc_source_lineno": lineno,
            }
            if converter is not None:
                record = converter.convert(user, constants)
                add(record, lineno)
                emitted += 1
                yield record
            else:
                emitted += yield from _engagement(user, constants, how.allowed, lineno, add)
    except READ_ERRORS as exc:
        writer.flush()
        msg = f"{label}: at or after line {lineno + 1}: unreadable ({type(exc).__name__}: {exc})"
        raise BrazeExportError(msg) from None
    stream.bad_rows += bad
    return emitted


def _parse_user(line: Any) -> dict[str, Any] | str:
    """Parse one JSON line: the user object, or why it is not one."""
    try:
        user = orjson.loads(line)
    except ValueError as exc:
        return f"not a JSON user object ({exc})"
    if not isinstance(user, dict):
        return "not a JSON user object (not a JSON object)"
    return user


def _bad_line(stream: Any, how: _MemberReading, writer: Any, msg: str, count: int) -> None:
    """Skip and count a line that is not a user, or (on_bad_row: fail) stop the run."""
    if not how.skip_bad:
        writer.flush()
        raise BrazeCsvError(msg + " (on_bad_row: fail)") from None
    if count <= MAX_BAD_LINE_LOGS:
        stream.logger.warning("Skipping bad line: %s", msg)


def _engagement(
    user: dict[str, Any],
    constants: dict[str, Any],
    allowed: frozenset[str] | None,
    lineno: int,
    add: Any,
) -> Generator[dict, Any, int]:
    """Emit a user's engagement records; return their count."""
    records = list(engagement_records(user, constants))
    last = len(records) - 1
    for i, record in enumerate(records):
        if allowed is not None:
            record = {k: v for k, v in record.items() if k in allowed}
        # The resume point passes this line only with its last record.
        add(record, lineno if i == last else lineno - 1)
        yield record
    return len(records)
