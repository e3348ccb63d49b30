"""tap-lytics-audience: the Tap class and its settings."""

from __future__ import annotations

from singer_sdk import Stream, Tap
from singer_sdk import typing as th


class TapLyticsAudience(Tap):
    """Streams Lytics audiences and their members."""

    name = "tap-lytics-audience"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Lytics API token, sent as the raw `Authorization` header.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.lytics.io",
            description="Lytics API base URL.",
        ),
        th.Property(
            "audiences",
            th.ArrayType(th.StringType),
            description="Audience slugs or ids whose members are scanned.",
        ),
        th.Property(
            "external_id_field",
            th.StringType,
            default="braze_id",
            description="Lytics profile field holding the Braze external id.",
        ),
        th.Property(
            "fields",
            th.ArrayType(th.StringType),
            description="Extra profile fields copied into member records.",
        ),
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        """Return the tap's streams (filled in by the tap issue)."""
        return []


if __name__ == "__main__":
    TapLyticsAudience.cli()
