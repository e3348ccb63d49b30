"""Header mapping, column typing rules and segment names."""

from __future__ import annotations

import pytest
from tap_braze_csv.columns import (
    DOCUMENTED_FIELDS,
    WEBHOOK_FIELDS,
    inferred_type,
    map_header,
    output_name,
    snake_case,
    validate_column_types,
)
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sample import CUSTOM_HEADER, STANDARD_HEADER
from tap_braze_csv.segments import segment_for, segment_from_name

# Every documented "User Data" column (facts §B7, in table order) -> expected field and type.
DOCUMENTED = {
    "Appboy ID": ("braze_id", "string"),
    "country": ("country", "string"),
    "created_at": ("created_at", "date-time"),
    "devices": ("devices", "string"),
    "date_of_birth": ("date_of_birth", "date"),
    "email": ("email", "string"),
    "unsubscribed_from_emails_at": ("unsubscribed_from_emails_at", "date-time"),
    "user_id": ("external_id", "string"),
    "first_name": ("first_name", "string"),
    "first_session": ("first_session", "date-time"),
    "gender": ("gender", "string"),
    "google_ad_ids": ("google_ad_ids", "string"),
    "city": ("city", "string"),
    "IDFAs": ("idfas", "string"),
    "IDFVs": ("idfvs", "string"),
    "language": ("language", "string"),
    "last_app_version_used": ("last_app_version_used", "string"),
    "last_name": ("last_name", "string"),
    "last_session": ("last_session", "date-time"),
    "number_of_google_ad_ids": ("number_of_google_ad_ids", "integer"),
    "number_of_IDFAs": ("number_of_idfas", "integer"),
    "number_of_IDFVs": ("number_of_idfvs", "integer"),
    "number_of_push_tokens": ("number_of_push_tokens", "integer"),
    "number_of_roku_ad_ids": ("number_of_roku_ad_ids", "integer"),
    "number_of_windows_ad_ids": ("number_of_windows_ad_ids", "integer"),
    "phone_number": ("phone_number", "string"),
    "opted_into_push_at": ("opted_into_push_at", "date-time"),
    "unsubscribed_from_push_at": ("unsubscribed_from_push_at", "date-time"),
    "random_bucket": ("random_bucket", "integer"),
    "roku_ad_ids": ("roku_ad_ids", "string"),
    "session_count": ("session_count", "integer"),
    "timezone": ("time_zone", "string"),
    "in_app_purchase_total": ("in_app_purchase_total", "number"),
    "user_aliases": ("user_aliases", "string"),
    "windows_ad_ids": ("windows_ad_ids", "string"),
    # Email Addresses export and newer exports
    "opted_in_to_emails_at": ("opted_in_to_emails_at", "date-time"),
    "created_from": ("created_from", "string"),
}


@pytest.mark.parametrize(("header", "expected"), DOCUMENTED.items())
def test_every_documented_column_maps_and_types(header: str, expected: tuple[str, str]) -> None:
    cols = map_header(["user_id", header] if header != "user_id" else [header], file="f.csv")
    col = cols[-1]
    assert (col.name, col.type) == expected


def test_documented_table_is_complete() -> None:
    # The fixture header is the documented table; every output name is a known field.
    names = {output_name(h) for h in STANDARD_HEADER}
    assert names <= set(WEBHOOK_FIELDS) | set(DOCUMENTED_FIELDS)
    assert set(DOCUMENTED) >= set(STANDARD_HEADER)


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Appboy ID", "braze_id"),
        ("Braze ID", "braze_id"),
        ("braze_id", "braze_id"),
        ("BRAZE_ID", "braze_id"),
        ("braze-id", "braze_id"),
        ("appboy_id", "braze_id"),
        ("user_id", "external_id"),
        ("User ID", "external_id"),
        ("external_id", "external_id"),
        ("External ID", "external_id"),
        ("timezone", "time_zone"),
        ("Time Zone", "time_zone"),
        ("Email", "email"),
        ("email_address", "email"),
        ("First Name", "first_name"),
        ("LAST_NAME", "last_name"),
        ("Phone", "phone_number"),
        ("phone_number", "phone_number"),
        ("Country", "country"),
        ("City", "city"),
        ("Language", "language"),
        ("Gender", "gender"),
        ("dob", "date_of_birth"),
        ("Date of Birth", "date_of_birth"),
    ],
)
def test_variants_case_insensitive(header: str, field: str) -> None:
    assert output_name(header) == field


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Favorite Color", "favorite_color"),
        ("favoriteColor", "favorite_color"),
        ("Lifetime Value", "lifetime_value"),
        ("lifetime.value (USD)", "lifetime_value_usd"),
        ("loyalty_tier", "loyalty_tier"),
        ("IDFAs", "idfas"),
        ("number_of_IDFAs", "number_of_idfas"),
        ("Éclair Count", "eclair_count"),
    ],
)
def test_other_columns_snake_case(header: str, name: str) -> None:
    assert output_name(header) == name
    assert snake_case(header) == name


def test_custom_columns_keep_order_strings_and_duplicates_are_suffixed() -> None:
    cols = map_header(
        ["user_id", "Favorite Color", "favorite_color", "last_purchase_at", "number_of_pets", ""],
        file="f.csv",
    )
    assert [(c.name, c.type) for c in cols] == [
        ("external_id", "string"),
        ("favorite_color", "string"),
        ("favorite_color_2", "string"),
        ("last_purchase_at", "date-time"),
        ("number_of_pets", "integer"),
        ("column_6", "string"),
    ]


def test_column_types_by_header_or_name_override_inference() -> None:
    cols = map_header(
        ["user_id", "Lifetime Value", "vip", "last_purchase_at", "random_bucket"],
        file="f.csv",
        column_types={
            "Lifetime Value": "number",
            "vip": "boolean",
            "last_purchase_at": "string",
            "random_bucket": "string",
        },
    )
    assert [c.type for c in cols] == ["string", "number", "boolean", "string", "string"]


def test_bom_in_first_header_cell_is_removed() -> None:
    cols = map_header(["\ufeffAppboy ID", "email"], file="f.csv")
    assert cols[0].name == "braze_id"
    assert cols[0].header == "Appboy ID"


@pytest.mark.parametrize("header", [["name", "score"], ["first_name", "last_name", "city"], []])
def test_header_without_identifier_is_not_a_braze_export(header: list[str]) -> None:
    with pytest.raises(BrazeCsvError, match=r"exports/report\.csv: not a Braze user export"):
        map_header(header, file="exports/report.csv")


@pytest.mark.parametrize("header", [["email"], ["Braze ID"], ["external_id", "x"]])
def test_any_identifier_column_is_enough(header: list[str]) -> None:
    assert map_header(header, file="f.csv")


def test_unknown_column_type_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"column_types: 'vip' has type 'bool'"):
        validate_column_types({"vip": "bool"})


def test_inferred_types() -> None:
    assert inferred_type("anything_at") == "date-time"
    assert inferred_type("number_of_x") == "integer"
    assert inferred_type("loyalty_tier") == "string"
    assert len(CUSTOM_HEADER) == 4


@pytest.mark.parametrize(
    ("path", "member", "segment"),
    [
        ("/exports/VIP Users-2024-05-01.zip", "", "VIP Users"),
        ("/exports/VIP Users-2024-05-01.csv.gz.pgp", "", "VIP Users"),
        ("/x/lapsed_buyers.csv", "", "lapsed_buyers"),
        ("VIP_20240501.csv", "", "VIP"),
        ("churn risk 2024-05-01 10-30.csv", "", "churn risk"),
        ("churn risk 2024-05-01T10:30:00Z.csv", "", "churn risk"),
        ("segment-export/5f1a/2024-05-01/users-8f3c2a.zip", "", None),
        ("segment-export/5f1a/2024-05-01/users-8f3c2a.zip", "Winback-2024-01-02.csv", "Winback"),
        ("2024-05-01.csv", "", None),
        ("users.csv", "", None),
    ],
)
def test_segment_name_from_file_name(path: str, member: str, segment: str | None) -> None:
    assert segment_for(path, member) == segment


def test_segment_name_regex_setting() -> None:
    regex = r"^seg_(?P<segment>[a-z]+)_"
    assert segment_from_name("/e/seg_loyal_v2.csv", regex) == "loyal"
    assert segment_from_name("/e/other.csv", regex) is None
    assert segment_from_name("/e/abc-1.csv", r"^(\w+)-") == "abc"
