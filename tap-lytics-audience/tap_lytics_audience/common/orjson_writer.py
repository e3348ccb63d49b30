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

Signals: `writing` is true while a line is being written; `deferred`, when set (by a signal
handler that must not exit in the middle of a buffered write, which can drop or cut the
line), runs once the line is written.
"""

from __future__ import annotations

import decimal
import sys
import typing as t

import orjson
from singer_sdk.io_base import GenericSingerWriter
from singer_sdk.singerlib.messages import Message


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
        self.writing = True
        try:
            out.write(line)
            if message.type != "RECORD":
                out.flush()
        finally:
            self.writing = False
        if self.deferred is not None:
            action, self.deferred = self.deferred, None
            action()
