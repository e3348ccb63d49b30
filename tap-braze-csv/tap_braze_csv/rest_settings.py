"""The ``rest_export`` settings group (JSON schema), kept out of tap.py for readability.

Durations are whole numbers (seconds, hours): Meltano 4 cannot pass a decimal value given by
environment variable inside an object setting (it fails serialising a ``Decimal``), and
``TAP_BRAZE_CSV_REST_EXPORT_WAIT_TIMEOUT=600`` is how schedules usually set them.
"""

from __future__ import annotations

from singer_sdk import typing as th

from tap_braze_csv.common.retries import DESCRIPTIONS as RETRY_DESCRIPTIONS
from tap_braze_csv.rest_export import DEFAULT_FIELDS

REST_EXPORT_PROPERTY = th.Property(
    "rest_export",
    th.ObjectType(
        th.Property(
            "api_key",
            th.StringType,
            secret=True,
            description="Braze REST API key with the `users.export.segment` permission.",
        ),
        th.Property(
            "rest_endpoint",
            th.StringType,
            description="Your Braze instance's REST URL, e.g. `https://rest.iad-01.braze.com`.",
        ),
        th.Property(
            "segment_ids",
            th.ArrayType(th.StringType),
            description="Braze segment ids (API identifiers) exported on each run.",
        ),
        th.Property(
            "fields_to_export",
            th.ArrayType(th.StringType),
            description="Braze `fields_to_export` (`braze_id` and `external_id` are always added). "
            f"Default: {', '.join(DEFAULT_FIELDS)}.",
        ),
        th.Property(
            "custom_attributes_to_export",
            th.ArrayType(th.StringType),
            description="Named custom attributes to export (at most 500); ignored by Braze when "
            "`custom_attributes` is in `fields_to_export`.",
        ),
        th.Property(
            "output_format",
            th.StringType(allowed_values=["zip", "gzip"]),
            default="zip",
            description="Archive format Braze writes (`gzip` only applies to exports written to "
            "your own bucket).",
        ),
        th.Property(
            "bucket_url",
            th.StringType,
            description="When the workspace has S3/Azure/GCS export credentials, Braze writes "
            "exports there instead of returning a download URL: the bucket as a `paths` URL "
            "(e.g. `s3://my-braze-exports`); files are read under "
            "`segment-export/<segment>/<date>/<object_prefix>/`.",
        ),
        th.Property(
            "wait_timeout",
            th.IntegerType,
            default=3600,
            description="Seconds to wait for an export to be ready before failing the run.",
        ),
        th.Property(
            "poll_interval",
            th.IntegerType,
            default=15,
            description="Seconds between checks whether an export is ready.",
        ),
        th.Property(
            "settle_seconds",
            th.IntegerType,
            default=30,
            description="Bucket mode: an export is complete once its file listing has not "
            "changed for this long (Braze documents no completion marker).",
        ),
        th.Property(
            "min_interval_hours",
            th.IntegerType,
            default=0,
            description="Start a new export of a segment only when the last one read was "
            "requested at least this long ago (0: every run).",
        ),
        th.Property(
            "request_timeout",
            th.IntegerType,
            default=60,
            description=(
                "Seconds to wait for the server to accept a connection, then for each part of its answer (a timeout per wait, not a limit on the whole request)."
            ),
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=5,
            description=RETRY_DESCRIPTIONS["max_retries"],
        ),
        th.Property(
            "max_rate_limit_retries",
            th.IntegerType,
            default=30,
            description=RETRY_DESCRIPTIONS["max_rate_limit_retries"],
        ),
        th.Property(
            "retry_backoff_base",
            th.IntegerType,
            default=2,
            description=RETRY_DESCRIPTIONS["retry_backoff_base"],
        ),
        th.Property(
            "retry_backoff_max",
            th.IntegerType,
            default=60,
            description=RETRY_DESCRIPTIONS["retry_backoff_max"],
        ),
    ),
    description="Trigger Braze's REST segment export (`POST /users/export/segment`) for each "
    "segment and read its JSON-lines archive: users on the users stream, campaign and Canvas "
    "engagement on `braze_engagement`.",
)
