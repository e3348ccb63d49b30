"""The ``braze_users`` schema: JSON schema per column type, and the discovery-time header peek."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tap_braze_csv.columns import Column, inferred_type, known_fields, map_header
from tap_braze_csv.openers import iter_csv_members
from tap_braze_csv.routing import make_source

_JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "integer": {"type": ["integer", "null"]},
    "number": {"type": ["number", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "date-time": {"type": ["string", "null"], "format": "date-time"},
}


def json_schema_for(col_type: str) -> dict[str, Any]:
    """JSON schema of a column type (always nullable: an empty cell is null)."""
    return dict(_JSON_TYPES[col_type])


def type_from_schema(prop: Mapping[str, Any] | None, fallback: str) -> str:
    """Return the conversion a (catalog) property asks for, so records match the catalog."""
    if not prop:
        return fallback
    types = prop.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    for candidate in ("integer", "number", "boolean"):
        if candidate in types:
            return candidate
    if "string" in types:
        fmt = prop.get("format")
        return fmt if fmt in ("date", "date-time") else "string"
    return fallback


def build_schema(
    header_columns: Sequence[Column] | None,
    column_types: Mapping[str, str],
) -> dict[str, Any]:
    """Stream schema: known Braze fields, the first file's other columns, metadata fields.

    ``header_columns`` is None when no file could be read at discovery; the schema then
    allows additional properties so custom attribute columns still flow.
    """
    props: dict[str, Any] = {}
    for name in known_fields():
        props[name] = json_schema_for(column_types.get(name) or inferred_type(name))
    for col in header_columns or ():
        if col.name not in props:
            props[col.name] = json_schema_for(col.type)
    props["segment_name"] = json_schema_for("string")
    props["_braze_segment_id"] = json_schema_for("string")
    props["_sdc_unparsed"] = {
        "type": ["object", "null"],
        "additionalProperties": {"type": "string"},
        "description": "Raw text of cells that did not convert to their field's type "
        "(the fields are null), by field name.",
    }
    props["_sdc_source_file"] = {"type": "string"}
    props["_sdc_source_lineno"] = {"type": "integer"}
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["additionalProperties"] = header_columns is None
    return schema


def peek_header_columns(config: Mapping[str, Any], logger: logging.Logger) -> list[Column] | None:
    """Columns of the first matching file's header, or None when no file can be read."""
    try:
        with make_source(config) as source:
            refs = source.find(list(config.get("paths") or []))
            if not refs:
                return None
            ref = refs[0]
            raw = source.open(ref)
            try:
                for member, text in iter_csv_members(ref, raw, config):
                    reader = csv.reader(text, delimiter=config.get("delimiter") or ",", strict=True)
                    header = next(reader, [])
                    label = f"{ref.uri}!{member}" if member else ref.uri
                    return map_header(
                        header, file=label, column_types=config.get("column_types") or {}
                    )
            finally:
                raw.close()
    except Exception as exc:  # discovery must not fail on an unreachable file
        # A warning, not info: a wrong password or path here would otherwise only show at sync.
        logger.warning(
            "Discovery: could not read the first file's header (%s); the schema allows custom "
            "columns as extra string fields",
            exc,
        )
    return None
