# generated from common/orjson_writer.py by scripts/sync_common.py: edit the original
"""Singer message writer encoding with orjson, for `Tap.message_writer_class`.

Modelled on the SDK's `singer_sdk.contrib.msgspec.MsgSpecWriter`: a `GenericSingerWriter`
subclass using only public SDK names, so it could be offered upstream. It removes two costs
of the SDK's writer and keeps its output:

- encoding: orjson instead of simplejson, the same JSON (datetimes as RFC 3339, `Decimal`
  with its exact digits, a non-finite `Decimal` as null, anything else as its string);
- flushing: the SDK flushes stdout after every message; RECORD messages here stay in the
  stdout buffer (written when it fills), and every other message (SCHEMA, STATE, ...)
  flushes it, as does interpreter exit. Order is unchanged.

For a tap that serialises records itself (one envelope, many records): `record_line_parts`
gives the bytes around a record so that `head + orjson.dumps(record) + tail` is the line
`write_message` would write, and `write_lines` writes many such lines at once.

Signals: `writing` is true while a line is being written, or for the length of a `hold()`
block; `deferred`, when set (by a signal handler that must not exit in the middle of a
buffered write, which can drop or cut the line), runs once the write or block is over.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import os
import sys
import typing as t

import orjson
from singer_sdk.io_base import GenericSingerWriter
from singer_sdk.singerlib.messages import Message, RecordMessage


def _default(value: t.Any) -> t.Any:
    """Encode what orjson does not, as the SDK's simplejson encoder does."""
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value).encode()) if value.is_finite() else None
    return str(value)


class OrjsonWriter(GenericSingerWriter[str, Message]):
    """Writes Singer messages to stdout with orjson, flushing on every non-RECORD message."""

    def __init__(self) -> None:
        """Start outside any write, nothing deferred."""
        super().__init__()
        self.writing = False
        self.deferred: t.Callable[[], None] | None = None

    def serialize_message(self, message: Message) -> str:
        """Serialize a message to one line of JSON (without the newline)."""
        return orjson.dumps(message.to_dict(), default=_default).decode()

    def write_message(self, message: Message) -> None:
        """Write a message to stdout; flush unless it is a RECORD; then run `deferred`."""
        line = self.format_message(message) + "\n"
        out = sys.stdout
        if self.writing:  # inside hold(): the block runs `deferred` when it ends
            out.write(line)
            if message.type != "RECORD":
                out.flush()
            return
        self.writing = True
        try:
            out.write(line)
            if message.type != "RECORD":
                out.flush()
        finally:
            self.writing = False
            self._run_deferred()

    @contextlib.contextmanager
    def hold(self) -> t.Iterator[None]:
        """Keep `writing` true for a block (re-entrant); run `deferred` when it ends.

        For a write and the bookkeeping that must go with it (e.g. moving a resume point
        past the records just written): a deferred exit then never lands between the two.
        """
        if self.writing:
            yield
            return
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
            self._run_deferred()

    def _run_deferred(self) -> None:
        if self.deferred is not None:
            action, self.deferred = self.deferred, None
            action()

    def record_line_parts(
        self,
        stream: str,
        version: int | None = None,
        time_extracted: datetime.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """Return `(head, tail)`: `head + orjson.dumps(record) + tail` is the RECORD line.

        The same bytes `write_message(RecordMessage(stream, record, version, time_extracted))`
        writes, newline included, for a record orjson encodes without `default` (str, int,
        float, bool, None, list, dict): the envelope is encoded once, not once per record.
        """
        message = RecordMessage(
            stream=stream, record={}, version=version, time_extracted=time_extracted
        )
        line = self.format_message(message).encode()
        cut = line.index(b'"record":{}') + len(b'"record":')
        return line[:cut], line[cut + 2 :] + b"\n"

    def write_lines(self, data: bytes) -> None:
        """Write whole, already serialised message lines after everything written before.

        Flushed at once. A real file or pipe gets `os.write` in a loop: CPython's buffered
        `write` can silently drop the rest of a large write that a signal interrupts (seen with
        SIGTERM during a 2.7 MB write to a pipe), while `os.write` reports partial writes.
        An in-memory stdout (test harnesses) gets an ordinary write. Runs inside `hold()`.
        """
        with self.hold():
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
