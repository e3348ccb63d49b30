"""target-braze-audience: the Target class and its settings."""

from __future__ import annotations

from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target


class PlaceholderSink(BatchSink):
    """Placeholder until the target issue lands: refuses to load anything."""

    def process_batch(self, context: dict) -> None:
        """Refuse: nothing is implemented yet."""
        msg = "target-braze-audience is not implemented yet"
        raise NotImplementedError(msg)


class TargetBrazeAudience(Target):
    """Writes audience membership to a Braze array attribute as add/remove deltas."""

    name = "target-braze-audience"
    default_sink_class = PlaceholderSink

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="Braze REST API key (needs `users.track`), sent as `Authorization: Bearer`.",
        ),
        th.Property(
            "rest_endpoint",
            th.StringType,
            required=True,
            description="Braze instance REST URL, e.g. `https://rest.iad-01.braze.com`.",
        ),
        th.Property(
            "attribute_name",
            th.StringType,
            default="lytics_segments",
            description="Array custom attribute that holds audience slugs.",
        ),
        th.Property(
            "backfill_existing_users",
            th.BooleanType,
            default=True,
            description="First sync sends current members (true) or takes them as a silent baseline (false).",
        ),
        th.Property(
            "update_existing_only",
            th.BooleanType,
            default=False,
            description="Never create Braze users (`_update_existing_only`).",
        ),
        th.Property(
            "store_url",
            th.StringType,
            description="Membership store: a SQLite file path or a SQLAlchemy URL (postgresql://...).",
        ),
        th.Property(
            "batch_size",
            th.IntegerType,
            default=75,
            description="Attribute objects per /users/track request (at most 75).",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Compute and report deltas; send nothing and change no store.",
        ),
    ).to_dict()


if __name__ == "__main__":
    TargetBrazeAudience.cli()
