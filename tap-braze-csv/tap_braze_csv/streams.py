"""The ``braze_users`` stream: rows of Braze user exports as typed records.

State (under ``bookmarks.<stream>``)::

    {"files": [{"path": uri, "size": n, "mtime_ns": t, "etag": e, "members": ["a.csv", ...],
                "complete": true, "rows": n}, ...],
     "current": {"path": uri, "size": n, "mtime_ns": t, "member": "a.csv", "line": 1234}}

The state holds integers, strings and booleans only, never a float: a stock SDK target
(singer-sdk 0.54.9, e.g. meltanolabs-target-postgres) reads floats in STATE as ``Decimal`` and
then fails to write that state back with plain ``json.dumps`` (``TypeError: Object of type
Decimal is not JSON serializable``), so the state would never be saved. Modification times are
therefore integer nanoseconds (``mtime_ns``); a state written by earlier versions, whose entries
hold a float ``mtime`` in seconds, is converted when it is read (same files, still skipped).

``etag`` (a string) is present for objects (``s3://``, ``gs://``, ``az://``) only.
``files`` lists what was fully read: a file whose path, size, mtime and etag match a ``complete``
entry is skipped without being opened, a zip member listed in ``members`` is skipped. After a
successful listing, entries (and ``current``) for files no longer matched are dropped, so the
state stays as large as the set of files ``paths`` matches. A file
with another size, mtime or etag is a new file and is read again from its start. ``current`` is
the member being read and the last physical line whose record has been *written to stdout*;
it is only advanced after the output buffer is flushed, so any STATE message (periodic, at the
end, or the one the SDK writes on SIGTERM) never claims a row the target has not been sent.
A run that stops mid-file resumes after that line; rows are never half-skipped.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import datetime as dt
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from singer_sdk import Stream
from singer_sdk.exceptions import MaxRecordsLimitException
from singer_sdk.mapper import SameRecordTransform

from tap_braze_csv.cloud import braze_segment_id
from tap_braze_csv.columns import (
    WEBHOOK_FIELDS,
    Column,
    inferred_type,
    known_fields,
    map_header,
)
from tap_braze_csv.convert import (
    compile_row_converter,
    find_bad_cell,
    null_unparsable,
    unguard_row,
)
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.export_sync import sync_rest_exports
from tap_braze_csv.openers import TextReadError, iter_csv_members
from tap_braze_csv.segments import segment_for
from tap_braze_csv.sources import FileRef, FileSource, FileVanishedError, make_source

#: Records buffered before one write+flush of stdout in the fast writer.
FLUSH_ROWS = 2000
#: Bad rows logged one by one before only counting.
MAX_BAD_ROW_LOGS = 10
#: A broken quote makes one "field" run on; cap it (memory stays bounded) but above any real cell.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
#: Unparsable values logged one by one before only counting.
MAX_UNPARSED_LOGS = 10


class StructureBroken(Exception):
    """A member's CSV structure broke (quote never closed, cell over the field limit).

    Nothing after the break can be read as rows: the parser would resume inside a cell.
    """

    def __init__(self, label: str, start: int, end: int, lines_lost: int, reason: str) -> None:
        super().__init__(
            f"{label}: line {start}: {reason}; the file's structure breaks here, "
            f"{lines_lost} line(s) from line {start} on were not read"
        )
        self.label = label
        self.lines_lost = lines_lost


_JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "integer": {"type": ["integer", "null"]},
    "number": {"type": ["number", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "date-time": {"type": ["string", "null"], "format": "date-time"},
}


def json_schema_for(col_type: str) -> dict[str, Any]:
    """JSON schema of a column type (always nullable: an empty cell is null)."""
    return dict(_JSON_TYPES[col_type])


def type_from_schema(prop: Mapping[str, Any] | None, fallback: str) -> str:
    """Return the conversion a (catalog) property asks for, so records match the catalog."""
    if not prop:
        return fallback
    types = prop.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    for candidate in ("integer", "number", "boolean"):
        if candidate in types:
            return candidate
    if "string" in types:
        fmt = prop.get("format")
        return fmt if fmt in ("date", "date-time") else "string"
    return fallback


def build_schema(
    header_columns: Sequence[Column] | None,
    column_types: Mapping[str, str],
) -> dict[str, Any]:
    """Stream schema: known Braze fields, the first file's other columns, metadata fields.

    ``header_columns`` is None when no file could be read at discovery; the schema then
    allows additional properties so custom attribute columns still flow.
    """
    props: dict[str, Any] = {}
    for name in known_fields():
        props[name] = json_schema_for(column_types.get(name) or inferred_type(name))
    for col in header_columns or ():
        if col.name not in props:
            props[col.name] = json_schema_for(col.type)
    props["segment_name"] = json_schema_for("string")
    props["_braze_segment_id"] = json_schema_for("string")
    props["_sdc_unparsed"] = {
        "type": ["object", "null"],
        "additionalProperties": {"type": "string"},
        "description": "Raw text of cells that did not convert to their field's type "
        "(the fields are null), by field name.",
    }
    props["_sdc_source_file"] = {"type": "string"}
    props["_sdc_source_lineno"] = {"type": "integer"}
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["additionalProperties"] = header_columns is None
    return schema


def write_stdout_bytes(data: bytes) -> None:
    """Write ``data`` to stdout after whatever the SDK wrote before (SCHEMA, STATE).

    A real file or pipe gets ``os.write`` in a loop: CPython's ``BufferedWriter.write`` can
    silently drop the rest of a large write when a signal interrupts it (seen with SIGTERM
    during a 2.7 MB write to a pipe), while ``os.write`` reports partial writes. In-memory
    stdouts (test harnesses) get an ordinary write.
    """
    out = sys.stdout
    out.flush()
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd >= 0:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode("utf-8"))
        out.flush()


class _SignalGuard:
    """Defers SIGTERM/SIGINT while a message is being written to stdout.

    The SDK's handler writes a STATE line and exits from wherever the signal lands; landing
    inside a large buffered write would splice that line into a half-written RECORD. Here a
    signal that arrives during a write is delivered right after it; one that arrives while
    reading is delivered at once (nothing is half-written then). Either way the SDK's handler
    then runs, and the stream's error path flushes buffered records and writes STATE.
    """

    def __init__(self) -> None:
        self.writing = False
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.writing:
            self.pending = signum
            return
        self._deliver(signum, frame)

    def _deliver(self, signum: int, frame: Any) -> None:
        handler = self.previous.get(signum, signal.SIG_DFL)
        self.restore()
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Hold signals for the duration of one write (re-entrant)."""
        if self.writing:
            yield
            return
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                self._deliver(signum, None)


def mtime_ns(mtime: Any) -> int:
    """Epoch seconds (float, ``Decimal``, int or numeric string) -> integer nanoseconds.

    Deterministic: the same listed mtime always gives the same integer, and an old state's
    float ``mtime`` (written by ``repr``, read back as float or ``Decimal``) gives the integer
    its file gets today.
    """
    return round(float(mtime) * 1_000_000_000)


def _file_key(ref: FileRef) -> tuple[str, int, int, str]:
    return (ref.uri, int(ref.size), mtime_ns(ref.mtime), ref.etag)


def _entry_key(item: Mapping[str, Any]) -> tuple[Any, int, int, str]:
    return (
        item.get("path"),
        int(item.get("size", -1)),
        int(item.get("mtime_ns", -1)),
        str(item.get("etag", "")),
    )


def _file_entry(ref: FileRef) -> dict[str, Any]:
    """Return a file's identity in the state: path, size, mtime and (objects) etag."""
    item: dict[str, Any] = {"path": ref.uri, "size": int(ref.size), "mtime_ns": mtime_ns(ref.mtime)}
    if ref.etag:
        item["etag"] = ref.etag
    return item


def _upgrade_entry(item: Any) -> None:
    """Replace an old state entry's float ``mtime`` (seconds) by ``mtime_ns`` (see module doc)."""
    if isinstance(item, dict) and "mtime" in item:
        old = item.pop("mtime")
        if "mtime_ns" not in item:
            try:
                item["mtime_ns"] = mtime_ns(old)
            except (TypeError, ValueError):
                item["mtime_ns"] = -1  # unreadable: the file is read again


def upgrade_stream_state(state: Any) -> None:
    """Convert a stream state written by earlier versions in place (float ``mtime`` entries)."""
    if not isinstance(state, dict):
        return
    files = state.get("files")
    for item in files if isinstance(files, list) else []:
        _upgrade_entry(item)
    _upgrade_entry(state.get("current"))


class _Progress:
    """Per-run bookkeeping of the stream state (see module doc)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        upgrade_stream_state(state)
        files = state.get("files")
        self.files: list[dict[str, Any]] = files if isinstance(files, list) else []
        state["files"] = self.files

    def prune(self, refs: Sequence[FileRef]) -> list[str]:
        """Forget files that no longer match `paths`; return their paths.

        Call only with a complete listing (`find` succeeded): the state then holds at most one
        entry per file currently matched, instead of growing with every file ever read.
        """
        listed = {ref.uri for ref in refs}
        gone = [str(f.get("path")) for f in self.files if f.get("path") not in listed]
        if gone:
            self.files[:] = [f for f in self.files if f.get("path") in listed]
        cur = self.state.get("current")
        if isinstance(cur, dict) and cur.get("path") not in listed:
            self.state.pop("current", None)
        return gone

    def entry(self, ref: FileRef, *, create: bool = False) -> dict[str, Any] | None:
        key = _file_key(ref)
        for item in self.files:
            if _entry_key(item) == key:
                return item
        if not create:
            return None
        # A changed file (same path, other size/mtime/etag) replaces its old entry.
        self.files[:] = [f for f in self.files if f.get("path") != ref.uri]
        item = _file_entry(ref)
        item.update({"members": [], "complete": False, "rows": 0})
        self.files.append(item)
        return item

    def resume_line(self, ref: FileRef, member: str) -> int:
        cur = self.state.get("current")
        if not isinstance(cur, dict):
            cur = {}
        if cur and _entry_key(cur) == _file_key(ref) and cur.get("member", "") == member:
            return int(cur.get("line", 0))
        entry = self.entry(ref)
        broken = entry.get("broken") if entry else None
        if isinstance(broken, dict) and broken.get("member", "") == member:
            return int(broken.get("line", 0))
        return 0

    def start_member(self, ref: FileRef, member: str, line: int) -> dict[str, Any]:
        cur = _file_entry(ref)
        cur.update({"member": member, "line": line})
        self.state["current"] = cur
        return cur

    def finish_member(self, ref: FileRef, member: str, rows: int) -> None:
        item = self.entry(ref, create=True)
        assert item is not None
        if member not in item["members"]:
            item["members"].append(member)
        item["rows"] = int(item.get("rows", 0)) + rows
        self.state.pop("current", None)

    def hold_broken(self, ref: FileRef, member: str, line: int) -> None:
        """Keep where a file's structure broke (its last good line), while other files are read."""
        item = self.entry(ref, create=True)
        assert item is not None
        item["broken"] = {"member": member, "line": int(line)}

    def finish_file(self, ref: FileRef) -> None:
        item = self.entry(ref, create=True)
        assert item is not None
        item["complete"] = True
        item.pop("broken", None)


class _Writer:
    """Writes records and moves the resume point only once they are out (base: SDK path)."""

    def __init__(self, stream: BrazeUsersStream, counter: Any) -> None:
        self.stream = stream
        self.counter = counter
        self.cursor: dict[str, Any] = {}
        self.pending_line = 0
        self.emitted = 0
        self.limit = stream.ABORT_AT_RECORD_COUNT
        self.since_state = 0

    def check_limit(self) -> None:
        if self.limit is not None and self.emitted + self.buffered() >= self.limit:
            self.flush()
            self.stream.state_manager.is_flushed = False  # _abort_sync writes the state
            self.stream._abort_sync(
                MaxRecordsLimitException(
                    f"Stream prematurely aborted: dry-run record limit ({self.limit}) reached."
                )
            )

    def buffered(self) -> int:
        """Count records accepted but not written yet."""
        return 0

    def add(self, record: dict[str, Any], end_line: int) -> None:
        self.check_limit()
        with self.stream.signal_guard.write():
            self.stream._write_record_message(record)
            self.emitted += 1
            self.cursor["line"] = end_line
        self.counter.increment()
        self._maybe_state(1)

    def _maybe_state(self, count: int) -> None:
        self.since_state += count
        if self.since_state >= self.stream.STATE_MSG_FREQUENCY:
            self.since_state = 0
            self.stream.emit_state()

    def flush(self) -> None:
        """Nothing is buffered on the SDK path."""


class _NullWriter(_Writer):
    """``write_messages=False``: records are only yielded; the caller owns output and STATE."""

    def add(self, record: dict[str, Any], end_line: int) -> None:
        self.check_limit()
        self.emitted += 1
        self.cursor["line"] = end_line
        self.counter.increment()

    def check_limit(self) -> None:
        if self.limit is not None and self.emitted >= self.limit:
            self.stream._abort_sync(
                MaxRecordsLimitException(
                    f"Stream prematurely aborted: dry-run record limit ({self.limit}) reached."
                )
            )


class _FastWriter(_Writer):
    """Serialises records with orjson into one buffer, written and flushed every FLUSH_ROWS.

    Why: the SDK's per-record path (conform 38 %, simplejson 24 %, pruning 10 %, a write and a
    flush per message) is ~8x the cost of reading the CSV. Records here are already typed to
    the catalog schema by the compiled converter and hold only selected fields, so conforming
    and pruning have nothing to do; orjson output is the same JSON the SDK would write.
    """

    def __init__(self, stream: BrazeUsersStream, counter: Any) -> None:
        super().__init__(stream, counter)
        alias = stream.stream_maps[0].stream_alias
        self.prefix = b'{"type":"RECORD","stream":' + orjson.dumps(alias) + b',"record":'
        version = stream._stream_version  # set by sync() when ACTIVATE_VERSION is enabled
        self.version = b"" if version is None else b',"version":' + orjson.dumps(version)
        self.parts: list[bytes] = []
        self._stamp()

    def buffered(self) -> int:
        """Count records accepted but not written yet."""
        return len(self.parts)

    def _stamp(self) -> None:
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        self.suffix = self.version + b',"time_extracted":' + orjson.dumps(now) + b"}\n"

    def add(self, record: dict[str, Any], end_line: int) -> None:
        if self.limit is not None:
            self.check_limit()
        self.parts.append(self.prefix + orjson.dumps(record) + self.suffix)
        self.pending_line = end_line
        if len(self.parts) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        data = b"".join(self.parts)
        count = len(self.parts)
        self.parts.clear()
        with self.stream.signal_guard.write():
            write_stdout_bytes(data)
            self.emitted += count
            self.cursor["line"] = self.pending_line
        self.counter.increment(count)
        self._stamp()
        self._maybe_state(count)


class BrazeUsersStream(Stream):
    """Rows of Braze "CSV Export User Data" files, one record per user row."""

    primary_keys = ("_sdc_source_file", "_sdc_source_lineno")
    replication_key = None
    STATE_MSG_FREQUENCY = 10_000

    def __init__(self, tap: Any, schema: dict[str, Any], name: str) -> None:
        super().__init__(tap=tap, schema=schema, name=name)
        self.bad_rows = 0
        self.unparsed: collections.Counter[str] = collections.Counter()
        self.broken: list[StructureBroken] = []
        self.lines_lost = 0
        self.rows_read = 0
        self.files_read = 0
        self.files_skipped = 0
        self.exports_read = 0
        self.exports_skipped = 0
        self.files_vanished = 0
        self._writes_messages = True
        self.signal_guard = _SignalGuard()

    # -- SDK idiom ----------------------------------------------------------------------

    def get_records(self, context: Mapping[str, Any] | None) -> Iterable[dict[str, Any]]:
        """Not used: records are produced by :meth:`_sync_records` (see there)."""
        return iter(())

    def emit_state(self) -> None:
        """Write a STATE message now (the stream state holds only flushed progress)."""
        self.state_manager.is_flushed = False
        if self._writes_messages:
            with self.signal_guard.write():
                self._write_state_message()

    def _fast_writer_allowed(self) -> bool:
        if not self.config.get("fast_writer", True):
            return False
        if self.config.get("stream_maps") or self.config.get("flattening_enabled"):
            return False
        maps = self.stream_maps
        return len(maps) == 1 and type(maps[0]) is SameRecordTransform

    def _sync_records(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        write_messages: bool = True,
    ) -> Generator[dict, Any, Any]:
        """Read every file not read yet; write RECORD and STATE messages.

        Replaces the SDK loop because state here is per file and per line (the SDK's
        bookmarks are replication-key values) and because the SDK's per-record path is the
        tap's bottleneck: with the default stream map (no stream maps, no flattening) records
        go through :class:`_FastWriter`; otherwise through the SDK's own
        ``_write_record_message`` so stream maps, flattening and selection behave as usual.
        """
        self._writes_messages = write_messages
        counter = self.get_record_counter()
        timer = self.get_sync_timer()
        state = self.stream_state
        progress = _Progress(state)
        fast = write_messages and self._fast_writer_allowed()
        writer_class = _FastWriter if fast else _Writer if write_messages else _NullWriter
        writer = writer_class(self, counter)
        self.logger.info("Writer: %s", "fast (orjson, buffered)" if fast else "SDK")
        started = time.monotonic()
        if write_messages:
            self.signal_guard.install()
        try:
            yield from self._sync_all_files(progress, writer, counter, timer)
        finally:
            self.signal_guard.restore()
        elapsed = time.monotonic() - started
        unparsed = ", ".join(f"{k}={v}" for k, v in sorted(self.unparsed.items())) or "none"
        self.logger.info(
            "Summary: %d file(s) read, %d skipped (already read), %d vanished before reading, "
            "%d export(s) read, %d not due, %d row(s) emitted, %d bad row(s) skipped, "
            "%d value(s) kept unparsed (%s), %d file(s) with broken structure, "
            "%d line(s) lost, %.1fs",
            self.files_read,
            self.files_skipped,
            self.files_vanished,
            self.exports_read,
            self.exports_skipped,
            self.rows_read,
            self.bad_rows,
            sum(self.unparsed.values()),
            unparsed,
            len(self.broken),
            self.lines_lost,
            elapsed,
        )
        self.emit_state()
        if self.broken:
            # Every other file was read and the state saved; the damaged ones stay unfinished
            # (the next run resumes at their break and stops there again) and the run fails.
            first = self.broken[0]
            more = f" (and {len(self.broken) - 1} more file(s))" if len(self.broken) > 1 else ""
            raise BrazeCsvError(f"{first}{more}; {self.lines_lost} line(s) lost in total")

    def _sync_all_files(
        self, progress: _Progress, writer: _Writer, counter: Any, timer: Any
    ) -> Generator[dict, Any, None]:
        with counter, timer, make_source(self.config) as source:
            refs = source.find(list(self.config.get("paths") or []))
            self.logger.info("%d file(s) match the configured paths", len(refs))
            gone = progress.prune(refs)
            if gone:
                self.logger.info(
                    "Forgot %d file(s) in the state that no longer match paths (e.g. %s)",
                    len(gone),
                    gone[0],
                )
            try:
                for ref in refs:
                    entry = progress.entry(ref)
                    if entry and entry.get("complete"):
                        self.files_skipped += 1
                        self.logger.info("Skipping %s: already read (state)", ref.uri)
                        continue
                    outcome = yield from self._sync_file(source, ref, entry, progress, writer)
                    if outcome != "complete":
                        continue
                    progress.finish_file(ref)
                    self.files_read += 1
                    self.emit_state()
                yield from sync_rest_exports(self, "users", writer)  # `rest_export`, if set
                writer.flush()
            except BaseException:
                # A run that cannot finish still sends what it read and records where it
                # stopped (records first, then STATE), so the next run resumes there.
                self._flush_on_error(writer)
                raise

    def _flush_on_error(self, writer: _Writer) -> None:
        try:
            writer.flush()
            self.emit_state()
        except Exception as exc:  # e.g. a closed stdout: keep the original error
            self.logger.warning("Could not write the final records/state: %s", exc)

    def _sync_file(
        self,
        source: FileSource,
        ref: FileRef,
        entry: Mapping[str, Any] | None,
        progress: _Progress,
        writer: _Writer,
    ) -> Generator[dict, Any, str]:
        """Read one file; return "complete", "vanished" (before opening) or "broken"."""
        done = set(entry.get("members", [])) if entry else set()
        self.logger.info("Reading %s (%d bytes)", ref.uri, ref.size)
        try:
            raw = source.open(ref)
        except FileVanishedError:
            # Braze deletes its S3 exports some hours after writing them; a file listed a
            # moment ago may be gone. Nothing of it was read: not marked, not an error.
            self.files_vanished += 1
            self.logger.warning(
                "Skipping %s: it was removed after being listed (nothing read from it)", ref.uri
            )
            return "vanished"
        try:
            for member, text in iter_csv_members(ref, raw, self.config):
                if member in done:
                    self.logger.info("Skipping %s!%s: already read (state)", ref.uri, member)
                    continue
                resume = progress.resume_line(ref, member)
                if resume:
                    self.logger.info(
                        "Resuming %s%s after line %d",
                        ref.uri,
                        f"!{member}" if member else "",
                        resume,
                    )
                writer.cursor = progress.start_member(ref, member, resume)
                try:
                    rows = yield from self._sync_member(ref, member, text, writer, resume)
                except StructureBroken as broken:
                    # Rows before the break are out and `current` points after the last one;
                    # the file is not marked read and its later members wait for a fix.
                    writer.flush()
                    progress.hold_broken(ref, member, int(writer.cursor.get("line", resume)))
                    self.emit_state()
                    self.broken.append(broken)
                    self.lines_lost += broken.lines_lost
                    self.logger.error("%s", broken)
                    return "broken"
                writer.flush()
                progress.finish_member(ref, member, rows)
                self.emit_state()
        finally:
            raw.close()
        return "complete"

    def _columns_to_emit(self, columns: Sequence[Column]) -> tuple[list[Column], list[str]]:
        """Columns kept (selected, in the schema or allowed as extra) typed as the schema says."""
        schema = self.effective_schema
        props: Mapping[str, Any] = schema.get("properties", {})
        extra_ok = schema.get("additionalProperties", True) is not False
        mask = self.mask
        kept: list[Column] = []
        dropped: list[str] = []
        for col in columns:
            if col.name in props:
                if not mask.get(("properties", col.name), True):
                    continue
                col_type = type_from_schema(props[col.name], col.type)
                kept.append(Column(col.index, col.header, col.name, col_type))
            elif extra_ok:
                kept.append(col)
            else:
                dropped.append(col.header)
        # Webhook body fields first (braze_id, external_id, email, ...), then file order.
        order = {name: i for i, name in enumerate(WEBHOOK_FIELDS)}
        kept.sort(key=lambda c: (order.get(c.name, len(order)), c.index))
        return kept, dropped

    def _sync_member(
        self,
        ref: FileRef,
        member: str,
        text: io.TextIOBase | Any,
        writer: _Writer,
        resume_line: int,
    ) -> Generator[dict, Any, int]:
        label = f"{ref.uri}!{member}" if member else ref.uri
        config = self.config
        mode = config.get("on_bad_row") or "keep"
        skip_bad = mode != "fail"
        keep_raw = mode == "keep"
        delimiter = config.get("delimiter") or ","
        csv.field_size_limit(FIELD_SIZE_LIMIT)
        reader = csv.reader(text, delimiter=delimiter, strict=True)
        try:
            header: list[str] = []
            while not header:
                header = next(reader)
        except StopIteration:
            msg = f"{label}: empty file, no header row (not a Braze user export)"
            raise BrazeCsvError(msg) from None
        except csv.Error as exc:
            msg = f"{label}: line 1: unreadable header: {exc}"
            raise BrazeCsvError(msg) from exc
        except TextReadError as exc:
            msg = f"{exc.where}: at or after line {reader.line_num + 1}: {exc.problem}"
            raise BrazeCsvError(msg) from None
        columns = map_header(header, file=label, column_types=config.get("column_types") or {})
        kept, dropped = self._columns_to_emit(columns)
        if dropped:
            self.logger.warning(
                "%s: column(s) not in the catalog schema are not emitted: %s "
                "(run discovery again to pick them up)",
                label,
                ", ".join(dropped),
            )
        constants: dict[str, Any] = {}
        props = self.effective_schema.get("properties", {})
        mask = self.mask
        if "segment_name" in props and mask.get(("properties", "segment_name"), True):
            constants["segment_name"] = segment_for(
                ref.uri, member, config.get("segment_name_regex")
            )
        if "_braze_segment_id" in props and mask.get(("properties", "_braze_segment_id"), True):
            constants["_braze_segment_id"] = braze_segment_id(ref.uri)
        constants["_sdc_source_file"] = label
        unparsed_field = "_sdc_unparsed" in props and mask.get(
            ("properties", "_sdc_unparsed"), True
        )
        convert = compile_row_converter(kept, constants, fast=True)
        convert_tolerant = compile_row_converter(kept, constants)
        width = len(columns)
        bad_here = 0
        emitted = 0
        prev = reader.line_num
        add = writer.add

        def bad_row(line: int, reason: str) -> None:
            nonlocal bad_here
            msg = f"{label}: line {line}: {reason}"
            if not skip_bad:
                writer.flush()
                raise BrazeCsvError(msg + " (on_bad_row: fail)")
            bad_here += 1
            if bad_here <= MAX_BAD_ROW_LOGS:
                self.logger.warning("Skipping bad row: %s", msg)

        while True:
            try:
                for row in reader:
                    line = reader.line_num
                    start = prev + 1
                    prev = line
                    if len(row) != width:
                        if not row or row == [""]:
                            continue  # blank line
                        if line <= resume_line:
                            continue
                        bad_row(start, f"{len(row)} fields, the header has {width}")
                        continue
                    if line <= resume_line:
                        continue
                    row = unguard_row(row)
                    try:
                        record = convert(row, start)
                    except (ValueError, TypeError, OverflowError):
                        try:
                            record = convert_tolerant(row, start)
                        except (ValueError, TypeError, OverflowError):
                            if keep_raw:
                                cells, raw = null_unparsable(kept, row)
                                record = convert_tolerant(cells, start)
                                if unparsed_field:
                                    record["_sdc_unparsed"] = raw
                                self._count_unparsed(label, start, raw, kept_raw=unparsed_field)
                                add(record, line)
                                emitted += 1
                                yield record
                                continue
                            found = find_bad_cell(kept, row)
                            if found is None:  # pragma: no cover - defensive
                                bad_row(start, "a cell could not be converted")
                            else:
                                col, value, why = found
                                shown = value if len(value) <= 40 else value[:37] + "..."
                                bad_row(
                                    start,
                                    f"column {col.header!r} ({col.name}, {col.type}): "
                                    f"{shown!r} is not a valid {col.type} ({why})",
                                )
                            continue
                    add(record, line)
                    emitted += 1
                    yield record
                break
            except csv.Error as exc:
                # Structural damage: the parser cannot tell where the next row starts (after a
                # cell over the field limit it would go on *inside* that cell and turn its
                # text into phantom rows). Stop this member here; never resume.
                line = reader.line_num
                start = prev + 1
                reason = str(exc)
                if "field limit" in reason:
                    reason = f"a quoted cell over {FIELD_SIZE_LIMIT} characters: {reason}"
                elif "end of data" in reason or line > start:
                    reason = (
                        f"unterminated quoted field (from line {start} to line {line}): {reason}"
                    )
                else:
                    reason = f"malformed CSV (broken quote?): {reason}"
                writer.flush()
                if not skip_bad:
                    msg = f"{label}: line {start}: {reason} (on_bad_row: fail)"
                    raise BrazeCsvError(msg) from None
                rest = _count_lines(text)
                raise StructureBroken(label, start, line, line - start + 1 + rest, reason) from None
            except TextReadError as exc:
                # Text is decoded in blocks ahead of the CSV parser: the bad bytes are on
                # this line or a later one.
                writer.flush()
                msg = f"{exc.where}: at or after line {prev + 1}: {exc.problem}"
                raise BrazeCsvError(msg) from None
        writer.flush()
        self.rows_read += emitted
        if bad_here:
            self.bad_rows += bad_here
            self.logger.warning(
                "%s: skipped %d bad row(s) (on_bad_row: skip); %d good row(s) emitted",
                label,
                bad_here,
                emitted,
            )
        self.logger.info("Finished %s: %d row(s)", label, emitted)
        return emitted

    def _count_unparsed(
        self, label: str, line: int, raw: Mapping[str, str], kept_raw: bool
    ) -> None:
        for name, value in raw.items():
            self.unparsed[name] += 1
            if sum(self.unparsed.values()) <= MAX_UNPARSED_LOGS:
                shown = value if len(value) <= 40 else value[:37] + "..."
                self.logger.warning(
                    "%s: line %d: %s: %r does not convert; emitted as null%s",
                    label,
                    line,
                    name,
                    shown,
                    ", raw text in _sdc_unparsed" if kept_raw else " (_sdc_unparsed deselected)",
                )


def _count_lines(text: Any) -> int:
    """Count the lines left in a text stream (after a structural break), reading to its end."""
    count = 0
    with contextlib.suppress(BrazeCsvError):
        for _ in text:
            count += 1
    return count


def peek_header_columns(config: Mapping[str, Any], logger: logging.Logger) -> list[Column] | None:
    """Columns of the first matching file's header, or None when no file can be read."""
    try:
        with make_source(config) as source:
            refs = source.find(list(config.get("paths") or []))
            if not refs:
                return None
            ref = refs[0]
            raw = source.open(ref)
            try:
                for member, text in iter_csv_members(ref, raw, config):
                    reader = csv.reader(text, delimiter=config.get("delimiter") or ",", strict=True)
                    header = next(reader, [])
                    label = f"{ref.uri}!{member}" if member else ref.uri
                    return map_header(
                        header, file=label, column_types=config.get("column_types") or {}
                    )
            finally:
                raw.close()
    except Exception as exc:  # discovery must not fail on an unreachable file
        # A warning, not info: a wrong password or path here would otherwise only show at sync.
        logger.warning(
            "Discovery: could not read the first file's header (%s); the schema allows custom "
            "columns as extra string fields",
            exc,
        )
    return None
