"""Braze REST export users (JSON lines) as ``braze_users`` and ``braze_engagement`` records.

``POST /users/export/segment`` writes one JSON object per user per line (fact sheet §B8; Braze
docs ``post_users_segment.md``). Users come out with the same field names and types as CSV rows
(``braze_id``, ``external_id``, ``email``, ``phone_number``, ``city``, ``date_of_birth``,
``time_zone``, ...), so a Lytics stream does not care which export produced them; JSON-only
fields keep Braze's names (``custom_attributes`` stays an object, ``custom_events``,
``purchases``, ``apps`` stay arrays). Values that are arrays or objects in JSON but text in the
CSV export (``devices``, ``user_aliases``) become compact JSON text, as the schema types them.

``campaigns_received`` and ``canvases_received`` are not copied into user records: each entry
becomes one ``braze_engagement`` record keyed by the user, with Braze's own field names and
values (``last_received``, the ``engaged`` flags ``opened_email``/``opened_push``/
``clicked_email``/``clicked_triggered_in_app_message``, ``converted``, ...). Braze exports these
flags as booleans without times; the times it does export are ``last_received`` (campaigns),
``last_received_message``, ``last_entered``, ``last_exited`` (Canvases, renamed
``last_received`` for the first so both kinds sort on one field).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from tap_braze_csv.columns import inferred_type, known_fields
from tap_braze_csv.convert import to_date, to_datetime

#: JSON export key -> ``braze_users`` field (the CSV/webhook name); other keys keep their name.
JSON_RENAMES: dict[str, str] = {
    "phone": "phone_number",
    "home_city": "city",
    "dob": "date_of_birth",
    "user_id": "external_id",
}

#: Engagement arrays: they feed ``braze_engagement`` and are not copied into user records.
ENGAGEMENT_KEYS = ("campaigns_received", "canvases_received")

#: Fields only JSON exports have, with their JSON schema (all nullable).
JSON_USER_FIELDS: dict[str, dict[str, Any]] = {
    "custom_attributes": {"type": ["object", "null"]},
    "custom_events": {"type": ["array", "null"], "items": {"type": "object"}},
    "purchases": {"type": ["array", "null"], "items": {"type": "object"}},
    "apps": {"type": ["array", "null"], "items": {"type": "object"}},
    "push_tokens": {"type": ["array", "null"], "items": {"type": "object"}},
    "cards_clicked": {"type": ["array", "null"], "items": {"type": "object"}},
    "last_coordinates": {"type": ["array", "null"], "items": {"type": "number"}},
    "total_revenue": {"type": ["number", "null"]},
    "email_subscribe": {"type": ["string", "null"]},
    "push_subscribe": {"type": ["string", "null"]},
    "push_opted_in_at": {"type": ["string", "null"], "format": "date-time"},
    "uninstalled_at": {"type": ["string", "null"], "format": "date-time"},
    "attributed_campaign": {"type": ["string", "null"]},
    "attributed_source": {"type": ["string", "null"]},
    "attributed_adgroup": {"type": ["string", "null"]},
    "attributed_ad": {"type": ["string", "null"]},
    "_braze_segment_id": {"type": ["string", "null"]},
}

#: Engagement flags Braze exports under ``engaged`` (campaigns), emitted as top-level fields.
ENGAGED_FLAGS = ("opened_email", "opened_push", "clicked_email", "clicked_triggered_in_app_message")

_NULL_STRING = {"type": ["string", "null"]}
_NULL_BOOL = {"type": ["boolean", "null"]}
_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}

ENGAGEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "braze_id": _NULL_STRING,
        "external_id": _NULL_STRING,
        "email": _NULL_STRING,
        "kind": {"type": "string", "enum": ["campaign", "canvas"]},
        "api_id": _NULL_STRING,
        "name": _NULL_STRING,
        "last_received": _NULL_TIME,
        **{flag: _NULL_BOOL for flag in ENGAGED_FLAGS},
        "engaged": {"type": ["object", "null"]},
        "converted": _NULL_BOOL,
        "multiple_converted": {"type": ["object", "null"]},
        "in_control": _NULL_BOOL,
        "variation_name": _NULL_STRING,
        "variation_api_id": _NULL_STRING,
        "last_entered": _NULL_TIME,
        "last_exited": _NULL_TIME,
        "last_entered_control_at": _NULL_TIME,
        "steps_received": {"type": ["array", "null"], "items": {"type": "object"}},
        "_braze_segment_id": _NULL_STRING,
        "_sdc_source_file": {"type": "string"},
        "_sdc_source_lineno": {"type": "integer"},
    },
}
ENGAGEMENT_KEY_PROPERTIES = ("braze_id", "kind", "api_id")

_TIME_FIELDS_CAMPAIGN = ("last_received",)
_TIME_FIELDS_CANVAS = ("last_received", "last_entered", "last_exited", "last_entered_control_at")


def user_json_schema_properties() -> dict[str, dict[str, Any]]:
    """Return the schema properties JSON exports add to ``braze_users`` (beside CSV columns)."""
    return {name: dict(schema) for name, schema in JSON_USER_FIELDS.items()}


def _type_of(prop: Mapping[str, Any] | None) -> str:
    """Return the conversion a schema property asks for (string, date, date-time, any)."""
    if not prop:
        return "any"
    types = prop.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types and len(set(types) - {"null"}) == 1:
        fmt = prop.get("format")
        return fmt if fmt in ("date", "date-time") else "string"
    if "integer" in types and len(set(types) - {"null"}) == 1:
        return "integer"
    return "any"


class UnparsedValue(ValueError):
    """A JSON value that does not fit its field's type (the field becomes null)."""

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(field)
        self.field = field
        self.value = value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _as_datetime(value: Any) -> str:
    if isinstance(value, str):
        return to_datetime(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return to_datetime(str(int(value)))
    raise ValueError(value)


def _as_date(value: Any) -> str:
    if isinstance(value, str):
        return to_date(value)
    raise ValueError(value)


def _as_integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "string": _as_text,
    "date": _as_date,
    "date-time": _as_datetime,
    "integer": _as_integer,
}


class UserConverter:
    """Turns one export user object into a ``braze_users`` record typed like the schema.

    ``properties`` is the stream's (selected) schema properties; ``extra_ok`` whether fields
    outside them are emitted (the schema allows additional properties). Fields the export does
    not hold are simply absent (Braze: "if a field is missing ... assume null or empty").
    """

    def __init__(self, properties: Mapping[str, Any], *, extra_ok: bool) -> None:
        self.properties = properties
        self.extra_ok = extra_ok
        self._conversions: dict[str, Callable[[Any], Any] | None] = {}
        for name in properties:
            kind = _type_of(properties[name])
            self._conversions[name] = _CONVERT.get(kind)
        #: Export key -> (record field, conversion), or None for a key not emitted; filled as
        #: keys are first seen, so each user costs one lookup per key.
        self._plan: dict[str, tuple[str, Callable[[Any], Any] | None] | None] = {}
        self.unparsed: dict[str, int] = {}

    def _conversion(self, name: str) -> Callable[[Any], Any] | None:
        try:
            return self._conversions[name]
        except KeyError:
            kind = inferred_type(name) if name in known_fields() else "any"
            func = _CONVERT.get(kind)
            self._conversions[name] = func
            return func

    def _plan_key(self, key: str) -> tuple[str, Callable[[Any], Any] | None] | None:
        """Decide (once per key) the field a key goes to and its conversion, or skip it."""
        step = None
        if key not in ENGAGEMENT_KEYS:  # engagement goes to the braze_engagement stream
            name = JSON_RENAMES.get(key, key)
            if name in self.properties or self.extra_ok:
                step = (name, self._conversion(name))
        self._plan[key] = step
        return step

    def convert(self, user: Mapping[str, Any], constants: Mapping[str, Any]) -> dict[str, Any]:
        """Return the record for ``user``; values that do not fit their type become null."""
        record: dict[str, Any] = {}
        plan = self._plan
        for key, value in user.items():
            try:
                step = plan[key]
            except KeyError:
                step = self._plan_key(key)
            if step is None:
                continue
            name, func = step
            if func is not None and value is not None:
                try:
                    value = func(value)
                except (ValueError, TypeError, OverflowError):
                    self.unparsed[name] = self.unparsed.get(name, 0) + 1
                    value = None
            record[name] = value
        if self.extra_ok:
            record.update(constants)
        else:
            props = self.properties
            record.update({k: v for k, v in constants.items() if k in props})
        return record


def _time(value: Any) -> Any:
    if isinstance(value, str) and value:
        try:
            return to_datetime(value)
        except ValueError:
            return None
    return None


def engagement_records(
    user: Mapping[str, Any], constants: Mapping[str, Any]
) -> Iterator[dict[str, Any]]:
    """One record per entry of the user's ``campaigns_received`` and ``canvases_received``."""
    ident = {
        "braze_id": user.get("braze_id"),
        "external_id": user.get("external_id", user.get("user_id")),
        "email": user.get("email"),
    }
    campaigns = user.get("campaigns_received")
    if isinstance(campaigns, list):
        for item in campaigns:
            if isinstance(item, dict):
                yield _campaign_record(ident, item, constants)
    canvases = user.get("canvases_received")
    if isinstance(canvases, list):
        for item in canvases:
            if isinstance(item, dict):
                yield _canvas_record(ident, item, constants)


def _campaign_record(
    ident: Mapping[str, Any], item: Mapping[str, Any], constants: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the record of one ``campaigns_received`` entry, ``constants`` added."""
    engaged = item.get("engaged")
    engaged = engaged if isinstance(engaged, dict) else {}
    record = {
        **ident,
        "kind": "campaign",
        "api_id": item.get("api_campaign_id"),
        "name": item.get("name"),
        "last_received": _time(item.get("last_received")),
    }
    for flag in ENGAGED_FLAGS:
        record[flag] = bool(engaged.get(flag, False))
    record["engaged"] = engaged or None
    record["converted"] = bool(item.get("converted", False))
    record["multiple_converted"] = item.get("multiple_converted")
    record["in_control"] = item.get("in_control")
    record["variation_name"] = item.get("variation_name")
    record["variation_api_id"] = item.get("variation_api_id")
    record.update(constants)
    return record


def _canvas_record(
    ident: Mapping[str, Any], item: Mapping[str, Any], constants: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the record of one ``canvases_received`` entry, ``constants`` added."""
    steps = item.get("steps_received")
    return {
        **ident,
        "kind": "canvas",
        "api_id": item.get("api_canvas_id"),
        "name": item.get("name"),
        "last_received": _time(item.get("last_received_message")),
        "last_entered": _time(item.get("last_entered")),
        "last_exited": _time(item.get("last_exited")),
        "last_entered_control_at": _time(item.get("last_entered_control_at")),
        "in_control": item.get("in_control"),
        "variation_name": item.get("variation_name"),
        "steps_received": steps if isinstance(steps, list) else None,
        **constants,
    }


def prune(record: dict[str, Any], allowed: frozenset[str] | None) -> dict[str, Any]:
    """Keep only ``allowed`` fields (None: keep everything)."""
    if allowed is None:
        return record
    return {k: v for k, v in record.items() if k in allowed}
