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
