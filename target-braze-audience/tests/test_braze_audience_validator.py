"""The compiled flat-schema record validator agrees with JSON Schema on type-only schemas."""

from __future__ import annotations

import typing as t

import pytest
from singer_sdk.exceptions import InvalidRecord
from target_braze_audience.sinks import FlatTypeValidator

SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "properties": {
        "external_id": {"type": ["string", "null"]},
        "audience_slug": {"type": "string", "description": "slug"},
        "member_count": {"type": "integer"},
        "score": {"type": "number"},
        "tags": {"type": ["array", "null"]},
        "odd name'\"{x}": {"type": "boolean"},
    },
    "required": ["audience_slug"],
}


class _Str(str):
    pass


@pytest.mark.parametrize(
    "record",
    [
        {"audience_slug": "a"},
        {"audience_slug": "a", "external_id": None, "member_count": 3, "score": 1.5},
        {"audience_slug": "a", "score": 2, "tags": ["x"], "extra": object()},
        {"audience_slug": _Str("a"), "odd name'\"{x}": False},
    ],
)
def test_valid_records_pass(record: dict[str, t.Any]) -> None:
    validator = FlatTypeValidator.build(SCHEMA)
    assert validator is not None
    validator.validate(record)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"external_id": "u1"}, "must contain ['audience_slug']"),
        ({"audience_slug": 7}, "data.audience_slug must be string"),
        ({"audience_slug": "a", "member_count": True}, "data.member_count must be integer"),
        ({"audience_slug": "a", "member_count": 1.0}, "data.member_count must be integer"),
        ({"audience_slug": "a", "score": False}, "data.score must be number"),
        ({"audience_slug": "a", "external_id": 42}, "data.external_id must be string or null"),
        ({"audience_slug": "a", "odd name'\"{x}": "yes"}, "must be boolean"),
    ],
)
def test_invalid_records_name_the_field(record: dict[str, t.Any], message: str) -> None:
    validator = FlatTypeValidator.build(SCHEMA)
    assert validator is not None
    with pytest.raises(InvalidRecord) as exc:
        validator.validate(record)
    assert message in str(exc.value)


def test_other_keywords_need_a_full_validator() -> None:
    assert FlatTypeValidator.build({**SCHEMA, "additionalProperties": False}) is None
    assert (
        FlatTypeValidator.build(
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
        )
        is None
    )
