"""The ``braze_users`` stream: rows of Braze user exports as typed records.

The stream lists the files (:mod:`tap_braze_csv.sources`), reads each one's CSV members and
writes their rows. Its parts live apart: the schema in :mod:`tap_braze_csv.schema`, the
per-file, per-line state in :mod:`tap_braze_csv.state`, stdout writing and signal handling in
:mod:`tap_braze_csv.output`.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

from singer_sdk import Stream
from singer_sdk.mapper import SameRecordTransform

from tap_braze_csv.cloud import braze_segment_id
from tap_braze_csv.columns import WEBHOOK_FIELDS, Column, map_header
from tap_braze_csv.convert import (
    compile_row_converter,
    find_bad_cell,
    null_unparsable,
    unguard_row,
)
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.export_sync import sync_rest_exports
from tap_braze_csv.openers import TextReadError, iter_csv_members
from tap_braze_csv.output import FastWriter, NullWriter, SignalGuard, Writer
from tap_braze_csv.schema import type_from_schema
from tap_braze_csv.segments import segment_for
from tap_braze_csv.sources import FileRef, FileSource, FileVanishedError, make_source
from tap_braze_csv.state import Progress

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
        self.signal_guard = SignalGuard()

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
