"""Output of the ``braze_users`` stream: the three record writers.

All stdout goes through the tap's message writer, the shared
:class:`~tap_braze_csv.common.orjson_writer.OrjsonWriter` (``TapBrazeCsv.message_writer_class``).
``Writer`` sends each record through the SDK's record path (stream maps, flattening);
``FastWriter`` serialises records itself and hands the message writer 2,000 lines at a time
(the default); ``NullWriter`` only counts (records are yielded to a caller that writes them).
Every writer moves the stream's resume point (``cursor["line"]``) only once a record is out,
inside the message writer's ``hold()``: a signal's exit (deferred by the tap's
``_handle_termination`` while a write is held) then never falls between the write and the
move, so no STATE claims a row not yet sent and none re-sends a row already out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
from singer_sdk.exceptions import MaxRecordsLimitException

from tap_braze_csv.common.orjson_writer import OrjsonWriter
from tap_braze_csv.sdk_compat import abort_sync, stream_tap, stream_version, write_record_message

#: Records buffered before one write+flush of stdout in the fast writer.
FLUSH_ROWS = 2000


class Writer:
    """Writes records and moves the resume point only once they are out (base: SDK path)."""

    def __init__(self, stream: Any, counter: Any) -> None:
        # ``stream`` is the BrazeUsersStream (typed Any: streams.py imports this module)
        self.stream = stream
        self.counter = counter
        self.cursor: dict[str, Any] = {}
        self.pending_line = 0
        self.emitted = 0
        self.limit = stream.ABORT_AT_RECORD_COUNT
        self.since_state = 0
        out = stream_tap(stream).message_writer
        #: A block a signal's exit waits for (any other message writer: no hold).
        self.hold: Callable[[], contextlib.AbstractContextManager[None]] = (
            out.hold if isinstance(out, OrjsonWriter) else contextlib.nullcontext
        )

    def check_limit(self) -> None:
        """Stop the sync (the SDK's dry-run abort) once the record limit is reached."""
        if self.limit is not None and self.emitted + self.buffered() >= self.limit:
            self.flush()
            self.stream.state_manager.is_flushed = False  # _abort_sync writes the state
            abort_sync(
                self.stream,
                MaxRecordsLimitException(
                    f"Stream prematurely aborted: dry-run record limit ({self.limit}) reached."
                ),
            )

    def buffered(self) -> int:
        """Count records accepted but not written yet."""
        return 0

    def add(self, record: dict[str, Any], end_line: int) -> None:
        """Write one record through the SDK, then move the resume point past ``end_line``."""
        self.check_limit()
        with self.hold():
            write_record_message(self.stream, record)
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


class NullWriter(Writer):
    """``write_messages=False``: records are only yielded; the caller owns output and STATE."""

    def add(self, record: dict[str, Any], end_line: int) -> None:
        """Count one record (not written), then move the resume point past ``end_line``."""
        self.check_limit()
        self.emitted += 1
        self.cursor["line"] = end_line
        self.counter.increment()

    def check_limit(self) -> None:
        """Stop the sync once the record limit is reached."""
        if self.limit is not None and self.emitted >= self.limit:
            abort_sync(
                self.stream,
                MaxRecordsLimitException(
                    f"Stream prematurely aborted: dry-run record limit ({self.limit}) reached."
                ),
            )


class FastWriter(Writer):
    """Serialises records with orjson into one buffer, written every FLUSH_ROWS records.

    The buffer goes to the tap's message writer (``OrjsonWriter.write_lines``). Why: the SDK's per-record path (conform 38 %, simplejson 24 %, pruning 10 %, a write and a
    flush per message, measured with the SDK's own writer) is ~8x the cost of reading the CSV.
    Records here are already typed to the catalog schema by the compiled converter and hold
    only selected fields, so conforming and pruning have nothing to do; the envelope around
    each record comes from ``OrjsonWriter.record_line_parts``, so each line is the one the
    message writer would write for that record.
    """

    def __init__(self, stream: Any, counter: Any) -> None:
        super().__init__(stream, counter)
        out = stream_tap(stream).message_writer
        if not isinstance(out, OrjsonWriter):  # the stream checks before choosing this writer
            raise TypeError(f"the fast writer needs an OrjsonWriter, not {type(out).__name__}")
        self.out = out
        self.alias = stream.stream_maps[0].stream_alias
        self.version = stream_version(stream)  # set by sync() when ACTIVATE_VERSION is enabled
        self.parts: list[bytes] = []
        self._stamp()

    def buffered(self) -> int:
        """Count records accepted but not written yet."""
        return len(self.parts)

    def _stamp(self) -> None:
        """Encode the RECORD envelope (stream, version, time_extracted: now) for what follows."""
        now = dt.datetime.now(dt.timezone.utc)
        self.prefix, self.suffix = self.out.record_line_parts(self.alias, self.version, now)

    def add(self, record: dict[str, Any], end_line: int) -> None:
        """Buffer one record; write the buffer every FLUSH_ROWS records."""
        if self.limit is not None:
            self.check_limit()
        self.parts.append(self.prefix + orjson.dumps(record) + self.suffix)
        self.pending_line = end_line
        if len(self.parts) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records, then move the resume point past the last one."""
        if not self.parts:
            return
        data = b"".join(self.parts)
        count = len(self.parts)
        self.parts.clear()
        with self.out.hold():
            self.out.write_lines(data)
            self.emitted += count
            self.cursor["line"] = self.pending_line
        self.counter.increment(count)
        self._stamp()
        self._maybe_state(count)
