# generated from common/orjson_reader.py by scripts/sync_common.py: edit the original
"""Singer message reader decoding with orjson, for `Target.message_reader_class`.

Modelled on the SDK's `singer_sdk.contrib.msgspec.MsgSpecReader`: a `GenericSingerReader`
subclass using only public SDK names, so it could be offered upstream. Why not the SDK's
reader: its `json.loads(parse_float=Decimal)` is the largest cost of a target once record
validation is cheap; orjson decodes ~5x faster, and reading standard input as bytes skips the
text layer (orjson decodes UTF-8 itself).

What a line may hold is the input-line rule of every reader (`input_lines.py`): the SDK's
values for what orjson refuses (`NaN`, `Infinity`) or would round (integers beyond 64 bits,
found by `bytes.translate`: ~0.5 us per line), blank lines skipped, anything else stops the
run naming the line number (never its content), as does a line that is JSON but not an
object with a `type`. Floats arrive as `float`, not `Decimal` (except in a record the SDK's
parser decodes).

Beyond the SDK's loop, for the targets' signal handling and error messages:

- `line_number`: the 1-based number of the line being handled (blank lines count);
- `in_message`: true while a message's callback runs; `deferred`, when set (by a signal
  handler that must not act inside a message), runs once that message is done;
- `unknown_message(message)`: the public hook for a type no callback handles (the SDK's
  words by default: `ValueError`); a target overrides it to name itself.
"""

from __future__ import annotations

import io
import sys
import typing as t
from collections import Counter, defaultdict
from decimal import Decimal

import orjson
from singer_sdk.io_base import GenericSingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

from .input_lines import (
    LONG_NUMBER,
    NUMBER_MASK,
    WHITESPACE,
    InputLineError,
    decode_line,
    is_blank,
    not_json,
)


class OrjsonReader(GenericSingerReader[bytes]):
    """Reads Singer messages with orjson under the input-line rule (see the module)."""

    def __init__(self) -> None:
        """Start before line 1, outside any message."""
        super().__init__()
        self.line_number = 0
        self.in_message = False
        self.deferred: t.Callable[[], None] | None = None

    @property
    def default_input(self) -> t.IO[bytes]:
        """Standard input as bytes."""
        return sys.stdin.buffer

    def deserialize_json(self, line: bytes) -> dict:
        """Decode one message line under the input-line rule."""
        try:
            return decode_line(line)  # type: ignore[no-any-return]
        except ValueError as exc:
            raise InvalidInputLine(f"Input line is not JSON ({exc})") from exc

    def process_lines(
        self,
        file_input: t.IO[bytes] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        """Dispatch each message to its callback; count messages by type (the SDK's contract)."""
        stats: dict[str, int] = defaultdict(int)
        loads = orjson.loads
        callback_for = callbacks.get
        number = self.line_number
        mask, space, long_number = NUMBER_MASK, WHITESPACE, LONG_NUMBER
        for line in self._byte_lines(file_input or self.default_input):
            number += 1
            self.line_number = number
            # The common case without a call: no number of 19 digits or more (no integer
            # orjson would round: `long_integer` inlined, a line that is only a number is no
            # message anyway), decoded by orjson. The rest goes to decode_line: the whole rule.
            if long_number not in line.translate(mask, space):
                try:
                    message = loads(line)
                except orjson.JSONDecodeError:
                    message = self._decoded(line, number)
            else:
                message = self._decoded(line, number)
            if message is None:
                continue
            kind: t.Any = message.get("type") if message.__class__ is dict else None
            callback = callback_for(kind)
            if callback is None:
                self._no_callback(message, number)
                stats[kind] += 1
                continue
            self.in_message = True
            try:
                callback(message)
            finally:
                self.in_message = False
            stats[kind] += 1
            if self.deferred is not None:
                action, self.deferred = self.deferred, None
                action()
        return Counter(stats)

    def unknown_message(self, message: dict) -> None:
        """Handle a message whose type has no callback (the SDK's behaviour: stop)."""
        msg = f"Unknown message type '{message['type']}' in message."
        raise ValueError(msg)

    def _no_callback(self, message: t.Any, number: int) -> None:
        """Stop at a line that is not a message (named, never shown); else `unknown_message`."""
        if message.__class__ is not dict or "type" not in message:
            msg = f"Input line {number} is not a Singer message (a JSON object with a `type`)"
            raise InputLineError(msg)
        self.unknown_message(message)

    @staticmethod
    def _byte_lines(source: t.Iterable[bytes] | t.IO[str]) -> t.Iterable[bytes]:
        """Lines as bytes: a text source (`--input FILE`, `io.StringIO`) is encoded back.

        A lone surrogate passes (`surrogatepass`) and then fails as bytes that are not UTF-8,
        naming the line, as the input-line rule says.
        """
        if isinstance(source, io.TextIOBase):
            return (line.encode("utf-8", "surrogatepass") for line in source)
        return source  # type: ignore[return-value]

    @staticmethod
    def _decoded(line: bytes | str, number: int) -> t.Any:
        """Decode a line under the input-line rule (`decode_line`).

        None when blank (skipped); the SDK parser's value for what orjson refuses or would
        round (NaN, Infinity, integers beyond 64 bits); else `InputLineError` naming the line.
        A STATE's finite `Decimal`s become the `float`s orjson gives: singer-sdk 0.54.9 cannot
        write a `Decimal` STATE back (`json.dumps` in `Target._write_state_message`).
        """
        if is_blank(line):
            return None
        try:
            message = decode_line(line)
        except ValueError as exc:
            raise not_json(number, exc) from exc
        if message.__class__ is dict and message.get("type") == "STATE" and "value" in message:
            message["value"] = _floats(message["value"])
        return message


def _floats(value: t.Any) -> t.Any:
    """Return `value` with each finite `Decimal` a `float` (what orjson reads for that text)."""
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, Decimal) and value.is_finite():
        return float(value)
    return value
