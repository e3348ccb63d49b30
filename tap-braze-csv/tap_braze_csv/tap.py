"""tap-braze-csv: the Tap class and its settings."""

from __future__ import annotations

import re
from types import FrameType
from typing import Any, ClassVar

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import (
    EMIT_ACTIVATE_VERSION_CONFIG,
    PluginCapabilities,
    TapCapabilities,
)

from tap_braze_csv.columns import COLUMN_TYPES, validate_column_types
from tap_braze_csv.common.config_numbers import coerce_number_strings
from tap_braze_csv.common.orjson_writer import OrjsonWriter
from tap_braze_csv.common.secrets import header_secret_errors, strip_secrets
from tap_braze_csv.export_coordinator import ExportCoordinator
from tap_braze_csv.jsonl import user_json_schema_properties
from tap_braze_csv.openers import text_encoding
from tap_braze_csv.rest_export import RestExportSettings
from tap_braze_csv.rest_settings import REST_EXPORT_PROPERTY
from tap_braze_csv.schema import build_schema, peek_header_columns
from tap_braze_csv.sdk_compat import raw_config, set_raw_config
from tap_braze_csv.state import upgrade_stream_state
from tap_braze_csv.streams import BrazeUsersStream


class TapBrazeCsv(Tap):
    """Streams rows of Braze segment CSV exports."""

    name = "tap-braze-csv"
    #: The workspace's shared writer (common/orjson_writer.py): orjson, RECORDs not flushed one
    #: by one, and the fast record path hands it pre-serialised lines (output.py).
    message_writer_class = OrjsonWriter

    #: The SDK defaults minus BATCH: records are already written by a buffered orjson writer
    #: (streams.py), and BATCH would hand them to the SDK's batcher, whose files are not yet
    #: delivered when a STATE claims their rows.
    capabilities: ClassVar[list[Any]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        TapCapabilities.ACTIVATE_VERSION,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "paths",
            th.ArrayType(th.StringType),
            description="File paths or globs (local, or remote when `sftp` is set); "
            "`s3://`, `gs://` and `az://`/`abfs://` URLs (globs allowed) are read from object "
            "storage (extras `[s3]`, `[gcs]`, `[azure]`). Required unless `rest_export` is set.",
        ),
        th.Property(
            "s3",
            th.ObjectType(
                th.Property(
                    "endpoint_url",
                    th.StringType,
                    description="S3-compatible endpoint (MinIO, Ceph, R2, ...). Default: the "
                    "`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` environment variable, else AWS.",
                ),
                th.Property("region_name", th.StringType, description="AWS region."),
                th.Property(
                    "aws_access_key_id",
                    th.StringType,
                    secret=True,
                    description="Access key id. Unset: the AWS credential chain (environment, "
                    "profiles, instance/container roles).",
                ),
                th.Property(
                    "aws_secret_access_key",
                    th.StringType,
                    secret=True,
                    description="Secret access key.",
                ),
                th.Property(
                    "aws_session_token",
                    th.StringType,
                    secret=True,
                    description="Session token of temporary credentials.",
                ),
                th.Property("profile", th.StringType, description="AWS profile name."),
                th.Property(
                    "anon",
                    th.BooleanType,
                    description="Read a public bucket without credentials.",
                ),
            ),
            description="Credentials and endpoint for `s3://` paths (optional).",
        ),
        th.Property(
            "gcs",
            th.ObjectType(
                th.Property(
                    "token",
                    th.StringType,
                    secret=True,
                    description="Service account key (JSON text or file path). Unset: Google "
                    "application default credentials.",
                ),
                th.Property("project", th.StringType, description="Google Cloud project."),
                th.Property(
                    "endpoint_url",
                    th.StringType,
                    description="Storage endpoint (emulators only).",
                ),
            ),
            description="Credentials for `gs://` paths (optional).",
        ),
        th.Property(
            "azure",
            th.ObjectType(
                th.Property("account_name", th.StringType, description="Storage account name."),
                th.Property(
                    "account_key", th.StringType, secret=True, description="Storage account key."
                ),
                th.Property(
                    "connection_string",
                    th.StringType,
                    secret=True,
                    description="Storage connection string.",
                ),
                th.Property("sas_token", th.StringType, secret=True, description="SAS token."),
                th.Property("tenant_id", th.StringType, description="Service principal tenant."),
                th.Property("client_id", th.StringType, description="Service principal id."),
                th.Property(
                    "client_secret",
                    th.StringType,
                    secret=True,
                    description="Service principal secret. No key or secret set: Azure's "
                    "default credential chain (environment, managed identity, CLI login).",
                ),
            ),
            description="Credentials for `az://`/`abfs://` paths (optional).",
        ),
        th.Property(
            "sftp",
            th.ObjectType(
                th.Property("host", th.StringType, description="SFTP server host name."),
                th.Property("port", th.IntegerType, default=22, description="SFTP port."),
                th.Property("username", th.StringType, description="Login user name."),
                th.Property("password", th.StringType, secret=True, description="Login password."),
                th.Property(
                    "private_key",
                    th.StringType,
                    secret=True,
                    description="Private key (RSA, Ed25519 or ECDSA), as PEM/OpenSSH text or a "
                    "file path.",
                ),
                th.Property(
                    "private_key_passphrase",
                    th.StringType,
                    secret=True,
                    description="Passphrase of `private_key`.",
                ),
                th.Property(
                    "known_hosts",
                    th.StringType,
                    description="known_hosts lines (or a file path) holding the server's host key.",
                ),
                th.Property(
                    "allow_unknown_host_key",
                    th.BooleanType,
                    default=False,
                    description="Accept a server whose host key is not in `known_hosts` "
                    "(logged with its fingerprint). Off: an unknown key is an error.",
                ),
                th.Property(
                    "timeout",
                    th.NumberType,
                    default=30,
                    description="Seconds allowed for connecting, the SSH banner, "
                    "authentication and each read (> 0).",
                ),
                th.Property(
                    "retries",
                    th.IntegerType,
                    default=3,
                    description="Reconnect attempts after a transient failure (refused or reset "
                    "connection, timeout, dropped session); 0 disables retrying.",
                ),
                th.Property(
                    "retry_wait",
                    th.NumberType,
                    default=1.0,
                    description="Seconds to wait before the first retry; doubled for each "
                    "further attempt.",
                ),
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
        th.Property(
            "on_bad_row",
            th.StringType(allowed_values=["keep", "skip", "fail"]),
            default="keep",
            description="A cell that does not convert to its column's type: `keep` emits the "
            "row with that field null and the raw text in `_sdc_unparsed` (`{field: raw}`), "
            "counted per column in the summary; `skip` drops the row (logged, counted); `fail` "
            "stops with the file, line and column. A row with a wrong field count is skipped "
            "(`fail`: an error). Broken CSV structure (a quote never closed, a cell over the "
            "field limit) is never skipped over: see README.",
        ),
        th.Property(
            "column_types",
            th.ObjectType(additional_properties=th.StringType(allowed_values=list(COLUMN_TYPES))),
            description="Type of custom attribute columns, by header or output name: "
            "`string` (default), `integer`, `number`, `boolean`, `date`, `date-time`. "
            'Example: `{"Lifetime Value": "number", "vip": "boolean"}`.',
        ),
        th.Property(
            "encoding",
            th.StringType,
            default="utf-8-sig",
            description="Text encoding of the CSV files, a Python codec name (`latin-1`, "
            "`cp1252`, `utf-16`, ...); a UTF-8 BOM is removed.",
        ),
        th.Property(
            "delimiter",
            th.StringType,
            default=",",
            description="CSV field delimiter.",
        ),
        th.Property(
            "segment_name_regex",
            th.StringType,
            description="Python regex searched in the file name (extensions removed) whose "
            "`segment` group (or group 1) is the `segment_name` field. Default: see README.",
        ),
        th.Property(
            "fast_writer",
            th.BooleanType,
            default=True,
            description="Write records with the tap's buffered orjson writer when no stream "
            "maps or flattening are configured. Off: every record goes through the SDK's "
            "standard (slower) record path.",
        ),
        REST_EXPORT_PROPERTY,
    ).to_dict()

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Add the SDK's built-in settings, plus `emit_activate_version_messages`.

        singer-sdk 0.54.9 reads that setting when `activate-version` is declared but does not
        advertise it, so `--about` and Meltano did not know it.
        """
        super().append_builtin_config(config_jsonschema)
        if TapCapabilities.ACTIVATE_VERSION in cls.capabilities:
            for name, prop in EMIT_ACTIVATE_VERSION_CONFIG["properties"].items():
                config_jsonschema["properties"].setdefault(
                    name,
                    {
                        **prop,
                        "description": (
                            "Emit an `ACTIVATE_VERSION` message before each run's records. A run only holds the "
                            "files not read before, so a target that processes these messages drops the rows "
                            "of earlier runs: enable only when each run re-reads everything you want kept."
                        ),
                    },
                )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._validate_settings()

    @property
    def rest_settings(self) -> RestExportSettings | None:
        """The validated `rest_export` group (None when not set)."""
        try:
            return self._rest_settings  # type: ignore[has-type]
        except AttributeError:
            self._rest_settings: RestExportSettings | None = RestExportSettings.from_config(
                self.config
            )
            return self._rest_settings

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Strip secrets read from files; parse number settings given as strings; validate.

        A trailing newline of a mounted secret file is removed; a number setting from a
        Meltano env var arrives as text (e.g. "30") and is parsed here.
        """
        config = strip_secrets(raw_config(self), self.config_jsonschema)
        config, numbers = coerce_number_strings(config, self.config_jsonschema)
        set_raw_config(self, config)
        if numbers and raise_errors:
            raise ConfigValidationError(numbers[0], errors=numbers)
        errors = [*numbers, *super()._validate_config(raise_errors=raise_errors)]
        # The REST export key becomes an Authorization header: refuse one that cannot be.
        extra = header_secret_errors(self.config, ["rest_export.api_key"])
        if extra and raise_errors:
            raise ConfigValidationError(extra[0], errors=extra)
        return [*errors, *extra]

    def _validate_settings(self) -> None:
        if not self.config.get("paths") and self.rest_settings is None:
            msg = "paths: list the export files to read (or set rest_export.segment_ids)"
            raise ValueError(msg)
        column_types = self.config.get("column_types") or {}
        validate_column_types(column_types)
        text_encoding(self.config)  # an unknown codec fails here, naming `encoding`
        regex = self.config.get("segment_name_regex")
        if regex:
            try:
                re.compile(regex)
            except re.error as exc:
                msg = f"segment_name_regex: not a valid Python regular expression ({exc})"
                raise ValueError(msg) from None
        delimiter = self.config.get("delimiter") or ","
        if len(delimiter) != 1:
            msg = f"delimiter: must be one character, got {delimiter!r}"
            raise ValueError(msg)

    def load_state(self, state: dict[str, Any]) -> None:
        """Load the input state, converting float ``mtime`` entries of older versions.

        The SDK writes the loaded state back at the start of the sync, so an old float must be
        gone before that (a float in STATE breaks stock SDK targets; see state.py).
        """
        super().load_state(state)
        for stream_state in (self.state.get("bookmarks") or {}).values():
            upgrade_stream_state(stream_state)

    @property
    def export_coordinator(self) -> ExportCoordinator | None:
        """Triggers and holds this run's REST exports (None without `rest_export`)."""
        if self.rest_settings is None:
            return None
        if getattr(self, "_coordinator", None) is None:
            self._coordinator: ExportCoordinator | None = ExportCoordinator(
                self.rest_settings, self.logger, self.config
            )
        return self._coordinator

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: the SDK writes STATE and exits 0; exit 128 + signum instead.

        An interrupted run did not finish: like the other plugins of this project, the
        exit code says so (143 for SIGTERM), so an orchestrator never takes it for a success.
        A signal landing while the message writer holds a write (a line, a block of records
        and the resume point moved past them) is handled once that write is over: exiting
        inside it would cut a line or splice STATE into a RECORD. Raised from there, the exit
        unwinds through the stream, which writes what it buffered, then STATE.
        """
        writer = self.message_writer
        if isinstance(writer, OrjsonWriter) and writer.writing:
            writer.deferred = lambda: self._terminate(signum, frame)
            return
        self._terminate(signum, frame)

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        self.logger.warning(
            "Interrupted by signal %d: stopping; the next run resumes from the last STATE.",
            signum,
        )
        try:
            super()._handle_termination(signum, frame)
        except SystemExit:
            raise SystemExit(128 + signum) from None

    def discover_streams(self) -> list[Stream]:
        """Return `braze_users` and, with `rest_export`, `braze_engagement`.

        The users schema has the Braze columns, the first file's custom columns and, with
        `rest_export`, the fields only JSON exports have.

        With an input catalog holding a stream, its schema is used as is (no file is opened).
        """
        name = self.config.get("stream_name") or "braze_users"
        schema = self._catalog_schema(name)
        if schema is None:
            schema = self._users_schema()
        streams: list[Stream] = [BrazeUsersStream(tap=self, schema=schema, name=name)]
        if self.rest_settings is not None:
            from tap_braze_csv.engagement import ENGAGEMENT_STREAM, BrazeEngagementStream

            engagement_schema = self._catalog_schema(ENGAGEMENT_STREAM)
            streams.append(BrazeEngagementStream(tap=self, schema=engagement_schema))
        return streams

    def _catalog_schema(self, name: str) -> dict[str, Any] | None:
        """Return the input catalog's schema of stream ``name`` (None without one)."""
        catalog = self.input_catalog
        entry = catalog.get_stream(name) if catalog is not None else None
        return entry.schema.to_dict() if entry is not None and entry.schema is not None else None

    def _users_schema(self) -> dict[str, Any]:
        """Discover the users schema: Braze columns, the first file's, and JSON-only fields."""
        column_types = self.config.get("column_types") or {}
        validate_column_types(column_types)
        header = peek_header_columns(self.config, self.logger) if self.config.get("paths") else None
        schema = build_schema(header, column_types)
        if self.rest_settings is not None:
            for prop, prop_schema in user_json_schema_properties().items():
                schema["properties"].setdefault(prop, prop_schema)
        return schema


if __name__ == "__main__":
    TapBrazeCsv.cli()
