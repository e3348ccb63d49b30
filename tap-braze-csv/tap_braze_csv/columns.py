"""Braze export headers: mapping to the Braze->Lytics webhook field names, and column types.

Braze's "CSV Export User Data" headers (see the project's API fact sheet §B7) are mapped to
the field names the Braze->Lytics webhook body uses (§B9): ``Appboy ID`` -> ``braze_id``,
``user_id`` -> ``external_id``, ``timezone`` -> ``time_zone``...  Every other column keeps its
position and is renamed to snake_case.  Headers are matched case-insensitively and ignoring
spaces, dashes and dots, so ``Braze ID``, ``braze-id`` and ``BRAZE_ID`` are one column.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tap_braze_csv.errors import BrazeCsvError

#: Webhook field name -> accepted header spellings (normalised with :func:`normalise_header`).
ALIASES: dict[str, tuple[str, ...]] = {
    "braze_id": ("appboy_id", "braze_id", "brazeid", "appboyid", "braze_user_id"),
    "external_id": ("user_id", "external_id", "external_user_id", "userid", "externalid"),
    "email": ("email", "email_address", "emailaddress", "e_mail"),
    "first_name": ("first_name", "firstname"),
    "last_name": ("last_name", "lastname"),
    "phone_number": ("phone_number", "phone", "phonenumber"),
    "country": ("country",),
    "city": ("city",),
    "language": ("language",),
    "gender": ("gender",),
    "date_of_birth": ("date_of_birth", "dob", "dateofbirth", "birthdate", "birth_date"),
    "time_zone": ("timezone", "time_zone"),
    "twitter_handle": ("twitter_handle",),
}

#: Output names in the webhook body's order (the schema lists these first).
WEBHOOK_FIELDS: tuple[str, ...] = (
    "braze_id",
    "external_id",
    "email",
    "first_name",
    "last_name",
    "phone_number",
    "country",
    "city",
    "language",
    "gender",
    "date_of_birth",
    "time_zone",
    "twitter_handle",
)

#: A file must hold at least one of these (after mapping) to be taken as a Braze export.
IDENTIFIER_FIELDS: frozenset[str] = frozenset({"braze_id", "external_id", "email"})

#: The remaining documented "User Data" / "Email Addresses" export columns (output names).
DOCUMENTED_FIELDS: tuple[str, ...] = (
    "created_at",
    "created_from",
    "devices",
    "unsubscribed_from_emails_at",
    "opted_in_to_emails_at",
    "first_session",
    "google_ad_ids",
    "idfas",
    "idfvs",
    "last_app_version_used",
    "last_session",
    "number_of_google_ad_ids",
    "number_of_idfas",
    "number_of_idfvs",
    "number_of_push_tokens",
    "number_of_roku_ad_ids",
    "number_of_windows_ad_ids",
    "opted_into_push_at",
    "unsubscribed_from_push_at",
    "random_bucket",
    "roku_ad_ids",
    "session_count",
    "in_app_purchase_total",
    "user_aliases",
    "windows_ad_ids",
)

#: Column types a user may set in ``column_types``.
COLUMN_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "date", "date-time")

_INTEGER_NAMES = frozenset({"session_count", "random_bucket"})
_NUMBER_NAMES = frozenset({"in_app_purchase_total"})
_DATETIME_NAMES = frozenset({"first_session", "last_session"})
_DATE_NAMES = frozenset({"date_of_birth"})

_ALIAS_LOOKUP: dict[str, str] = {
    alias: field for field, aliases in ALIASES.items() for alias in aliases
}

_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM_PLURAL = re.compile(r"([A-Z]{2,})s(?![a-z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


def snake_case(header: str) -> str:
    """Return ``header`` in snake_case (``Favorite Color`` -> ``favorite_color``).

    Acronyms stay one word (``IDFAs`` -> ``idfas``); anything that is not a letter or digit
    becomes one underscore; an empty result becomes ``column``.
    """
    text = unicodedata.normalize("NFKD", header.strip())
    text = "".join(c for c in text if not unicodedata.combining(c))  # "Éclair" -> "Eclair"
    text = _ACRONYM_PLURAL.sub(lambda m: m.group(1).lower() + "s", text)
    if not any(c.islower() for c in text if c.isalpha()):
        text = text.lower()
    text = _CAMEL_1.sub(r"\1_\2", text)
    text = _CAMEL_2.sub(r"\1_\2", text)
    text = _NON_WORD.sub("_", text).strip("_").lower()
    return text or "column"


def normalise_header(header: str) -> str:
    """Key used to match a header against :data:`ALIASES` (case, spaces, dashes ignored)."""
    return _NON_WORD.sub("_", header.strip().lower()).strip("_")


def output_name(header: str) -> str:
    """Return the output field name of one export header."""
    known = _ALIAS_LOOKUP.get(normalise_header(header))
    if known:
        return known
    name = snake_case(header)
    # "IDFAs" -> "idfas", "number_of_IDFAs" -> "number_of_idfas": acronyms are not split.
    return _ALIAS_LOOKUP.get(name, name)


def inferred_type(name: str) -> str:
    """Return the type of an output column from its name (custom columns: string)."""
    if name in _DATE_NAMES:
        return "date"
    if name in _DATETIME_NAMES or name.endswith("_at"):
        return "date-time"
    if name in _INTEGER_NAMES or name.startswith("number_of_"):
        return "integer"
    if name in _NUMBER_NAMES:
        return "number"
    return "string"


@dataclass(frozen=True)
class Column:
    """One CSV column: where it is, what it is called in records, and its type."""

    index: int
    header: str
    name: str
    type: str


def known_fields() -> tuple[str, ...]:
    """Every output field known before any file is read, in schema order."""
    return WEBHOOK_FIELDS + DOCUMENTED_FIELDS


def map_header(
    header: Sequence[str],
    *,
    file: str,
    column_types: Mapping[str, str] | None = None,
) -> list[Column]:
    """Map a CSV header row to output columns.

    Args:
        header: The header cells (BOM already removed).
        file: File name used in error messages.
        column_types: ``column_types`` setting: header or output name -> type.

    Raises:
        BrazeCsvError: The header has no Braze identifier column (not a Braze export), or is empty.

    """
    types = dict(column_types or {})
    columns: list[Column] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(header):
        cell = raw.lstrip("\ufeff")
        name = output_name(cell) if cell.strip() else f"column_{index + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        col_type = types.get(cell, types.get(name)) or inferred_type(name)
        columns.append(Column(index=index, header=cell, name=name, type=col_type))
    names = {c.name for c in columns}
    if not names & IDENTIFIER_FIELDS:
        shown = ", ".join(repr(h) for h in list(header)[:8]) or "(empty)"
        msg = (
            f"{file}: not a Braze user export: the header has no identifier column "
            f"(one of Appboy ID/Braze ID/braze_id, user_id/external_id, email); "
            f"header starts with {shown}"
        )
        raise BrazeCsvError(msg)
    return columns


def validate_column_types(column_types: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the setting when a ``column_types`` value is unknown."""
    for column, col_type in column_types.items():
        if col_type not in COLUMN_TYPES:
            msg = (
                f"column_types: {column!r} has type {col_type!r}; "
                f"expected one of {', '.join(COLUMN_TYPES)}"
            )
            raise ValueError(msg)
