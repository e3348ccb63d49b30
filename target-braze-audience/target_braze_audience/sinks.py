"""Sink and record validator for target-braze-audience.

The sink is kept for the SDK idioms it brings (per-stream schema, record validation,
`record_count` metrics); records themselves all flow into the target's single
:class:`~target_braze_audience.deltas.DeltaEngine`, in input order, through its one entry
point :meth:`~target_braze_audience.deltas.DeltaEngine.handler_for`.
"""

from __future__ import annotations

import typing as t

import fastjsonschema
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import RecordSink
from singer_sdk.sinks.core import BaseJSONSchemaValidator

from target_braze_audience.common.orjson_reader import OrjsonReader

if t.TYPE_CHECKING:
    from singer_sdk.target_base import Target


class FastJSONSchemaValidator(BaseJSONSchemaValidator):
    """JSON Schema validation compiled to Python by fastjsonschema.

    The SDK's default (jsonschema Draft 2020-12, interpreted) is ~2/3 of a target's CPU
    time (see benchmarks); a compiled validator checks the same schema ~10x faster.
    Formats are not checked, like the SDK default.
    """

    def __init__(self, schema: dict[str, t.Any]) -> None:
        """Compile `schema` (raises fastjsonschema.JsonSchemaDefinitionException)."""
        super().__init__(schema)
        self._validate = fastjsonschema.compile(schema, use_formats=False, use_default=False)

    def validate(self, record: dict[str, t.Any]) -> None:
        """Raise InvalidRecord when `record` does not match the stream's schema."""
        try:
            self._validate(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            msg = f"Record Message Validation Error: {exc.message}"
            raise InvalidRecord(msg, record) from exc


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list,),
    "object": (dict,),
}
_ANNOTATIONS = {"type", "format", "description", "title", "default", "examples", "$comment"}


class _Missing:
    """Class of the placeholder for an absent field (always an allowed 'type')."""


_MISSING = _Missing()


class FlatTypeValidator(BaseJSONSchemaValidator):
    """Validator for flat schemas whose properties only constrain the JSON type.

    That is what Singer taps emit for membership streams. :meth:`build` compiles the
    schema into one Python expression (like fastjsonschema does, but without its per-record
    set building): each property's value class is looked up in a frozenset of the exact
    classes its JSON types allow, and each required name is checked with ``in``. A value
    whose class is not in the set (a subclass, a wrong type) or a missing required field
    goes to :meth:`_check`, which decides with ``isinstance`` and raises with the field
    name. Any other schema keyword makes :meth:`build` return None (fastjsonschema is used).
    """

    def __init__(
        self,
        schema: dict[str, t.Any],
        checks: list[tuple[str, tuple[type, ...], bool, str]],
        required: list[str],
    ) -> None:
        """Use :meth:`build`."""
        super().__init__(schema)
        self._checks = checks
        self._required = required
        self.validate = self._compile()  # type: ignore[method-assign,assignment]

    @classmethod
    def build(cls, schema: dict[str, t.Any]) -> FlatTypeValidator | None:
        """Return a validator, or None when the schema needs a full JSON Schema engine."""
        if set(schema) - {"type", "properties", "required", "$schema", "additionalProperties"}:
            return None
        if schema.get("additionalProperties", True) is not True:
            return None
        checks = []
        for name, prop in (schema.get("properties") or {}).items():
            check = cls._type_check(name, prop)
            if check is None:
                return None
            checks.append(check)
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
            return None
        return cls(schema, checks, list(required))

    @staticmethod
    def _type_check(name: str, prop: t.Any) -> tuple[str, tuple[type, ...], bool, str] | None:
        """Return the check of a property that only constrains its JSON type, else None."""
        if not isinstance(prop, dict) or set(prop) - _ANNOTATIONS or "type" not in prop:
            return None
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        if any(tp not in _JSON_TYPES for tp in types):
            return None
        py: tuple[type, ...] = tuple(c for tp in types for c in _JSON_TYPES[tp])
        no_bool = bool not in py  # JSON true/false are not integers or numbers
        return name, py, no_bool, " or ".join(types)

    def _compile(self) -> t.Callable[[dict[str, t.Any]], None]:
        """Generate ``validate(record)`` for this schema (names are embedded as literals)."""
        env: dict[str, t.Any] = {"_check": self._check, "_M": _MISSING}
        terms = []
        for i, (name, py, _no_bool, _label) in enumerate(self._checks):
            env[f"_A{i}"] = frozenset({*py, _Missing})
            terms.append(f"get({name!r}, _M).__class__ not in _A{i}")
        terms += [f"{name!r} not in record" for name in self._required]
        body = " or ".join(terms) or "False"
        src = (
            f"def validate(record):\n    get = record.get\n    if {body}:\n        _check(record)\n"
        )
        exec(compile(src, "<FlatTypeValidator>", "exec"), env)  # noqa: S102 (literals only)
        return env["validate"]  # type: ignore[no-any-return]

    def _check(self, record: dict[str, t.Any]) -> None:
        """Slow path: raise InvalidRecord naming the field, or accept (e.g. a str subclass)."""
        get = record.get
        for name, py, no_bool, label in self._checks:
            value = get(name)
            if value is None and name not in record:
                continue
            if not isinstance(value, py) or (no_bool and value.__class__ is bool):
                msg = f"Record Message Validation Error: data.{name} must be {label}"
                raise InvalidRecord(msg, record)
        for name in self._required:
            if name not in record:
                msg = f"Record Message Validation Error: data must contain ['{name}'] properties"
                raise InvalidRecord(msg, record)

    def validate(self, record: dict[str, t.Any]) -> None:
        """Raise InvalidRecord when a field has the wrong JSON type or is missing.

        Replaced per instance by the compiled function (same behaviour).
        """
        self._check(record)


class UnsupportedMessageError(Exception):
    """A Singer message type this target does not implement (the run stops before it)."""


class BrazeAudienceSink(RecordSink):
    """Validates a stream's records and hands them to the target's delta pipeline."""

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict,
        key_properties: t.Sequence[str] | None,
    ) -> None:
        """Keep a handle on the target (for its pipeline)."""
        self._braze_target = target
        super().__init__(target, stream_name, schema, key_properties)

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """Return a compiled validator (the SDK's own when fastjsonschema refuses the schema)."""
        if not self.validate_schema:
            return None
        flat = FlatTypeValidator.build(self.schema)
        if flat is not None:
            return flat
        try:
            return FastJSONSchemaValidator(self.schema)
        except Exception as exc:  # fastjsonschema refuses some exotic schemas
            self.logger.info("Using the SDK's validator for '%s' (%s)", self.stream_name, exc)
            return super().get_validator()

    def process_record(self, record: dict, context: dict) -> None:
        """Hand the record (stream maps applied) to the pipeline's entry for this stream."""
        self._braze_target.engine.handler_for(self.stream_name)(record)  # type: ignore[attr-defined]


class BrazeAudienceReader(OrjsonReader):
    """The shared orjson reader (common/orjson_reader.py) naming this target when it stops.

    Only the unsupported-message error is this target's own.
    """

    def unknown_message(self, message: dict) -> None:
        """Stop at a message type this target does not implement (nothing after it is read)."""
        msg = (
            f"Input line {self.line_number}: unsupported Singer message type "
            f"'{message.get('type')}'"
            + (f" (stream '{message['stream']}')" if "stream" in message else "")
            + ": target-braze-audience handles SCHEMA, RECORD, STATE, BATCH and "
            "ACTIVATE_VERSION; stopping without delivering or emitting STATE"
        )
        raise UnsupportedMessageError(msg)
