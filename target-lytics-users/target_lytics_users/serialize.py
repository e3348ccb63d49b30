"""Record serialization (orjson) and the fast JSON reader / validator the target plugs into the SDK."""

from __future__ import annotations

import datetime
import decimal
import typing as t
import uuid

import fastjsonschema
import orjson
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator, JSONSchemaValidator

from target_lytics_users.common.orjson_reader import OrjsonReader

_FRAGMENT_NULL = orjson.Fragment(b"null")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1  # the integers orjson writes itself


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
    """Serialize one record to compact JSON bytes.

    An integer beyond 64 bits (the input-line rule keeps it exact) is written with all its
    digits, as the SDK's writer would: orjson refuses it (`TypeError`), so only such a record
    is serialized a second time, its big integers as `orjson.Fragment`s.
    """
    try:
        return orjson.dumps(record, default=_default)
    except TypeError:  # orjson.JSONEncodeError; only an integer beyond 64 bits is expected
        return orjson.dumps(_big_ints_as_fragments(record), default=_default)


def _big_ints_as_fragments(value: t.Any) -> t.Any:
    """Return a copy of `value` whose integers beyond orjson's range are exact JSON fragments."""
    if isinstance(value, dict):
        return {k: _big_ints_as_fragments(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_big_ints_as_fragments(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _I64_MIN <= value <= _U64_MAX:
        return orjson.Fragment(int.__repr__(value).encode())
    return value


class UnsupportedMessageError(Exception):
    """A Singer message type this target does not implement (the run stops before it)."""


class LyticsUsersReader(OrjsonReader):
    """The shared orjson reader (common/orjson_reader.py) naming this target when it stops.

    Only the unsupported-message error is this target's own. The reader's `line_number`
    lets the target name the input line of a record it must reject; `in_message` and
    `deferred` hold a signal's drain until the message being handled is done.
    """

    def unknown_message(self, message: dict) -> None:
        """Stop at a message type this target does not implement (nothing after it is read)."""
        msg = (
            f"Input line {self.line_number}: unsupported Singer message type "
            f"'{message.get('type')}'"
            + (f" (stream '{message['stream']}')" if "stream" in message else "")
            + ": target-lytics-users handles SCHEMA, RECORD, STATE, BATCH and ACTIVATE_VERSION; "
            "stopping: no STATE is emitted past it"
        )
        raise UnsupportedMessageError(msg)


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
