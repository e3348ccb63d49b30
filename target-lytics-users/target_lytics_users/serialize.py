"""Record serialization (orjson) and the fast JSON reader / validator the target plugs into the SDK."""

from __future__ import annotations

import datetime
import decimal
import typing as t
import uuid
from collections import Counter, defaultdict

import fastjsonschema
import orjson
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.io_base import SingerReader
from singer_sdk.sinks.core import BaseJSONSchemaValidator, JSONSchemaValidator

from target_lytics_users.common.input_lines import decode_line, is_blank, not_json

_FRAGMENT_NULL = orjson.Fragment(b"null")


def _default(obj: t.Any) -> t.Any:
    """Encode what orjson does not know natively.

    orjson already writes `datetime`/`date`/`time` as ISO 8601 (RFC 3339), dicts and lists as
    nested JSON. `Decimal` becomes a JSON number with its exact digits (NaN/Infinity, which
    JSON cannot hold, become null); anything else its string form.
    """
    if isinstance(obj, decimal.Decimal):
        if obj.is_finite():
            return orjson.Fragment(str(obj).encode())
        return _FRAGMENT_NULL
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (uuid.UUID, datetime.timedelta, bytes)):
        return str(obj)
    return str(obj)


def dumps_record(record: dict) -> bytes:
    """Serialize one record to compact JSON bytes."""
    return orjson.dumps(record, default=_default)


class UnsupportedMessageError(Exception):
    """A Singer message type this target does not implement (the run stops before it)."""


class LineCountingOrjsonReader(SingerReader):
    """Singer reader that parses lines with orjson and counts them.

    The SDK's reader uses `json.loads(parse_float=Decimal)`, the largest cost of a target
    once validation is cheap. orjson is ~5x faster; floats arrive as `float` (which orjson
    writes back with the shortest round-tripping digits). A line orjson refuses (e.g. NaN)
    falls back to the SDK parser, so exactly the same inputs are accepted (the rule of every
    reader: common/input_lines.py; blank lines are skipped). `line_number`
    lets the target name the input line of a record it must reject.
    """

    def __init__(self) -> None:
        """Start at line 0."""
        super().__init__()
        self.line_number = 0
        self.in_message = False  # a message callback is running (see the target's SIGTERM)
        self.deferred: t.Callable[[], None] | None = None  # run once the message is done

    def process_lines(
        self,
        file_input: t.IO[str] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        """Run the SDK's loop, flagging while a message is handled; run `deferred` after it."""
        stats: dict[str, int] = defaultdict(int)
        for line in file_input or self.default_input:
            self._current_message = line
            try:
                message = self.deserialize_json(line)
            except ValueError as exc:
                if is_blank(line):  # common/input_lines.py: the rule of every reader
                    continue
                raise not_json(self.line_number, exc) from exc
            self.assert_line_requires(message, requires={"type"})
            kind = message["type"]
            callback = callbacks.get(kind)
            self.in_message = True
            try:
                if callback is None:
                    self._process_unknown_message(message)
                else:
                    callback(message)
            finally:
                self.in_message = False
            stats[kind] += 1
            if self.deferred is not None:
                self.deferred()
        return Counter(**stats)

    def _process_unknown_message(self, message_dict: dict) -> None:
        """Stop at a message type this target does not implement (nothing after it is read)."""
        msg = (
            f"Input line {self.line_number}: unsupported Singer message type "
            f"'{message_dict.get('type')}'"
            + (f" (stream '{message_dict['stream']}')" if "stream" in message_dict else "")
            + ": target-lytics-users handles SCHEMA, RECORD, STATE, BATCH and ACTIVATE_VERSION; "
            "stopping: no STATE is emitted past it"
        )
        raise UnsupportedMessageError(msg)

    def deserialize_json(self, line: str) -> dict:
        """Parse one input line."""
        self.line_number += 1
        return decode_line(line)  # type: ignore[no-any-return]


class FastJSONSchemaValidator(BaseJSONSchemaValidator):
    """Record validator compiled by fastjsonschema (plugged in through `Sink.get_validator`).

    The SDK's default `jsonschema` validator is ~2/3 of a target's CPU; a compiled one
    checks the same schema ~10x faster. Like the SDK default, string formats are not
    checked (`use_formats=False`).
    """

    def __init__(self, schema: dict[str, t.Any]) -> None:
        """Compile `schema` (raises fastjsonschema's definition error when it cannot)."""
        super().__init__(schema)
        # use_default=False: never write schema defaults into the records we forward.
        self._validate = fastjsonschema.compile(schema, use_formats=False, use_default=False)

    def validate(self, record: dict[str, t.Any]) -> None:
        """Raise `InvalidRecord` when `record` does not match the schema."""
        try:
            self._validate(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            msg = f"Record Message Validation Error: {exc.message}"
            raise InvalidRecord(msg, record) from exc


def make_validator(schema: dict[str, t.Any]) -> BaseJSONSchemaValidator:
    """Return a compiled validator for `schema` (the SDK's when fastjsonschema cannot).

    The SDK's validator is built first for its one-off schema check, so an invalid schema
    fails exactly as it does by default (`InvalidJSONSchema`).
    """
    sdk_validator = JSONSchemaValidator(schema)
    try:
        return FastJSONSchemaValidator(schema)
    except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError, KeyError):
        return sdk_validator
