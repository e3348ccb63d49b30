"""Output of the ``braze_users`` stream: signal-safe stdout writes and the three record writers.

``Writer`` sends each record through the SDK's record path (stream maps, flattening);
``FastWriter`` buffers orjson lines (the default); ``NullWriter`` only counts (records are
yielded to a caller that writes them). Every writer moves the stream's resume point
(``cursor["line"]``) only once a record is out, so no STATE claims a row not yet sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
from singer_sdk.exceptions import MaxRecordsLimitException

from tap_braze_csv.sdk_compat import abort_sync, stream_version, write_record_message

#: Records buffered before one write+flush of stdout in the fast writer.
FLUSH_ROWS = 2000


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


class SignalGuard:
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
        """Route SIGTERM/SIGINT through this guard (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Give SIGTERM/SIGINT back to the handlers found by :meth:`install`."""
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
        with self.stream.signal_guard.write():
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
    """Serialises records with orjson into one buffer, written and flushed every FLUSH_ROWS.

    Why: the SDK's per-record path (conform 38 %, simplejson 24 %, pruning 10 %, a write and a
    flush per message) is ~8x the cost of reading the CSV. Records here are already typed to
    the catalog schema by the compiled converter and hold only selected fields, so conforming
    and pruning have nothing to do; orjson output is the same JSON the SDK would write.
    """

    def __init__(self, stream: Any, counter: Any) -> None:
        super().__init__(stream, counter)
        alias = stream.stream_maps[0].stream_alias
        self.prefix = b'{"type":"RECORD","stream":' + orjson.dumps(alias) + b',"record":'
        version = stream_version(stream)  # set by sync() when ACTIVATE_VERSION is enabled
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
        with self.stream.signal_guard.write():
            write_stdout_bytes(data)
            self.emitted += count
            self.cursor["line"] = self.pending_line
        self.counter.increment(count)
        self._stamp()
        self._maybe_state(count)
