"""tap-braze-csv: the Tap class and its settings."""

from __future__ import annotations

from singer_sdk import Stream, Tap
from singer_sdk import typing as th


class TapBrazeCsv(Tap):
    """Streams rows of Braze segment CSV exports."""

    name = "tap-braze-csv"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "paths",
            th.ArrayType(th.StringType),
            required=True,
            description="File paths or globs (local, or remote when `sftp` is set).",
        ),
        th.Property(
            "sftp",
            th.ObjectType(
                th.Property("host", th.StringType),
                th.Property("port", th.IntegerType, default=22),
                th.Property("username", th.StringType),
                th.Property("password", th.StringType, secret=True),
                th.Property("private_key", th.StringType, secret=True),
                th.Property("private_key_passphrase", th.StringType, secret=True),
                th.Property("known_hosts", th.StringType),
            ),
            description="SFTP server to read `paths` from.",
        ),
        th.Property(
            "pgp_private_key",
            th.StringType,
            secret=True,
            description="ASCII-armoured PGP private key for `.pgp`/`.gpg`/`.asc` files.",
        ),
        th.Property(
            "pgp_passphrase",
            th.StringType,
            secret=True,
            description="Passphrase of `pgp_private_key`.",
        ),
        th.Property(
            "stream_name",
            th.StringType,
            default="braze_users",
            description="Name of the output stream.",
        ),
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        """Return the tap's streams (filled in by the tap issue)."""
        return []


if __name__ == "__main__":
    TapBrazeCsv.cli()
