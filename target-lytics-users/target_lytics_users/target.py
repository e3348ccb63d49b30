"""target-lytics-users: the Target class and its settings."""

from __future__ import annotations

from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target


class PlaceholderSink(BatchSink):
    """Placeholder until the target issue lands: refuses to load anything."""

    def process_batch(self, context: dict) -> None:
        """Refuse: nothing is implemented yet."""
        msg = "target-lytics-users is not implemented yet"
        raise NotImplementedError(msg)


class TargetLyticsUsers(Target):
    """Loads user records into a Lytics stream through the collect API."""

    name = "target-lytics-users"
    default_sink_class = PlaceholderSink

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Lytics API token (Data Manager role), sent as the `Authorization` header.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.lytics.io",
            description="Lytics API base URL.",
        ),
        th.Property(
            "stream",
            th.StringType,
            default="braze_users",
            description="Lytics data stream the records are collected into.",
        ),
        th.Property(
            "timestamp_field",
            th.StringType,
            description="Record field Lytics reads the event time from (`timestamp_field`).",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Pass `dryrun=true`: Lytics validates but stores nothing.",
        ),
    ).to_dict()


if __name__ == "__main__":
    TargetLyticsUsers.cli()
