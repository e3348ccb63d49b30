"""The ``braze_users`` stream: rows of Braze user exports as typed records.

The stream lists the files (:mod:`tap_braze_csv.sources`), reads each one's CSV members and
writes their rows. Its parts live apart: the schema in :mod:`tap_braze_csv.schema`, the
per-file, per-line state in :mod:`tap_braze_csv.state`, the record writers in
:mod:`tap_braze_csv.output` (stdout and signals: the tap's message writer, see ``tap.py``).
"""

from __future__ import annotations

import collections
import csv
import io
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from singer_sdk import Stream
from singer_sdk.mapper import SameRecordTransform

from tap_braze_csv.bad_rows import BadRowPolicy, StructureBroken
from tap_braze_csv.cloud import braze_segment_id
from tap_braze_csv.columns import WEBHOOK_FIELDS, Column, map_header
from tap_braze_csv.common.orjson_writer import OrjsonWriter
from tap_braze_csv.convert import (
    compile_row_converter,
    null_unparsable,
    unguard_row,
)
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.export_sync import sync_rest_exports
from tap_braze_csv.openers import TextReadError, iter_csv_members
from tap_braze_csv.output import FastWriter, NullWriter, Writer
from tap_braze_csv.routing import make_source
from tap_braze_csv.schema import type_from_schema
from tap_braze_csv.sdk_compat import stream_tap, write_state_message
from tap_braze_csv.segments import segment_for
from tap_braze_csv.sources import FileRef, FileSource, FileVanishedError
from tap_braze_csv.state import Progress

#: A broken quote makes one "field" run on; cap it (memory stays bounded) but above any real cell.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
#: Unparsable values logged one by one before only counting.
MAX_UNPARSED_LOGS = 10


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

    # -- SDK idiom ----------------------------------------------------------------------

    def get_records(self, context: Mapping[str, Any] | None) -> Iterable[dict[str, Any]]:
        """Not used: records are produced by :meth:`_sync_records` (see there)."""
        return iter(())

    def emit_state(self) -> None:
        """Write a STATE message now (the stream state holds only flushed progress)."""
        self.state_manager.is_flushed = False
        if self._writes_messages:
            write_state_message(self)

    def _fast_writer_allowed(self) -> bool:
        if not self.config.get("fast_writer", True):
            return False
        if self.config.get("stream_maps") or self.config.get("flattening_enabled"):
            return False
        if not isinstance(stream_tap(self).message_writer, OrjsonWriter):
            return False  # a message writer given to the tap: the SDK path writes through it
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
        go through :class:`FastWriter`; otherwise through the SDK's own
        ``_write_record_message`` so stream maps, flattening and selection behave as usual.
        """
        self._writes_messages = write_messages
        counter = self.get_record_counter()
        timer = self.get_sync_timer()
        state = self.stream_state
        progress = Progress(state)
        fast = write_messages and self._fast_writer_allowed()
        writer_class = FastWriter if fast else Writer if write_messages else NullWriter
        writer = writer_class(self, counter)
        self.logger.info("Writer: %s", "fast (orjson, buffered)" if fast else "SDK")
        started = time.monotonic()
        yield from self._sync_all_files(progress, writer, counter, timer)
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
        self, progress: Progress, writer: Writer, counter: Any, timer: Any
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

    def _flush_on_error(self, writer: Writer) -> None:
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
        progress: Progress,
        writer: Writer,
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
        writer: Writer,
        resume_line: int,
    ) -> Generator[dict, Any, int]:
        """Read one CSV member: its header, then its rows after ``resume_line``; return the count."""
        label = f"{ref.uri}!{member}" if member else ref.uri
        csv.field_size_limit(FIELD_SIZE_LIMIT)
        reader = csv.reader(text, delimiter=self.config.get("delimiter") or ",", strict=True)
        plan = self._row_plan(ref, member, label, _read_header(reader, label))
        policy = BadRowPolicy(self.config.get("on_bad_row") or "keep", label, writer, self.logger)
        emitted = yield from self._emit_rows(reader, text, plan, policy, writer, resume_line)
        writer.flush()
        self.rows_read += emitted
        if policy.skipped:
            self.bad_rows += policy.skipped
            self.logger.warning(
                "%s: skipped %d bad row(s) (on_bad_row: skip); %d good row(s) emitted",
                label,
                policy.skipped,
                emitted,
            )
        self.logger.info("Finished %s: %d row(s)", label, emitted)
        return emitted

    def _row_plan(self, ref: FileRef, member: str, label: str, header: list[str]) -> _RowPlan:
        """Decide from the header which columns are emitted, typed how, with which constants."""
        columns = map_header(header, file=label, column_types=self.config.get("column_types") or {})
        kept, dropped = self._columns_to_emit(columns)
        if dropped:
            self.logger.warning(
                "%s: column(s) not in the catalog schema are not emitted: %s "
                "(run discovery again to pick them up)",
                label,
                ", ".join(dropped),
            )
        constants = self._constant_fields(ref, member, label)
        return _RowPlan(
            label=label,
            width=len(columns),
            kept=kept,
            convert=compile_row_converter(kept, constants, fast=True),
            convert_tolerant=compile_row_converter(kept, constants),
            unparsed_field=self._selected("_sdc_unparsed"),
        )

    def _selected(self, name: str) -> bool:
        """Whether metadata field ``name`` is in the schema and selected."""
        props = self.effective_schema.get("properties", {})
        return name in props and self.mask.get(("properties", name), True)

    def _constant_fields(self, ref: FileRef, member: str, label: str) -> dict[str, Any]:
        """Fields with one value for the whole member (segment, source file)."""
        constants: dict[str, Any] = {}
        if self._selected("segment_name"):
            regex = self.config.get("segment_name_regex")
            constants["segment_name"] = segment_for(ref.uri, member, regex)
        if self._selected("_braze_segment_id"):
            constants["_braze_segment_id"] = braze_segment_id(ref.uri)
        constants["_sdc_source_file"] = label
        return constants

    def _emit_rows(
        self,
        reader: Any,
        text: Any,
        plan: _RowPlan,
        policy: BadRowPolicy,
        writer: Writer,
        resume_line: int,
    ) -> Generator[dict, Any, int]:
        """Convert and emit each row after ``resume_line``; bad rows go to ``policy``.

        The tap's hot loop: kept flat (one converter call per good row, no per-row helpers).
        """
        width = plan.width
        convert = plan.convert
        add = writer.add
        emitted = 0
        prev = reader.line_num
        try:
            for row in reader:
                line = reader.line_num
                start = prev + 1
                prev = line
                if len(row) != width:
                    if line > resume_line:
                        policy.wrong_width(row, start, width)
                    continue
                if line <= resume_line:
                    continue
                row = unguard_row(row)
                try:
                    record = convert(row, start)
                except (ValueError, TypeError, OverflowError):
                    slow = self._convert_slowly(plan, policy, row, start)
                    if slow is None:
                        continue
                    record = slow
                add(record, line)
                emitted += 1
                yield record
        except csv.Error as exc:
            raise policy.structure_broken(exc, text, prev + 1, reader.line_num) from None
        except TextReadError as exc:
            # Text is decoded in blocks ahead of the CSV parser: the bad bytes are on this
            # line or a later one.
            writer.flush()
            msg = f"{exc.where}: at or after line {prev + 1}: {exc.problem}"
            raise BrazeCsvError(msg) from None
        return emitted

    def _convert_slowly(
        self, plan: _RowPlan, policy: BadRowPolicy, row: list[str], line: int
    ) -> dict[str, Any] | None:
        """Convert a row the fast converter refused: the tolerant one, else `on_bad_row` decides.

        Returns the record to emit, or None when the row is skipped.
        """
        try:
            return plan.convert_tolerant(row, line)
        except (ValueError, TypeError, OverflowError):
            pass
        if not policy.keep_raw:
            policy.unconvertible(plan.kept, row, line)
            return None
        cells, raw = null_unparsable(plan.kept, row)
        record = plan.convert_tolerant(cells, line)
        if plan.unparsed_field:
            record["_sdc_unparsed"] = raw
        self._count_unparsed(plan.label, line, raw, kept_raw=plan.unparsed_field)
        return record

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


class _RowPlan(NamedTuple):
    """How one member's rows become records (decided from its header)."""

    label: str
    width: int
    kept: list[Column]
    convert: Callable[[list[str], int], dict[str, Any]]
    convert_tolerant: Callable[[list[str], int], dict[str, Any]]
    unparsed_field: bool


def _read_header(reader: Any, label: str) -> list[str]:
    """Return the member's first non-blank row; a clear error when there is none or it is bad."""
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
    return header
